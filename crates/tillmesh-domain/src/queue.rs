//! The offline queue's and notifications' data: outbound operations waiting to be
//! delivered (e.g. sales forwarded to head office) and the alerts raised when
//! delivery fails for good.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;

/// Lifecycle of a queued operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt is under way.
    Processing,
    /// Delivered.
    Completed,
    /// Gave up: retries exhausted or rejected by the receiver.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl OperationStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// An operation to enqueue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewOperation {
    /// Unique id; also the `Idempotency-Key` sent to the receiver.
    pub id: String,
    /// What to do, e.g. `http_post`.
    pub kind: String,
    /// Where to deliver it.
    pub target: String,
    /// The body to deliver.
    pub payload: Value,
    /// Attempts allowed before failing for good.
    pub max_retries: u32,
    /// Creation time (also the first attempt time).
    pub created_at: Timestamp,
}

/// A stored operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedOperation {
    /// Unique id.
    pub id: String,
    /// Kind, e.g. `http_post`.
    pub kind: String,
    /// Delivery target.
    pub target: String,
    /// Body.
    pub payload: Value,
    /// Lifecycle state.
    pub status: OperationStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_retries: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Timestamp,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// Counts of operations by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Waiting.
    pub pending: u64,
    /// Being attempted.
    pub processing: u64,
    /// Delivered.
    pub completed: u64,
    /// Given up.
    pub failed: u64,
}

/// An alert for an operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique id.
    pub id: String,
    /// What happened, e.g. `operation_failed`.
    pub kind: String,
    /// Human text.
    pub message: String,
    /// The operation concerned, if any.
    pub operation_id: Option<String>,
    /// When it was raised.
    pub created_at: Timestamp,
    /// Whether an operator acknowledged it.
    pub acknowledged: bool,
}
