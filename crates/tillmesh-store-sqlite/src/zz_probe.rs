//! Temporary probe: which statements are prepared more than once.
#[cfg(test)]
mod t {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use diesel::connection::{Instrumentation, InstrumentationEvent};
    use diesel::Connection;
    use diesel::SqliteConnection;
    use diesel_migrations::MigrationHarness;
    use tillmesh_domain::*;

    #[test]
    fn probe() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.run_pending_migrations(crate::store::MIGRATIONS).unwrap();
        let seen: Arc<Mutex<HashMap<String, (usize, usize)>>> = Default::default();
        let s2 = seen.clone();
        let inst: Box<dyn Instrumentation> = Box::new(move |ev: InstrumentationEvent<'_>| {
            match ev {
                InstrumentationEvent::StartQuery { query, .. } => {
                    let q = query.to_string();
                    let q = q.split(" -- binds").next().unwrap_or("").to_string();
                    s2.lock().unwrap().entry(q).or_default().0 += 1;
                }
                InstrumentationEvent::CacheQuery { sql, .. } => {
                    s2.lock().unwrap().entry(sql.to_string()).or_default().1 += 1;
                }
                _ => {}
            }
        });
        conn.set_instrumentation(inst);
        let dev = DeviceId::parse("a").unwrap();
        let ops = (0..50).map(|i| (EntityKey::new("p", format!("p{i}")).unwrap(), EntityOp::Counter { field: "q".into(), delta: 1 })).collect();
        conn.immediate_transaction(|c| crate::entities::apply_local_tx(c, &dev, ops, Timestamp(1))).unwrap();
        for (k, v) in seen.lock().unwrap().iter() { println!("{v:?} {k}"); }
    }
}
