#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;
use tillmesh_domain::ports::EntityStore;
use tillmesh_store_sqlite::SqliteStore;
#[tokio::main]
async fn main() {
    let s = SqliteStore::open(std::path::Path::new("/tmp/digest-b.db")).expect("o");
    for _ in 0..8 {
        let t = Instant::now();
        let d = s.digest().await.expect("d");
        println!("digest {} entities in {:.1} ms", d.entities, t.elapsed().as_secs_f64() * 1e3);
    }
}
