//! The offline queue: outbound operations stored in SQLite, delivered by a worker
//! with exponential, jittered backoff, and failure notifications.
//!
//! Delivery is at least once: an attempt interrupted by a crash (the operation left
//! `processing`) is made again after the restart. Every attempt of an operation
//! carries the same `Idempotency-Key` (the operation id), so a receiver that honours
//! it sees each operation exactly once. `--max-retries` counts attempts in total;
//! a 4xx other than 408/409/425/429 (and a redirect) fails the operation at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tillmesh_domain::ports::{Clock, JitterSource, LocalOutcome, Outbox, Store, StoreError};
use tillmesh_domain::queue::{NewOperation, Notification, OperationStatus, QueueStats, QueuedOperation};
use tillmesh_domain::{BackoffPolicy, DeviceId, EntityKey, EntityState, Timestamp};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::events::{EventBus, EventKind};
use crate::services::entities::sale_payload;

/// Operation kinds the worker knows.
pub const KIND_HTTP_POST: &str = "http_post";

/// Longest one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most delivery attempts under way at once.
const MAX_IN_FLIGHT: usize = 4;

/// Longest the worker sleeps without looking at the queue (a safety net: new and
/// retried operations wake it, and it knows when the next retry is due).
const IDLE_POLL: Duration = Duration::from_millis(1000);

/// Pause after a storage failure before trying again.
const TROUBLE_PAUSE: Duration = Duration::from_millis(200);

/// Pause when an operation looked due but could not be claimed.
const SPIN_PAUSE: Duration = Duration::from_millis(10);

/// Times the outcome of an attempt is offered to a failing store.
const RECORD_TRIES: u32 = 5;

/// Characters of a rejecting receiver's body kept in `last_error`.
const ERROR_BODY_CHARS: usize = 200;

/// Outcome of one delivery attempt.
enum Attempt {
    Delivered,
    Retry(String),
    Fatal(String),
}

/// What a receiver's HTTP status means for the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 5xx and the transient 4xx: try again later.
    Retry,
    /// Other 4xx, and 3xx (redirects are not followed: a followed 301/302/303 turns
    /// the POST into a GET, and its 200 would count a sale as delivered that head
    /// office never received).
    Fatal,
}

