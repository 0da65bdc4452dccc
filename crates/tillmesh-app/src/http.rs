//! The HTTP surface: management API (`/api/*`, admin token), peer protocol
//! (`/peer/v1/*`), and the dashboard (`/`). Errors become the API's JSON error shape
//! in one place ([`error`]).

pub mod auth;
pub mod dashboard;
pub mod entities;
pub mod error;
pub mod network;
pub mod openapi;
pub mod pairing;
pub mod peer;
pub mod queue;
pub mod sync;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::{middleware, Router};
use tillmesh_domain::ports::{Clock, PeerTransport, Store};
use tillmesh_domain::DeviceId;

use crate::events::EventBus;
use crate::identity::Writer;
use crate::services::entities::EntityService;
use crate::services::network::NetworkService;
use crate::services::queue::OfflineQueueService;
use crate::services::sync::SyncService;

/// Largest request body accepted on any route (a full 10,000-op batch fits).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Everything handlers need.
pub struct AppState {
    /// This terminal.
    pub device_id: DeviceId,
    /// The writer this terminal writes under; its id is also its log's epoch.
    pub writer: Arc<Writer>,
    /// Its name.
    pub name: String,
    /// Its port as bound.
    pub port: u16,
    /// Public store id.
    pub store_id: String,
    /// Admin bearer token: the whole management API.
    pub admin_token: String,
    /// App bearer token (till apps): entities, events, the API description.
    pub app_token: String,
    /// Whether the admin token is accepted from other machines (`--remote-admin`).
    pub remote_admin: bool,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Peer client.
    pub transport: Arc<dyn PeerTransport>,
    /// Live events.
    pub events: EventBus,
    /// Entities.
    pub entities: Arc<EntityService>,
    /// Registry.
    pub network: Arc<NetworkService>,
    /// Sync engine.
    pub sync: Arc<SyncService>,
    /// Offline queue.
    pub queue: Arc<OfflineQueueService>,
    /// Store membership, server side: peer sessions and pairing codes.
    pub peer_auth: Arc<crate::peer_auth::PeerAuth>,
    /// Store membership, joining side: adopting a store key with a pairing code.
    pub membership: Arc<crate::peer_auth::Membership>,
}

/// Shared handler state.
pub type SharedState = Arc<AppState>;

/// The whole router.
pub fn router(state: SharedState) -> Router {
    // What a till app needs: the app token or the admin token.
    let app = Router::new()
        .route("/entities/batch", post(entities::batch))
        .route("/entities/{entity_type}", get(entities::list))
        .route(
            "/entities/{entity_type}/{entity_id}",
            put(entities::put_entity).get(entities::get_entity).delete(entities::delete_entity),
        )
        .route("/entities/{entity_type}/{entity_id}/counters/{field}", post(entities::adjust_counter))
        .route("/events", get(queue::events))
        .route("/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_app));
    // Running the terminal and the store: the admin token only.
    let api = Router::new()
        .route("/network/devices", get(network::devices))
        .route("/network/pair", post(network::pair))
        .route("/network/pairing-code", get(pairing::pairing_code))
        .route("/sync/progress", get(sync::progress))
        .route("/sync/now", post(sync::now))
        .route("/sync/conflicts", get(sync::conflicts))
        .route("/sync/conflicts/resolve", post(sync::resolve))
        .route("/sync/digest", get(sync::digest))
        .route("/queue", get(queue::list).post(queue::create))
        .route("/queue/stats", get(queue::stats))
        .route("/queue/{id}/retry", post(queue::retry))
        .route("/queue/{id}", delete(queue::cancel))
        .route("/notifications", get(queue::notifications))
        .route("/notifications/{id}/ack", post(queue::ack))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin))
        .merge(app)
        // Health stays open: load balancers and pairing checks need it.
        .route("/health", get(entities::health));
    // Every peer route but hello and the handshake needs a signed session.
    let peer = Router::new()
        .route("/pull", post(peer::pull))
        .route_layer(middleware::from_fn_with_state(state.peer_auth.clone(), crate::peer_auth::require_session))
        .merge(crate::peer_auth::routes(state.peer_auth.clone()))
        .route("/hello", get(peer::hello))
        .layer(DefaultBodyLimit::max(crate::peer_auth::PEER_MAX_BODY));
    Router::new()
        .nest("/api", api)
        .nest("/peer/v1", peer)
        .route("/", get(dashboard::page))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(error::reject_declared_oversize))
        .with_state(state)
}
