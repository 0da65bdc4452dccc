//! Offline queue, notifications and the live event stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tillmesh_domain::queue::{Notification, OperationStatus, QueuedOperation};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::sync::QueueCounts;
use super::SharedState;
use crate::services::queue::KIND_HTTP_POST;
use crate::timefmt::rfc3339;

/// A queued operation.
#[derive(Serialize, ToSchema)]
pub struct OperationDto {
    /// Id (also the Idempotency-Key sent).
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Target URL.
    pub target: String,
    /// Status.
    pub status: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_retries: u32,
    /// Next attempt (RFC 3339).
    pub next_attempt_at: String,
    /// Last error.
    pub last_error: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
}

impl From<&QueuedOperation> for OperationDto {
    fn from(o: &QueuedOperation) -> Self {
        Self {
            id: o.id.clone(),
            kind: o.kind.clone(),
            target: o.target.clone(),
            status: o.status.as_str(),
            attempts: o.attempts,
            max_retries: o.max_retries,
            next_attempt_at: rfc3339(o.next_attempt_at),
            last_error: o.last_error.clone(),
            created_at: rfc3339(o.created_at),
        }
    }
}

/// Operation list.
#[derive(Serialize, ToSchema)]
pub struct OperationList {
    /// Newest first.
    pub operations: Vec<OperationDto>,
}

/// Queue filter.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// pending | processing | completed | failed | cancelled
    pub status: Option<String>,
    /// 1-1000, default 100.
    pub limit: Option<usize>,
}

/// New operation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOperationBody {
    /// `http_post`.
    pub kind: String,
    /// http(s) URL.
    pub target: String,
    /// JSON body to deliver.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// Queued operations.
#[utoipa::path(get, path = "/api/queue", tag = "queue", params(QueueQuery), responses((status = 200, body = OperationList)))]
pub async fn list(
    State(state): State<SharedState>,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> Result<Json<OperationList>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(OperationStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("unknown status {s:?}: use pending, processing, completed, failed or cancelled"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit must be between 1 and 1000"));
    }
    let ops = state.queue.list(status, limit).await?;
    Ok(Json(OperationList { operations: ops.iter().map(OperationDto::from).collect() }))
}

/// Enqueues an operation.
#[utoipa::path(post, path = "/api/queue", tag = "queue", request_body = NewOperationBody,
    responses((status = 201, body = OperationDto), (status = 400)))]
pub async fn create(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<NewOperationBody>,
) -> Result<(StatusCode, Json<OperationDto>), ApiError> {
    if body.kind != KIND_HTTP_POST {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("unknown kind {:?}: only http_post exists", body.kind),
        ));
    }
    let url = reqwest::Url::parse(&body.target)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("target is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad_request("invalid_body", "target must be an http(s) URL"));
    }
    let op = state.queue.enqueue(&body.kind, &body.target, body.payload).await?;
    Ok((StatusCode::CREATED, Json(OperationDto::from(&op))))
}

/// Counts by status.
#[utoipa::path(get, path = "/api/queue/stats", tag = "queue", responses((status = 200, body = QueueCounts)))]
pub async fn stats(State(state): State<SharedState>) -> Result<Json<QueueCounts>, ApiError> {
    let q = state.queue.stats().await?;
    Ok(Json(QueueCounts { pending: q.pending, processing: q.processing, completed: q.completed, failed: q.failed }))
}

/// Puts a failed operation back in the queue (attempts reset).
#[utoipa::path(post, path = "/api/queue/{id}/retry", tag = "queue", params(("id" = String, Path)),
    responses((status = 200, body = OperationDto), (status = 404), (status = 409)))]
pub async fn retry(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OperationDto>, ApiError> {
    Ok(Json(OperationDto::from(&state.queue.retry(&id).await?)))
}

/// Cancels a pending or failed operation.
#[utoipa::path(delete, path = "/api/queue/{id}", tag = "queue", params(("id" = String, Path)),
    responses((status = 200, body = OperationDto), (status = 404), (status = 409)))]
pub async fn cancel(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OperationDto>, ApiError> {
    Ok(Json(OperationDto::from(&state.queue.cancel(&id).await?)))
}

/// A notification.
#[derive(Serialize, ToSchema)]
pub struct NotificationDto {
    /// Id.
    pub id: String,
    /// Kind, e.g. operation_failed.
    pub kind: String,
    /// Human text.
    pub message: String,
    /// Operation concerned.
    pub operation_id: Option<String>,
    /// Raised (RFC 3339).
    pub created_at: String,
    /// Acknowledged.
    pub acknowledged: bool,
}

impl From<&Notification> for NotificationDto {
    fn from(n: &Notification) -> Self {
        Self {
            id: n.id.clone(),
            kind: n.kind.clone(),
            message: n.message.clone(),
            operation_id: n.operation_id.clone(),
            created_at: rfc3339(n.created_at),
            acknowledged: n.acknowledged,
        }
    }
}

/// Notification list.
#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    /// Newest first.
    pub notifications: Vec<NotificationDto>,
}

/// Notifications.
#[utoipa::path(get, path = "/api/notifications", tag = "queue", responses((status = 200, body = NotificationList)))]
pub async fn notifications(State(state): State<SharedState>) -> Result<Json<NotificationList>, ApiError> {
    let list = state.store.notifications(500).await?;
    Ok(Json(NotificationList { notifications: list.iter().map(NotificationDto::from).collect() }))
}

/// Acknowledges a notification.
#[utoipa::path(post, path = "/api/notifications/{id}/ack", tag = "queue", params(("id" = String, Path)),
    responses((status = 200, body = NotificationDto), (status = 404)))]
pub async fn ack(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<NotificationDto>, ApiError> {
    Ok(Json(NotificationDto::from(&state.store.acknowledge(&id).await?)))
}

/// Live events as server-sent events: operation_failed, device_online,
/// device_offline, sync_completed, conflict_detected.
#[utoipa::path(get, path = "/api/events", tag = "queue", responses((status = 200, content_type = "text/event-stream")))]
pub async fn events(State(state): State<SharedState>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = BroadcastStream::new(state.events.subscribe()).filter_map(|e| {
        let e = e.ok()?;
        Some(Ok(SseEvent::default().event(e.kind.as_str()).data(e.data.to_string())))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
