//! Peer protocol endpoints (`/peer/v1/…`), see docs/PROTOCOL.md: the unauthenticated
//! identity probe `hello`, and `pull`, which only runs behind
//! [`crate::peer_auth::require_session`] (a signed store-member session).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tillmesh_domain::wire::{
    HelloV1, MemberV1, PullLinesHeaderV1, PullRequestV1, MAX_BATCH_SIZE, PROTOCOL_VERSION, PULL_LINES_MEDIA_TYPE,
    SYNC_BATCH_BYTES,
};
use tillmesh_domain::{DeviceId, VectorClock};

use super::error::{ApiError, ApiJson};
use super::SharedState;
use crate::peer_auth::PeerIdentity;

/// Who this terminal is: device id, name, protocol, public store id, port — nothing
/// secret, so discovery and pairing can identify a terminal before authenticating.
pub async fn hello(State(state): State<SharedState>) -> Json<HelloV1> {
    Json(HelloV1 {
        service: "tillmesh".into(),
        device_id: state.device_id.clone(),
        name: state.name.clone(),
        protocol: PROTOCOL_VERSION,
        store_id: state.peer_auth.store_id(),
        port: state.port,
    })
}

/// Serves a batch of this terminal's log to an authenticated member of the store.
pub async fn pull(
    State(state): State<SharedState>,
    Extension(peer): Extension<PeerIdentity>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PullRequestV1>,
) -> Result<RawPullResponse, ApiError> {
    if req.device_id != peer.device_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "device_mismatch",
            "the pull names another device than the session was opened for",
        ));
    }
    let limit = (req.limit as usize).clamp(1, MAX_BATCH_SIZE);
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(usize::MAX).clamp(1024, 4 * SYNC_BATCH_BYTES);
    let writer = state.writer.current();
    let held = req.known.get(&writer.writer);
    if held > 0 && state.store.note_held_elsewhere(&writer.writer, held).await? {
        // The puller holds more of this writer than the log: take a new one now, so
        // the answer already names the new epoch.
        state.writer.replace(&writer.writer).await?;
    }
    let writer = state.writer.current();
    let page = state.store.changes_after_json(req.after, limit, max_bytes, &req.known).await?;
    if peer.device_id != state.device_id {
        state.network.touch(&peer.device_id).await;
        // A member pulling from here is one to pull from in turn.
        if let Some(Extension(ConnectInfo(from))) = remote {
            state.network.learn(&peer.device_id, &from.ip().to_string(), req.port).await;
        }
    }
    // With the answer that reaches the head, who else is in the store.
    let members =
        if page.has_more { Vec::new() } else { state.network.members(&peer.device_id).await.unwrap_or_default() };
    // The stored records are relayed as they are (no decode and re-encode): the
    // puller verifies every checksum before applying anything.
    Ok(RawPullResponse {
        device_id: state.device_id.clone(),
        changes: page.changes,
        next: page.next,
        has_more: page.has_more,
        head: page.head,
        log_epoch: writer.writer.to_string(),
        epoch_start: writer.since,
        covered: page.covered,
        members,
        lines: accepts_lines(&headers),
    })
}

/// Whether the puller takes an answer written as lines (`Accept` names its type).
fn accepts_lines(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| m.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(PULL_LINES_MEDIA_TYPE)))
}

/// [`tillmesh_domain::wire::PullResponseV1`] as sent: the same JSON, with the stored
/// records spliced in as they are, or the same as lines when the puller takes them.
///
/// Why not serde: serializing `Box<RawValue>`s means parsing every record once more to
/// make them (a fifth of the server's CPU when serving a sync, measured), although the
/// store only holds records it encoded or verified itself.
pub struct RawPullResponse {
    device_id: DeviceId,
    changes: Vec<String>,
    next: u64,
    has_more: bool,
    head: u64,
    log_epoch: String,
    epoch_start: u64,
    covered: VectorClock,
    members: Vec<MemberV1>,
    lines: bool,
}

impl RawPullResponse {
    /// The answer as lines ([`PULL_LINES_MEDIA_TYPE`]), unless a record holds a newline
    /// (records this crate writes never do; one relayed as another peer laid it out
    /// might).
    fn to_lines(&self) -> Option<String> {
        if self.changes.iter().any(|c| memchr::memchr(b'\n', c.as_bytes()).is_some()) {
            return None;
        }
        let header = PullLinesHeaderV1 {
            device_id: self.device_id.clone(),
            count: self.changes.len(),
            next: self.next,
            has_more: self.has_more,
            head: self.head,
            log_epoch: self.log_epoch.clone(),
            epoch_start: self.epoch_start,
            covered: self.covered.clone(),
            members: self.members.clone(),
        };
        // Strings and integers only: encoding cannot fail.
        let mut out = serde_json::to_string(&header).ok()?;
        out.reserve(self.changes.iter().map(|c| c.len() + 1).sum::<usize>() + 1);
        out.push('\n');
        for c in &self.changes {
            out.push_str(c);
            out.push('\n');
        }
        Some(out)
    }

