//! The sync engine's driver: pulls peers' change logs in bounded batches, applies
//! each batch (merge, conflicts, cursor) in one store transaction, and reports
//! progress. Merge rules live in the domain; atomicity in the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tillmesh_domain::device::DeviceRecord;
use tillmesh_domain::ports::{Clock, PeerTransport, Store, StoreError};
use tillmesh_domain::DeviceId;
use tokio::sync::Mutex;

use crate::config::base_url;
use crate::events::{EventBus, EventKind};
use crate::identity::Writer;
use crate::services::network::NetworkService;

mod fetch;

use fetch::{PullAhead, PullPlan};

/// Result of syncing with one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSyncResult {
    /// The peer.
    pub device_id: DeviceId,
    /// New changes applied.
    pub pulled: u64,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// How this terminal pulls, and as whom.
#[derive(Clone)]
pub struct SyncSettings {
    /// Changes asked for per request (clamped to `1..=MAX_BATCH_SIZE`).
    pub batch_size: u32,
    /// This terminal's HTTP port, told to peers so that they pull from here too.
    pub port: u16,
    /// This terminal's writer, replaced at once when a pulled batch retires it.
    pub writer: Arc<Writer>,
}

/// Pull-based replication with every trusted peer.
pub struct SyncService {
    me: DeviceId,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn PeerTransport>,
    network: Arc<NetworkService>,
    events: EventBus,
    batch_size: u32,
    port: u16,
    writer: Arc<Writer>,
    in_progress: AtomicUsize,
    // One sync at a time per peer: a background round and `sync/now` must not both
    // pull the same cursor.
    peer_locks: Mutex<HashMap<DeviceId, Arc<Mutex<()>>>>,
}

