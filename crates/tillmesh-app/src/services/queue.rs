//! The offline queue: outbound operations stored in SQLite, delivered by a worker
//! with exponential, jittered backoff, and failure notifications.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tillmesh_domain::ports::{Clock, JitterSource, Store, StoreError};
use tillmesh_domain::queue::{
    NewOperation, Notification, OperationStatus, QueueStats, QueuedOperation,
};
use tillmesh_domain::{BackoffPolicy, DeviceId, EntityKey, EntityState};
use tokio::sync::Notify;

use crate::events::{EventBus, EventKind};
use crate::services::entities::sale_payload;

/// Operation kinds the worker knows.
pub const KIND_HTTP_POST: &str = "http_post";

/// Longest one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Outcome of one delivery attempt.
enum Attempt {
    Delivered,
    Retry(String),
    Fatal(String),
}

/// Queue service and its worker.
pub struct OfflineQueueService {
    device: DeviceId,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn JitterSource>,
    events: EventBus,
    policy: BackoffPolicy,
    upstream: Option<String>,
    http: reqwest::Client,
    wake: Notify,
}

impl OfflineQueueService {
    /// Wires the service.
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device: DeviceId,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        jitter: Arc<dyn JitterSource>,
        events: EventBus,
        policy: BackoffPolicy,
        upstream: Option<String>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self {
            device,
            store,
            clock,
            jitter,
            events,
            policy,
            upstream,
            http,
            wake: Notify::new(),
        })
    }

    /// Enqueues an operation due now.
    ///
    /// # Errors
    /// Store errors.
    pub async fn enqueue(
        &self,
        kind: &str,
        target: &str,
        payload: Value,
    ) -> Result<QueuedOperation, StoreError> {
        let op = NewOperation {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_string(),
            target: target.to_string(),
            payload,
            max_retries: self.policy.max_attempts,
            created_at: self.clock.now(),
        };
        let stored = self.store.enqueue(op).await?;
        self.wake.notify_one();
        Ok(stored)
    }

    /// Forwards a newly created sale to head office, when one is configured.
    pub async fn forward_sale(&self, key: &EntityKey, state: &EntityState) {
        let Some(target) = self.upstream.clone() else {
            return;
        };
        if let Err(e) = self
            .enqueue(
                KIND_HTTP_POST,
                &target,
                sale_payload(key, state, &self.device),
            )
            .await
        {
            // The sale itself is stored; only its forwarding could not be queued.
            tracing::error!(sale = %key, error = %e, "could not queue the sale for head office");
        }
    }

    /// Queue statistics.
    ///
    /// # Errors
    /// Store errors.
    pub async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.store.stats().await
    }

    /// Operations, optionally of one status.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(
        &self,
        status: Option<OperationStatus>,
        limit: usize,
    ) -> Result<Vec<QueuedOperation>, StoreError> {
        self.store.operations(status, limit).await
    }

    /// Puts a failed operation back in the queue.
    ///
    /// # Errors
    /// Store errors.
    pub async fn retry(&self, id: &str) -> Result<QueuedOperation, StoreError> {
        let op = self.store.retry(id, self.clock.now()).await?;
        self.wake.notify_one();
        Ok(op)
    }

    /// Cancels a pending or failed operation.
    ///
    /// # Errors
    /// Store errors.
    pub async fn cancel(&self, id: &str) -> Result<QueuedOperation, StoreError> {
        self.store.cancel(id).await
    }

    /// Runs the worker until the task is dropped: recovers operations a crash left
    /// `processing`, then delivers due operations in `next_attempt_at` order.
    pub async fn run_worker(self: Arc<Self>) {
        match self.store.recover_processing().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                operations = n,
                "recovered operations interrupted by a restart"
            ),
            Err(e) => tracing::error!(error = %e, "could not recover interrupted operations"),
        }
        loop {
            let due = match self.store.due(self.clock.now(), 16).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "offline queue unavailable");
                    Vec::new()
                }
            };
            let busy = !due.is_empty();
            for op in due {
                self.process(op).await;
            }
            if !busy {
                // Sleep until woken by a new operation, or poll again shortly for
                // operations whose retry time has come.
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), self.wake.notified()).await;
            }
        }
    }

    async fn process(&self, op: QueuedOperation) {
        match self.store.mark_processing(&op.id).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(op = %op.id, error = %e, "could not claim operation");
                return;
            }
        }
        let result = self.attempt(&op).await;
        let now = self.clock.now();
        let outcome = match result {
            Attempt::Delivered => self.store.mark_completed(&op.id, now).await.map(|()| None),
            Attempt::Retry(err) => {
                let attempts = op.attempts + 1;
                let retry_at = self.policy_for(&op).may_retry(attempts).then(|| {
                    now.plus_millis(
                        self.policy
                            .delay(attempts, self.jitter.jitter())
                            .as_millis() as u64,
                    )
                });
                let msg = if retry_at.is_none() {
                    format!("{err} (gave up after {attempts} attempts)")
                } else {
                    err
                };
                self.store
                    .mark_failed(&op.id, &msg, retry_at)
                    .await
                    .map(Some)
            }
            Attempt::Fatal(err) => self.store.mark_failed(&op.id, &err, None).await.map(Some),
        };
        match outcome {
            Ok(Some(updated)) if updated.status == OperationStatus::Failed => {
                self.raise_failure(&updated).await
            }
            Ok(Some(updated)) => {
                tracing::info!(op = %updated.id, attempts = updated.attempts, error = ?updated.last_error, "delivery failed; will retry");
            }
            Ok(None) => tracing::info!(op = %op.id, "operation delivered"),
            Err(e) => tracing::error!(op = %op.id, error = %e, "could not record the attempt"),
        }
    }

    fn policy_for(&self, op: &QueuedOperation) -> BackoffPolicy {
        BackoffPolicy {
            max_attempts: op.max_retries,
            ..self.policy
        }
    }

    async fn attempt(&self, op: &QueuedOperation) -> Attempt {
        if op.kind != KIND_HTTP_POST {
            return Attempt::Fatal(format!("unknown operation kind {:?}", op.kind));
        }
        let resp = self
            .http
            .post(&op.target)
            .header("Idempotency-Key", &op.id)
            .json(&op.payload)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r)
                if r.status().is_client_error()
                    && r.status().as_u16() != 408
                    && r.status().as_u16() != 429 =>
            {
                Attempt::Fatal(format!(
                    "receiver rejected the operation with {} (retrying cannot help)",
                    r.status()
                ))
            }
            Ok(r) => Attempt::Retry(format!("receiver answered {}", r.status())),
            Err(e) if e.is_timeout() => {
                Attempt::Retry(format!("timed out after {ATTEMPT_TIMEOUT:?}"))
            }
            Err(e) => Attempt::Retry(format!("could not reach {}: {e}", op.target)),
        }
    }

    async fn raise_failure(&self, op: &QueuedOperation) {
        let message = format!(
            "Operation {} ({} to {}) failed: {}",
            op.id,
            op.kind,
            op.target,
            op.last_error.as_deref().unwrap_or("unknown error")
        );
        tracing::error!(op = %op.id, "{message}");
        let n = Notification {
            id: uuid::Uuid::new_v4().to_string(),
            kind: "operation_failed".into(),
            message: message.clone(),
            operation_id: Some(op.id.clone()),
            created_at: self.clock.now(),
            acknowledged: false,
        };
        if let Err(e) = self.store.add_notification(n.clone()).await {
            tracing::error!(error = %e, "could not store the failure notification");
        }
        self.events.publish(
            EventKind::OperationFailed,
            json!({"notification_id": n.id, "operation_id": op.id, "message": message}),
        );
    }
}