    /// The JSON text of the response.
    fn to_json(&self) -> String {
        let records: usize = self.changes.iter().map(|c| c.len() + 1).sum();
        let mut out = String::with_capacity(records + 256);
        out.push_str("{\"device_id\":");
        out.push_str(&json_string(self.device_id.as_str()));
        out.push_str(",\"changes\":[");
        for (i, c) in self.changes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(c);
        }
        out.push_str(&format!(
            "],\"next\":{},\"has_more\":{},\"head\":{},\"log_epoch\":{},\"epoch_start\":{},\"covered\":{},\"members\":{}}}",
            self.next,
            self.has_more,
            self.head,
            json_string(&self.log_epoch),
            self.epoch_start,
            // Device ids and integers only: encoding cannot fail.
            serde_json::to_string(&self.covered).unwrap_or_else(|_| "{}".into()),
            serde_json::to_string(&self.members).unwrap_or_else(|_| "[]".into())
        ));
        out
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    // Encoding a string cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

impl IntoResponse for RawPullResponse {
    fn into_response(self) -> Response {
        match self.lines.then(|| self.to_lines()).flatten() {
            Some(lines) => ([(header::CONTENT_TYPE, PULL_LINES_MEDIA_TYPE)], lines).into_response(),
            None => ([(header::CONTENT_TYPE, "application/json")], self.to_json()).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillmesh_domain::wire::PullResponseV1;
    use tillmesh_domain::{ChangeRecord, EncodedChange, EntityKey, EntityState, Timestamp};

    fn record(seq: u64) -> String {
        let d = DeviceId::parse("dev-a").expect("id");
        let mut s = EntityState::default();
        s.context.observe(&d, seq);
        EncodedChange::new(ChangeRecord::new(d, seq, EntityKey::new("t", "x").expect("key"), Timestamp(7), s))
            .into_json()
    }

    /// An answer from "server" (next 42, head 99, epoch start 5) with these changes.
    fn answer(changes: Vec<String>, has_more: bool, log_epoch: &str, lines: bool) -> RawPullResponse {
        RawPullResponse {
            covered: Default::default(),
            members: Vec::new(),
            device_id: DeviceId::parse("server").expect("id"),
            changes,
            next: 42,
            has_more,
            head: 99,
            log_epoch: log_epoch.into(),
            epoch_start: 5,
            lines,
        }
    }

    #[test]
    fn the_written_response_is_the_protocol_message() {
        for changes in [vec![], vec![record(1)], vec![record(1), record(2), record(3)]] {
            let raw = answer(changes.clone(), true, "epoch \"7\"\n", false);
            let got: PullResponseV1 = serde_json::from_str(&raw.to_json()).expect("valid JSON of the message");
            assert_eq!(got.device_id.as_str(), "server");
            let sent: Vec<String> = got.changes.iter().map(|c| c.json().to_string()).collect();
            assert_eq!(sent, changes);
            assert_eq!((got.next, got.has_more, got.head, got.epoch_start), (42, true, 99, 5));
            assert_eq!(got.log_epoch, "epoch \"7\"\n");
        }
    }

    #[test]
    fn the_answer_as_lines_is_the_header_then_one_record_per_line() {
        let changes = vec![record(1), record(2), record(3)];
        let raw = answer(changes.clone(), false, "epoch\n7", true);
        let text = raw.to_lines().expect("no record holds a newline");
        assert!(text.ends_with('\n'));
        let mut lines = text.lines();
        let header: PullLinesHeaderV1 = serde_json::from_str(lines.next().expect("header")).expect("header JSON");
        assert_eq!((header.count, header.next, header.has_more, header.head), (3, 42, false, 99));
        assert_eq!((header.log_epoch.as_str(), header.epoch_start), ("epoch\n7", 5));
        assert_eq!(lines.collect::<Vec<_>>(), changes);

        // A record laid out over several lines can only go as JSON.
        let mut spread = raw;
        spread.changes[1] =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&changes[1]).expect("json"))
                .expect("json");
        assert!(spread.to_lines().is_none());
        let response = spread.into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn lines_are_sent_only_to_pullers_that_name_them() {
        let accept = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::ACCEPT, v.parse().expect("header"));
            }
            accepts_lines(&h)
        };
        assert!(accept(&["application/x-ndjson"]));
        assert!(accept(&["application/json;q=0.5, Application/X-NDJSON ; q=1"]));
        assert!(accept(&["application/json", "application/x-ndjson"]));
        assert!(!accept(&[]));
        assert!(!accept(&["application/json"]));
        assert!(!accept(&["*/*"]));
        assert!(!accept(&["application/x-ndjson-seq"]));
    }
}
