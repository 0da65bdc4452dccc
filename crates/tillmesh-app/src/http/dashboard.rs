//! The dashboard page, embedded in the binary (no front-end build step).
//!
//! `assets/dashboard.html` holds the whole page (HTML, CSS and plain JavaScript). It
//! reads the admin token from the URL fragment, which never reaches the server.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../../assets/dashboard.html");

/// `GET /`.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The page has buttons that change data: never let another site frame it.
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE,
    )
}
