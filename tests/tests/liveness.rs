//! Device liveness with a manual clock: `online` → `stale` → `offline` exactly at the
//! thresholds, transitions published as events, and back `online` on contact.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use anyhow::Result;
use tillmesh_domain::LivenessStatus;
use tillmesh_tests::clock::ManualClock;
use tillmesh_tests::cluster::Cluster;

async fn status_of_peer(c: &Cluster) -> Result<LivenessStatus> {
    let peer = c.state(1).device_id.clone();
    let devices = c.state(0).network.devices().await?;
    Ok(devices.into_iter().find(|d| d.record.device_id == peer).unwrap().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_turns_stale_then_offline_exactly_at_the_thresholds() -> Result<()> {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let c = Cluster::spawn_with_clock(2, clock.clone()).await?;
    c.link(0, 1).await?;
    let mut events = c.state(0).events.subscribe();
    // The harness runs with a 3,600 s heartbeat and a 86,400 s offline threshold:
    // stale after 1.5 heartbeats (5,400 s).
    let stale_at = 5_400_000;
    let offline_at = 86_400_000;
    assert_eq!(status_of_peer(&c).await?, LivenessStatus::Online);
    clock.advance(stale_at - 1);
    assert_eq!(status_of_peer(&c).await?, LivenessStatus::Online);
    clock.advance(1);
    assert_eq!(status_of_peer(&c).await?, LivenessStatus::Stale);
    clock.advance(offline_at - stale_at - 1);
    assert_eq!(status_of_peer(&c).await?, LivenessStatus::Stale);
    c.state(0).network.refresh_statuses().await;
    assert!(events.try_recv().is_err(), "stale is not offline: no event yet");
    clock.advance(1);
    assert_eq!(status_of_peer(&c).await?, LivenessStatus::Offline);
    c.state(0).network.refresh_statuses().await;
    let e = events.try_recv()?;
    assert_eq!(e.kind.as_str(), "device_offline");
    assert_eq!(e.data["device_id"], c.state(1).device_id.to_string());
    // Offline peers are not synced with.
    assert!(c.state(0).network.sync_peers().await?.is_empty());
    // Any successful contact (here a heartbeat ping) brings it back.
    c.state(0).network.heartbeat().await;
    assert_eq!(status_of_peer(&c).await?, LivenessStatus::Online);
    let e = events.try_recv()?;
    assert_eq!(e.kind.as_str(), "device_online");
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_whose_clocks_are_three_hours_apart_still_authenticate_and_sync() -> Result<()> {
    let three_hours = 3 * 3_600_000;
    let now = 1_800_000_000_000;
    let clocks: Vec<Arc<dyn tillmesh_domain::ports::Clock>> =
        vec![Arc::new(ManualClock::new(now)), Arc::new(ManualClock::new(now + three_hours))];
    let c = Cluster::spawn_with_clocks(clocks).await?;
    // Pairing runs the authenticated handshake; it must not depend on wall time.
    c.link(0, 1).await?;
    c.link(1, 0).await?;
    let put = |i: usize, field: &str, v: i64| {
        let state = c.state(i);
        let op = tillmesh_domain::EntityOp::Put { fields: [(field.to_string(), Some(serde_json::json!(v)))].into() };
        async move { state.entities.apply(vec![(tillmesh_domain::EntityKey::new("product", "p1")?, op)]).await }
    };
    put(0, "price", 1).await?;
    put(1, "tax", 2).await?;
    put(0, "stock_note", 3).await?;
    let rounds = c.converge(4).await?;
    assert!(rounds <= 2);
    let view = c.state(1).store.entity(&tillmesh_domain::EntityKey::new("product", "p1")?).await?.unwrap().view();
    assert_eq!(view.fields.len(), 3, "{view:?}");
    // Both stay online for each other despite the skew: last-seen is each one's own clock.
    assert_eq!(status_of_peer(&c).await?, LivenessStatus::Online);
    c.shutdown().await;
    Ok(())
}
