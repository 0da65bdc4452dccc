//! The API's one error shape, `{"error":{"code","message"}}`, and the mapping of
//! every failure to it. Extractors here replace axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;
use tillmesh_domain::ports::StoreError;
use tillmesh_domain::DomainError;

/// An API error: status, stable snake_case code, human message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code.
    pub code: &'static str,
    /// Human text.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let code = match &e {
            DomainError::InvalidName { .. } => "invalid_name",
            DomainError::FieldKindMismatch { .. } => "field_kind_mismatch",
            DomainError::CounterOverflow { .. } => "counter_overflow",
            DomainError::TooDeep { .. } => "value_too_deep",
            DomainError::TooLarge { .. } => "entity_too_large",
            DomainError::ChecksumMismatch { .. } => "checksum_mismatch",
            DomainError::InvalidRecord(_) => "invalid_record",
        };
        let status = match &e {
            DomainError::FieldKindMismatch { .. } => StatusCode::CONFLICT,
            DomainError::CounterOverflow { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            DomainError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(d) => d.into(),
            StoreError::BadBatch(d) => {
                let mut err = ApiError::from(d);
                err.code = "bad_batch";
                err.status = StatusCode::BAD_REQUEST;
                err
            }
            StoreError::WriterRetired(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "writer_retired",
                format!("writer {m} was retired while writing; write again"),
            ),
            StoreError::NotFound(m) => ApiError::not_found(format!("{m} not found")),
            StoreError::InvalidState(m) => ApiError::new(StatusCode::CONFLICT, "invalid_state", m),
            StoreError::Unexpected(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", m),
        }
    }
}

/// JSON body extractor whose rejections use the API error shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match &r {
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::JsonSyntaxError(_) => "malformed_json",
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        _ => "invalid_body",
    };
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body is larger than this route accepts".to_string()
    } else {
        r.body_text()
    };
    // Wrong types are a 400 here like every other malformed input.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
    ApiError::new(status, code, message)
}

/// Path extractor whose rejections use the API error shape.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|r: PathRejection| ApiError::bad_request("invalid_path", r.body_text()))
    }
}

/// Query extractor whose rejections use the API error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|r: QueryRejection| ApiError::bad_request("invalid_query", r.body_text()))
    }
}

/// Refuses a body whose declared `Content-Length` is over the limit before reading
/// it, so the client gets the 413 instead of a reset connection.
///
/// # Errors
/// 413 `payload_too_large`.
pub async fn reject_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > super::MAX_BODY_BYTES as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {} bytes", super::MAX_BODY_BYTES),
        ));
    }
    Ok(next.run(req).await)
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Fallback for a known route with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}