impl SyncService {
    /// Wires the service.
    pub fn new(
        me: DeviceId,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn PeerTransport>,
        network: Arc<NetworkService>,
        events: EventBus,
        settings: SyncSettings,
    ) -> Self {
        let SyncSettings { batch_size, port, writer } = settings;
        Self {
            me,
            store,
            clock,
            transport,
            network,
            events,
            batch_size: batch_size.clamp(1, tillmesh_domain::wire::MAX_BATCH_SIZE as u32),
            port,
            writer,
            in_progress: AtomicUsize::new(0),
            peer_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a sync is running now.
    pub fn in_progress(&self) -> bool {
        self.in_progress.load(Ordering::SeqCst) > 0
    }

    /// One round with every online trusted peer, concurrently.
    ///
    /// # Errors
    /// Store errors listing the peers.
    pub async fn sync_round(&self) -> Result<Vec<PeerSyncResult>, StoreError> {
        let peers = self.network.sync_peers().await?;
        let runs = peers.iter().map(|p| self.sync_with(&p.record));
        Ok(futures::future::join_all(runs).await)
    }

    /// Pulls everything new from one peer, batch by batch.
    pub async fn sync_with(&self, peer: &DeviceRecord) -> PeerSyncResult {
        let lock = {
            let mut locks = self.peer_locks.lock().await;
            locks.entry(peer.device_id.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        let result = self.pull_all(peer).await;
        self.in_progress.fetch_sub(1, Ordering::SeqCst);
        let now = self.clock.now();
        let (pulled, error) = match result {
            Ok(n) => (n, None),
            Err((n, e)) => (n, Some(e)),
        };
        if let Some(e) = &error {
            tracing::warn!(peer = %peer.device_id, error = %e, "sync failed");
        }
        if let Err(e) = self.store.record_sync_result(&peer.device_id, now, error.clone()).await {
            tracing::error!(error = %e, "could not record sync result");
        }
        if error.is_none() {
            self.network.touch(&peer.device_id).await;
        }
        self.events
            .publish(EventKind::SyncCompleted, json!({"device_id": peer.device_id, "pulled": pulled, "error": error}));
        PeerSyncResult { device_id: peer.device_id.clone(), pulled, error }
    }

    async fn pull_all(&self, peer: &DeviceRecord) -> Result<u64, (u64, String)> {
        let base = base_url(&peer.address, peer.port);
        let mut pulled = 0u64;
        let state = self.store.peer_state(&peer.device_id).await.map_err(|e| (pulled, e.to_string()))?;
        let mut cursor = state.cursor;
        let mut epoch = state.epoch;
        let known = self.store.covered().await.map_err(|e| (pulled, e.to_string()))?;
        // Batches are fetched and checked ahead while earlier ones are stored; a
        // return (error or rewind) drops `ahead`, which stops the fetching.
        let mut ahead = PullAhead::start(self.plan(&base), cursor, known);
        while let Some(fetched) = ahead.next().await {
            let (_asked_with, mut resp) = fetched.map_err(|e| (pulled, e.to_string()))?;
            if resp.device_id != peer.device_id {
                return Err((pulled, format!("{base} now answers as {}", resp.device_id)));
            }
            // The peer writes under another writer than the one our cursor was obtained
            // under: its data dir was restored, copied or rolled back, so its log is not
            // the one our cursor points into. Read it again from the start (what we
            // already cover is skipped by the server).
            if let Some(to) = rewind_to(epoch.as_deref(), cursor, &resp.log_epoch) {
                tracing::warn!(
                    peer = %peer.device_id,
                    cursor,
                    epoch = %resp.log_epoch,
                    "peer's log is another one than our cursor's; reading it again from the start"
                );
                drop(ahead);
                self.store
                    .apply_remote(&peer.device_id, Vec::new(), to, resp.head, None, Some(resp.log_epoch.clone()))
                    .await
                    .map_err(|e| (pulled, e.to_string()))?;
                epoch = Some(resp.log_epoch.clone());
                cursor = to;
                let known = self.store.covered().await.map_err(|e| (pulled, e.to_string()))?;
                ahead = PullAhead::start(self.plan(&base), cursor, known);
                continue;
            }
            if resp.changes.len() > tillmesh_domain::wire::MAX_BATCH_SIZE {
                return Err((pulled, format!("peer sent {} changes, over the limit", resp.changes.len())));
            }
            if resp.next < cursor {
                return Err((pulled, "peer's log went backwards (was its database replaced?)".into()));
            }
            // Reaching the peer's head, this terminal holds everything the peer held
            // when it answered: its coverage becomes ours too.
            let covered = (!resp.has_more).then(|| std::mem::take(&mut resp.covered));
            // And who else is in the store: one pairing joins the whole store.
            self.network.learn_members(std::mem::take(&mut resp.members)).await;
            let outcome = self
                .store
                .apply_remote(
                    &peer.device_id,
                    resp.changes,
                    resp.next,
                    resp.head,
                    covered,
                    Some(resp.log_epoch.clone()),
                )
                .await
                .map_err(|e| (pulled, e.to_string()))?;
            cursor = resp.next;
            epoch = Some(resp.log_epoch);
            if outcome.writer_retired {
                let retired = self.writer.current().writer;
                self.writer.replace(&retired).await.map_err(|e| (pulled, e.to_string()))?;
            }
            pulled += outcome.applied as u64;
            for c in &outcome.new_conflicts {
                self.events.publish(
                    EventKind::ConflictDetected,
                    json!({"conflict_id": c.id, "entity_type": c.key.entity_type(), "entity_id": c.key.entity_id(), "field": c.field}),
                );
            }
        }
        Ok(pulled)
    }

    /// How this service pulls from `base`.
    fn plan(&self, base: &str) -> PullPlan {
        PullPlan {
            transport: self.transport.clone(),
            store: self.store.clone(),
            me: self.me.clone(),
            base: base.to_string(),
            batch_size: self.batch_size,
            port: self.port,
        }
    }

    /// Runs a round every `period` until dropped.
    pub async fn run_background(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.sync_round().await {
                tracing::error!(error = %e, "sync round failed");
            }
        }
    }
}

/// Where to move a cursor obtained under log epoch `ours` (`None`: unknown, e.g. set by
/// an older build) when the peer now answers under `theirs`: to 0 when they differ and
/// the cursor is past the start, else nowhere.
///
/// Why 0 and not the peer's `epoch_start`: a compacted log moves records, so positions
/// below the start of the peer's new epoch may hold records our cursor passed in the
/// other copy of the log before they moved there; only a full reread is sure to see
/// them. What we cover is skipped by the server, so it costs a scan, not a transfer.
fn rewind_to(ours: Option<&str>, cursor: u64, theirs: &str) -> Option<u64> {
    (cursor > 0 && ours != Some(theirs)).then_some(0)
}

#[cfg(test)]
mod tests {
    use super::rewind_to;

    #[test]
    fn a_cursor_is_read_again_from_the_start_only_when_the_peers_log_changed() {
        assert_eq!(rewind_to(Some("d.1"), 40, "d.1"), None, "same log: carry on");
        assert_eq!(rewind_to(Some("d.1"), 40, "d.2"), Some(0), "restored, copied or rolled back");
        assert_eq!(rewind_to(None, 40, "d.1"), Some(0), "a cursor of unknown epoch (older build)");
        assert_eq!(rewind_to(None, 0, "d.1"), None, "nothing to rewind");
    }
}
