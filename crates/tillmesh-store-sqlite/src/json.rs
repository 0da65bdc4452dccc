//! JSON encodings stored in the database. A new change record's JSON is written from
//! its parts, so a local write builds no record value just to encode it. The output is
//! byte-identical to `serde_json::to_string(&record)` (a unit test below pins that).

use serde::Serialize;
use tillmesh_domain::{Checksum, DeviceId, EntityKey, EntityState, Timestamp};

use crate::store::{unexpected, Res};

fn push<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Res<()> {
    serde_json::to_writer(&mut *out, v).map_err(|e| unexpected(e.to_string()))
}

/// JSON of a value, as stored.
pub(crate) fn to_json<T: Serialize + ?Sized>(v: &T) -> Res<String> {
    serde_json::to_string(v).map_err(|e| unexpected(e.to_string()))
}

/// `serde_json::to_string` of the [`tillmesh_domain::ChangeRecord`] with these parts,
/// written into one buffer (the state encoded in place, not copied in).
pub(crate) fn record_json(
    origin: &DeviceId,
    seq: u64,
    key: &EntityKey,
    at: Timestamp,
    state: &EntityState,
    checksum: &Checksum,
) -> Res<String> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(br#"{"origin":"#);
    push(&mut out, origin)?;
    out.extend_from_slice(br#","seq":"#);
    push(&mut out, &seq)?;
    out.extend_from_slice(br#","key":"#);
    push(&mut out, key)?;
    out.extend_from_slice(br#","at":"#);
    push(&mut out, &at)?;
    out.extend_from_slice(br#","state":"#);
    push(&mut out, state)?;
    out.extend_from_slice(br#","checksum":"#);
    push(&mut out, checksum)?;
    out.push(b'}');
    String::from_utf8(out).map_err(|e| unexpected(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use tillmesh_domain::{ChangeRecord, DeviceId, EntityKey, EntityOp, EntityState, Timestamp};

    use super::*;

    fn dev(s: &str) -> DeviceId {
        DeviceId::parse(s).expect("device id")
    }

    #[test]
    fn record_json_is_byte_identical_to_serde() {
        let key = EntityKey::new("product", "p-1.x_2").expect("key");
        let mut a = EntityState::default();
        let put = EntityOp::Put {
            fields: BTreeMap::from([
                ("name".to_string(), Some(json!("Tea \"green\" \u{e9}\n"))),
                ("price".to_string(), Some(json!(2.5))),
                ("tags".to_string(), Some(json!([1, {"b": null, "a": [true]}]))),
            ]),
        };
        a.apply_local(&put, &dev("a"), Timestamp(-5)).expect("put");
        let mut b = EntityState::default();
        let count = EntityOp::Counter { field: "qty".into(), delta: -7 };
        a.apply_local(&count, &dev("a"), Timestamp(7)).expect("counter");
        let other = EntityOp::Put { fields: BTreeMap::from([("name".to_string(), Some(json!("Other")))]) };
        b.apply_local(&other, &dev("b"), Timestamp(8)).expect("put");
        a.join(&b);
        assert_eq!(a.conflicts(&key).len(), 1, "state with a conflict");
        let mut deleted = a.clone();
        deleted.apply_local(&EntityOp::Delete, &dev("c"), Timestamp(9)).expect("delete");

        for (seq, state) in [(1, EntityState::default()), (u64::MAX, a), (42, deleted)] {
            let r = ChangeRecord::new(dev("a"), seq, key.clone(), Timestamp(i64::MIN), state);
            let json = record_json(&r.origin, r.seq, &r.key, r.at, &r.state, &r.checksum).expect("record json");
            assert_eq!(json, serde_json::to_string(&r).expect("serde"));
        }
    }
}
