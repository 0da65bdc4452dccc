//! Admin-token authentication of the management API.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::SharedState;
use crate::secrets::secrets_equal;

/// Requires `Authorization: Bearer <admin token>` (compared in constant time).
///
/// # Errors
/// 401 in the JSON error shape when missing or wrong.
pub async fn require_admin(State(state): State<SharedState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if secrets_equal(t, &state.admin_token) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong admin token")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing admin token: send Authorization: Bearer <token> (printed at first start, kept in the data dir)",
        )),
    }
}
