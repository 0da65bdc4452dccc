//! Bearer-token authentication of the management API, with two roles: the admin token
//! may do everything; the app token (for till apps) may read and write entities and
//! follow the event stream, and gets a 403 anywhere else. The admin token is accepted
//! from loopback only unless `--remote-admin` (the API is plain HTTP).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::SharedState;
use crate::secrets::secrets_equal;

/// Who a bearer token makes the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything: network, pairing, conflicts, queue, notifications, entities.
    Admin,
    /// What a till app needs: entities, events (and the open health check).
    App,
}

/// The role of a presented token (compared in constant time), if it is one of ours.
fn role_of(state: &SharedState, token: &str) -> Option<Role> {
    if secrets_equal(token, &state.admin_token) {
        Some(Role::Admin)
    } else if secrets_equal(token, &state.app_token) {
        Some(Role::App)
    } else {
        None
    }
}

/// Whether the request came from another machine (no connection info: an in-process
/// caller, which is this machine).
fn from_elsewhere(req: &Request) -> bool {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(from)| !from.ip().to_canonical().is_loopback())
}

async fn require(state: SharedState, needed: Role, req: Request, next: Next) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing token: send Authorization: Bearer <admin or app token> (kept in the data dir: admin-token, app-token)",
        ));
    };
    let role = role_of(&state, token);
    if role == Some(Role::Admin) && !state.remote_admin && from_elsewhere(&req) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "remote_admin_disabled",
            "the admin token is accepted from this machine only (http://localhost:PORT/); start the terminal with --remote-admin to allow it from others (it then crosses the network in clear)",
        ));
    }
    match (role, needed) {
        (Some(Role::Admin), _) | (Some(Role::App), Role::App) => Ok(next.run(req).await),
        (Some(Role::App), Role::Admin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs the admin token: the app token may only read and write entities and follow events",
        )),
        (None, _) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token")),
    }
}

/// Requires the admin token.
///
/// # Errors
/// 401 when the token is missing or unknown, 403 for the app token, in the JSON error shape.
pub async fn require_admin(State(state): State<SharedState>, req: Request, next: Next) -> Result<Response, ApiError> {
    require(state, Role::Admin, req, next).await
}

/// Requires the app token or the admin token.
///
/// # Errors
/// 401 when the token is missing or unknown, in the JSON error shape.
pub async fn require_app(State(state): State<SharedState>, req: Request, next: Next) -> Result<Response, ApiError> {
    require(state, Role::App, req, next).await
}
