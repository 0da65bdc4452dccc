//! Temporary probe (deleted before hand-off).
use std::time::Instant;
use serde_json::json;
use tillmesh_domain::ports::EntityStore;
use tillmesh_domain::{DeviceId, EntityKey, EntityOp, Timestamp};
use tillmesh_store_sqlite::SqliteStore;
fn product(i: usize) -> EntityOp {
    let fields = [
        ("name", json!(format!("Product number {i} (500 g)"))),
        ("sku", json!(format!("SKU-{i:08}"))),
        ("price_cents", json!(199 + (i % 1000))),
        ("category", json!(["bakery", "dairy", "drinks", "frozen"][i % 4])),
        ("vat_rate", json!(0.2)),
        ("barcode", json!(format!("5{i:012}"))),
        ("active", json!(true)),
    ];
    EntityOp::Put { fields: fields.into_iter().map(|(k, v)| (k.to_string(), Some(v))).collect() }
}
#[tokio::main]
async fn main() {
    let mem = std::env::args().nth(1).is_some();
    let dir = tempfile::tempdir().unwrap();
    let a = if mem { SqliteStore::open_in_memory().unwrap() } else { SqliteStore::open(&dir.path().join("a.db")).unwrap() };
    let da = DeviceId::parse("till-a").unwrap();
    for round in 0..3 {
        let ops: Vec<_> = (0..10_000).map(|i| (EntityKey::new("w", format!("r{round}-{i}")).unwrap(), product(i))).collect();
        let t = Instant::now();
        let out = a.apply_local(&da, ops, Timestamp(1)).await.unwrap();
        let e = t.elapsed();
        drop(out);
        println!("round {round}: {:.0}/s", 10_000.0 / e.as_secs_f64());
    }
}
