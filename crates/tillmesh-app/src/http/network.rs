//! Network endpoints: the device registry and manual pairing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson};
use super::SharedState;
use crate::services::network::{DeviceView, PairError};
use crate::timefmt::rfc3339;

/// A device in the registry.
#[derive(Serialize, ToSchema)]
pub struct DeviceDto {
    /// Device id.
    pub device_id: String,
    /// Human name.
    pub name: String,
    /// Address (IP or host).
    pub address: String,
    /// HTTP port.
    pub port: u16,
    /// `online`, `stale` or `offline`.
    pub status: &'static str,
    /// Last contact (RFC 3339).
    pub last_seen: String,
    /// `self`, `mdns`, `manual` (paired by address or code) or `peer` (learned from
    /// another member: it pulled from this terminal, or a member listed it).
    pub source: &'static str,
    /// Proved membership of this store.
    pub trusted: bool,
}

impl From<&DeviceView> for DeviceDto {
    fn from(d: &DeviceView) -> Self {
        Self {
            device_id: d.record.device_id.to_string(),
            name: d.record.name.clone(),
            address: d.record.address.clone(),
            port: d.record.port,
            status: d.status.as_str(),
            last_seen: rfc3339(d.record.last_seen),
            source: d.record.source.as_str(),
            trusted: d.record.trusted,
        }
    }
}

/// Device list.
#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    /// All known devices, this terminal included.
    pub devices: Vec<DeviceDto>,
}

/// Pairing request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairBody {
    /// `HOST:PORT` of the terminal to pair with.
    pub address: String,
    /// One-time pairing code (when joining a store).
    pub code: Option<String>,
}

/// Known devices with their liveness.
#[utoipa::path(get, path = "/api/network/devices", tag = "network", responses((status = 200, body = DeviceList)))]
pub async fn devices(State(state): State<SharedState>) -> Result<Json<DeviceList>, ApiError> {
    let devices = state.network.devices().await?;
    Ok(Json(DeviceList { devices: devices.iter().map(DeviceDto::from).collect() }))
}

/// Pairs with a terminal by address (where multicast is blocked).
#[utoipa::path(post, path = "/api/network/pair", tag = "network", request_body = PairBody,
    responses((status = 200, body = DeviceDto), (status = 400), (status = 403, description = "wrong pairing code"), (status = 410, description = "pairing code expired or burned after 5 wrong tries"), (status = 422, description = "unreachable, or not a terminal of this store")))]
pub async fn pair(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<PairBody>,
) -> Result<Json<DeviceDto>, ApiError> {
    if let Some(code) = body.code.as_deref() {
        super::pairing::join_store(&state, &body.address, code).await?;
    }
    match state.network.pair(&body.address).await {
        Ok(record) => {
            let view = DeviceView { record, status: tillmesh_domain::LivenessStatus::Online };
            Ok(Json(DeviceDto::from(&view)))
        }
        Err(PairError::BadAddress(m)) => Err(ApiError::bad_request("invalid_address", m)),
        Err(e @ PairError::Unreachable(..)) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "peer_unreachable", e.to_string()))
        }
        Err(PairError::Foreign(m)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_a_store_terminal", m)),
        Err(PairError::Store(e)) => Err(e.into()),
    }
}
