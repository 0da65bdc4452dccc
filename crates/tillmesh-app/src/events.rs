//! Live events (`GET /api/events`): a broadcast bus that services publish to.

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Kinds of live events, as named in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A queued operation failed for good.
    OperationFailed,
    /// A device came (back) online.
    DeviceOnline,
    /// A device went offline.
    DeviceOffline,
    /// A sync with a peer finished.
    SyncCompleted,
    /// A conflict opened.
    ConflictDetected,
}

impl EventKind {
    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OperationFailed => "operation_failed",
            Self::DeviceOnline => "device_online",
            Self::DeviceOffline => "device_offline",
            Self::SyncCompleted => "sync_completed",
            Self::ConflictDetected => "conflict_detected",
        }
    }
}

/// One event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Kind.
    pub kind: EventKind,
    /// Details.
    pub data: Value,
}

/// Fan-out of events to every connected client; slow clients miss old events rather
/// than slowing the services.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus keeping the last 1024 events for slow receivers.
    pub fn new() -> Self {
        Self { tx: broadcast::channel(1024).0 }
    }

    /// Publishes an event (dropped when nobody listens).
    pub fn publish(&self, kind: EventKind, data: Value) {
        tracing::debug!(event = kind.as_str(), %data, "event");
        let _ = self.tx.send(Event { kind, data });
    }

    /// A new receiver of future events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