/// Classifies a receiver's answer.
///
/// Transient 4xx: 408 Request Timeout, 425 Too Early, 429 Too Many Requests, and 409
/// Conflict — what receivers implementing the `Idempotency-Key` draft answer while a
/// request with the same key is still being processed (e.g. the first copy sent
/// just before a crash).
fn classify(status: reqwest::StatusCode) -> Verdict {
    if status.is_success() {
        Verdict::Delivered
    } else if status.is_server_error() || matches!(status.as_u16(), 408 | 409 | 425 | 429) {
        Verdict::Retry
    } else if status.is_client_error() || status.is_redirection() {
        Verdict::Fatal
    } else {
        // 1xx never reaches here (the client handles it); anything else is odd.
        Verdict::Retry
    }
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
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self { device, store, clock, jitter, events, policy, upstream, http, wake: Notify::new() })
    }

    /// Enqueues an operation due now.
    ///
    /// # Errors
    /// Store errors.
    pub async fn enqueue(&self, kind: &str, target: &str, payload: Value) -> Result<QueuedOperation, StoreError> {
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

    /// When head office is configured: what a local batch must queue with it, namely
    /// each sale the batch created (and did not delete again), once, with its state at
    /// the end of the batch. The store queues them in the batch's transaction.
    pub fn sale_outbox(&self) -> Option<Outbox> {
        let target = self.upstream.clone()?;
        let (device, max_retries, now) = (self.device.clone(), self.policy.max_attempts, self.clock.now());
        Some(Box::new(move |outcome: &LocalOutcome| {
            new_sales(outcome)
                .into_iter()
                .map(|(key, state)| NewOperation {
                    id: uuid::Uuid::new_v4().to_string(),
                    kind: KIND_HTTP_POST.to_string(),
                    target: target.clone(),
                    payload: sale_payload(key, state, &device),
                    max_retries,
                    created_at: now,
                })
                .collect()
        }))
    }

    /// Wakes the worker after operations were queued behind its back (see
    /// [`OfflineQueueService::sale_outbox`]).
    pub fn wake(&self) {
        self.wake.notify_one();
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
    /// `processing`, then delivers due operations.
    ///
    /// Invariants:
    /// * due operations are claimed in `next_attempt_at` order (the store's `due`
    ///   order), by this loop alone, and only through the store's compare-and-set
    ///   `mark_processing` — so one operation is never attempted twice at once, even
    ///   with several attempts in flight;
    /// * at most [`MAX_IN_FLIGHT`] attempts run at once, so one slow receiver delays
    ///   the others by at most one timeout instead of blocking the whole queue;
    /// * the loop sleeps until the earliest pending operation is due (or a new or
    ///   retried operation wakes it), so retry delays are kept to the millisecond
    ///   rather than rounded up to a polling period.
    pub async fn run_worker(self: Arc<Self>) {
        match self.store.recover_processing().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(operations = n, "recovered operations interrupted by a restart"),
            Err(e) => tracing::error!(error = %e, "could not recover interrupted operations"),
        }
        let mut in_flight: JoinSet<()> = JoinSet::new();
        loop {
            let mut trouble = false;
            let mut claimed = 0;
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
            if room > 0 {
                match self.store.due(self.clock.now(), room).await {
                    Ok(due) => {
                        for op in due {
                            match self.store.mark_processing(&op.id).await {
                                Ok(true) => {
                                    claimed += 1;
                                    let me = self.clone();
                                    in_flight.spawn(async move { me.process(op).await });
                                }
                                // Cancelled between `due` and the claim.
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::error!(op = %op.id, error = %e, "could not claim operation");
                                    trouble = true;
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "offline queue unavailable");
                        trouble = true;
                    }
                }
            }
            let mut pause = if trouble {
                TROUBLE_PAUSE
            } else if in_flight.len() >= MAX_IN_FLIGHT {
                // Nothing can be claimed before an attempt finishes.
                IDLE_POLL
            } else {
                self.until_next_due().await
            };
            if pause.is_zero() {
                if claimed > 0 {
                    continue;
                }
                // Something is due yet nothing could be claimed (it was cancelled or
                // claimed meanwhile): look again shortly rather than spin.
                pause = SPIN_PAUSE;
            }
            tokio::select! {
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "delivery attempt task failed");
                    }
                }
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Time until the earliest pending operation is due (zero if one is due now),
    /// at most [`IDLE_POLL`].
    async fn until_next_due(&self) -> Duration {
        match self.store.due(Timestamp(i64::MAX), 1).await {
            Ok(next) => next.first().map_or(IDLE_POLL, |op| {
                let ms = op.next_attempt_at.millis_since(self.clock.now());
                Duration::from_millis(ms).min(IDLE_POLL)
            }),
            Err(e) => {
                tracing::error!(error = %e, "offline queue unavailable");
                TROUBLE_PAUSE
            }
        }
    }

    /// One attempt of an operation this worker has claimed, and its recording.
    async fn process(&self, op: QueuedOperation) {
        let result = self.attempt(&op).await;
        let attempts = op.attempts.saturating_add(1);
        let (error, retry_at) = match result {
            Attempt::Delivered => {
                self.record_completed(&op).await;
                return;
            }
            Attempt::Retry(err) => {
                if self.policy_for(&op).may_retry(attempts) {
                    let delay = self.policy.delay(attempts, self.jitter.jitter());
                    let at = self.clock.now().plus_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                    (err, Some(at))
                } else {
                    (format!("{err} (gave up after {attempts} attempts)"), None)
                }
            }
            Attempt::Fatal(err) => (err, None),
        };
        let Some(updated) = self.record_failed(&op, &error, retry_at).await else {
            return;
        };
        if updated.status == OperationStatus::Failed {
            self.raise_failure(&updated).await;
        } else {
            tracing::info!(op = %updated.id, attempts = updated.attempts, error = ?updated.last_error, "delivery failed; will retry");
        }
    }

    /// Records a delivery, retrying briefly if the store hiccups: an operation left
    /// `processing` would only move again after a restart (and then be sent again).
    async fn record_completed(&self, op: &QueuedOperation) {
        for round in 1..=RECORD_TRIES {
            match self.store.mark_completed(&op.id, self.clock.now()).await {
                Ok(()) => {
                    tracing::info!(op = %op.id, "operation delivered");
                    return;
                }
                Err(e @ (StoreError::NotFound(_) | StoreError::InvalidState(_))) => {
                    tracing::error!(op = %op.id, error = %e, "could not record the delivery");
                    return;
                }
                Err(e) => {
                    tracing::error!(op = %op.id, error = %e, round, "could not record the delivery");
                    tokio::time::sleep(TROUBLE_PAUSE).await;
                }
            }
        }
    }

    /// Records a failed attempt (see [`Self::record_completed`] for the retries).
    async fn record_failed(
        &self,
        op: &QueuedOperation,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Option<QueuedOperation> {
        for round in 1..=RECORD_TRIES {
            match self.store.mark_failed(&op.id, error, retry_at).await {
                Ok(updated) => return Some(updated),
                Err(e @ (StoreError::NotFound(_) | StoreError::InvalidState(_))) => {
                    tracing::error!(op = %op.id, error = %e, "could not record the attempt");
                    return None;
                }
                Err(e) => {
                    tracing::error!(op = %op.id, error = %e, round, "could not record the attempt");
                    tokio::time::sleep(TROUBLE_PAUSE).await;
                }
            }
        }
        None
    }

    fn policy_for(&self, op: &QueuedOperation) -> BackoffPolicy {
        BackoffPolicy { max_attempts: op.max_retries, ..self.policy }
    }

    async fn attempt(&self, op: &QueuedOperation) -> Attempt {
        if op.kind != KIND_HTTP_POST {
            return Attempt::Fatal(format!("unknown operation kind {:?}", op.kind));
        }
        let resp = self.http.post(&op.target).header("Idempotency-Key", &op.id).json(&op.payload).send().await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return Attempt::Fatal(format!("cannot send to {}: {e} (retrying cannot help)", op.target))
            }
            Err(e) if e.is_timeout() => return Attempt::Retry(format!("timed out after {ATTEMPT_TIMEOUT:?}")),
            Err(e) => return Attempt::Retry(format!("could not reach {}: {e}", op.target)),
        };
        let status = resp.status();
        match classify(status) {
            Verdict::Delivered => Attempt::Delivered,
            Verdict::Retry => Attempt::Retry(format!("receiver answered {status}")),
            Verdict::Fatal => {
                let location =
                    resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
                let body = resp.text().await.unwrap_or_default();
                let mut detail = String::new();
                if let Some(l) = location {
                    detail = format!(" to {l}");
                }
                let body = body.trim();
                if !body.is_empty() {
                    let snippet: String = body.chars().take(ERROR_BODY_CHARS).collect();
                    detail.push_str(&format!(": {snippet}"));
                }
                Attempt::Fatal(format!("receiver rejected the operation with {status}{detail} (retrying cannot help)"))
            }
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

/// The sales a batch created and did not delete again, each once, with its state at
/// the end of the batch.
fn new_sales(outcome: &LocalOutcome) -> Vec<(&EntityKey, &EntityState)> {
    let (mut created, mut seen): (Vec<&EntityKey>, HashSet<&EntityKey>) = (Vec::new(), HashSet::new());
    let mut last: HashMap<&EntityKey, &EntityState> = HashMap::new();
    for (key, state, was_created) in &outcome.entities {
        if key.entity_type() == "sale" {
            if *was_created && seen.insert(key) {
                created.push(key);
            }
            last.insert(key, state);
        }
    }
    created.into_iter().filter_map(|k| last.get(k).filter(|s| !s.is_deleted()).map(|s| (k, *s))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn verdict(code: u16) -> Verdict {
        classify(StatusCode::from_u16(code).expect("valid status"))
    }

    #[test]
    fn success_statuses_mean_delivered() {
        for code in [200, 201, 202, 204] {
            assert_eq!(verdict(code), Verdict::Delivered, "{code}");
        }
    }

    #[test]
    fn server_errors_and_transient_client_errors_are_retried() {
        for code in [500, 502, 503, 504, 408, 409, 425, 429] {
            assert_eq!(verdict(code), Verdict::Retry, "{code}");
        }
    }

    #[test]
    fn other_client_errors_and_redirects_fail_at_once() {
        for code in [400, 401, 403, 404, 410, 413, 422, 301, 302, 303, 307, 308] {
            assert_eq!(verdict(code), Verdict::Fatal, "{code}");
        }
    }
}
