//! Canonical encoding and checksums of change records.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::checksum::verify_checksum;
use crate::entity::EntityOp;

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).expect("valid id")
}

fn record(name: serde_json::Value, seq: u64) -> ChangeRecord {
    let mut state = EntityState::default();
    let op =
        EntityOp::Put { fields: [("name".to_string(), Some(name)), ("price".to_string(), Some(json!(1.5)))].into() };
    state.apply_local(&op, &dev("term-1"), Timestamp(1_700_000_000_000)).expect("put");
    ChangeRecord::new(
        dev("term-1"),
        seq,
        EntityKey::new("product", "p1").expect("key"),
        Timestamp(1_700_000_000_000),
        state,
    )
}

#[test]
fn checksum_is_stable_across_runs_and_builds() {
    // Pinned: a change of this value means the canonical encoding changed, which
    // would break sync with terminals running older builds.
    assert_eq!(
        record(json!("Tea"), 1).checksum.to_hex(),
        "727956bfc7057035c55c3003d99a28c980f7a49419f8c2f5a40392b0aa1e33b3"
    );
}

#[test]
fn hashes_from_shared_state_bytes_equal_the_whole_encodings() {
    let r = record(json!("Tea"), 7);
    let bytes = crate::canonical::state_bytes(&r.state);
    assert_eq!(ChangeRecord::checksum_of(&r.origin, r.seq, &r.key, r.at, &bytes), r.checksum);
    assert_ne!(ChangeRecord::checksum_of(&r.origin, r.seq + 1, &r.key, r.at, &bytes), r.checksum);
    let mut e = Encoder::new();
    e.str("tillmesh.entity.v1").key(&r.key).entity_state(&r.state);
    let whole = Checksum::of(&e.finish());
    assert_eq!(crate::digest::entity_hash_of(&r.key, &bytes), whole);
    assert_eq!(crate::digest::entity_hash(&r.key, &r.state), whole);
    // Hashed together, the two are the same digests.
    assert_eq!(ChangeRecord::checksum_and_entity_hash(&r.origin, r.seq, &r.key, r.at, &bytes), (r.checksum, whole));
}

#[test]
fn a_record_survives_a_json_round_trip_with_a_valid_checksum() {
    let r = record(json!({"b": [1, 2.25, "x"], "a": null, "c": {"z": 1e300}}), 3);
    let text = serde_json::to_string(&r).expect("json");
    let back: ChangeRecord = serde_json::from_str(&text).expect("json");
    assert_eq!(back, r);
    assert!(back.verify().is_ok());
}

#[test]
fn a_tampered_record_fails_verification() {
    let mut r = record(json!("Tea"), 1);
    r.seq = 2;
    assert!(matches!(verify_checksum(&r), Err(DomainError::ChecksumMismatch { .. })));
}

#[test]
fn object_key_order_does_not_change_the_checksum() {
    let a: serde_json::Value = serde_json::from_str(r#"{"x":1,"y":2}"#).expect("json");
    let b: serde_json::Value = serde_json::from_str(r#"{"y":2,"x":1}"#).expect("json");
    assert_eq!(record(a, 1).checksum, record(b, 1).checksum);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn checksum_changes_when_any_encoded_field_changes(
        name in "[a-z]{0,12}",
        other in "[a-z]{0,12}",
        seq in 1u64..1000,
        price in -1.0e6f64..1.0e6,
        which in 0usize..5,
    ) {
        let base = record(json!(name), seq);
        let mut changed = base.clone();
        match which {
            0 => changed.seq += 1,
            1 => changed.origin = dev("term-2"),
            2 => changed.at = Timestamp(changed.at.0 + 1),
            3 => changed.key = EntityKey::new("product", "p2").expect("key"),
            _ => {
                prop_assume!(other != name);
                changed = record(json!(other), seq);
            }
        }
        prop_assert_ne!(calculate_checksum(&base), calculate_checksum(&changed));
        // Floats encode by value, not by their text.
        let f1 = record(json!(price), seq);
        let f2: ChangeRecord = serde_json::from_str(&serde_json::to_string(&f1).expect("json")).expect("json");
        prop_assert!(verify_checksum(&f2).is_ok());
    }
}

#[test]
fn an_encoded_change_is_verified_once_and_a_bad_one_never_passes() {
    let r = record(json!("Tea"), 4);
    let mut good = EncodedChange::decode(serde_json::to_string(&r).expect("json")).expect("decode");
    good.check().expect("valid");
    good.check().expect("still valid");
    assert_eq!(good.to_record().expect("whole record"), r);
    let v = good.into_verified().expect("verified");
    assert_eq!(v.header.seq, r.seq);
    assert_eq!(v.json, serde_json::to_string(&r).expect("json"));
    let hash = crate::digest::entity_hash(&r.key, &r.state);
    assert_eq!(v.entity_hash, hash);
    assert!(matches!(v.state, crate::change::ReceivedState::Encoded(s) if !s.deleted && !s.may_conflict));

    // The same record decoded the usual way (text in another layout) checks alike.
    let mut value: serde_json::Value = serde_json::to_value(&r).expect("value");
    let state = value["state"].take();
    value["state"] =
        serde_json::json!({"fields": state["fields"], "alive": state["alive"], "context": state["context"]});
    let mut reordered = EncodedChange::decode(value.to_string()).expect("decode");
    reordered.check().expect("valid");
    let v2 = reordered.clone().into_verified().expect("verified");
    assert!(matches!(v2.state, crate::change::ReceivedState::Decoded(ref s) if *s == r.state));
    assert_eq!(v2.entity_hash, hash);
    assert!(reordered == EncodedChange::from(r.clone()), "equal whatever the layout");

    let mut tampered = r.clone();
    tampered.at = Timestamp(tampered.at.0 + 1);
    let mut bad = EncodedChange::from(tampered);
    assert!(matches!(bad.check(), Err(DomainError::ChecksumMismatch { .. })));
    assert!(matches!(bad.clone().into_verified(), Err(DomainError::ChecksumMismatch { .. })));
}

#[test]
fn decoding_text_refuses_anything_but_one_record() {
    let text = serde_json::to_string(&record(json!("Tea"), 4)).expect("json");
    let mut reordered: serde_json::Value = serde_json::from_str(&text).expect("value");
    let state = reordered["state"].take();
    reordered["state"] = json!({"fields": state["fields"], "alive": state["alive"], "context": state["context"]});
    let reordered = reordered.to_string();
    for good in [&text, &reordered] {
        assert!(EncodedChange::decode(good.clone()).is_ok());
        // Both ways of reading (one pass, and the usual one for other layouts) read to
        // the end: nothing may follow the record, and the record must be whole.
        for bad in [
            format!("{good} x"),
            format!("{good}{good}"),
            format!("{good},"),
            good[..good.len() - 1].to_string(),
            good.replacen("\"seq\":4", "\"seq\":4 4", 1),
            good.replacen("\"Tea\"", "\"Tea", 1),
        ] {
            assert!(EncodedChange::decode(bad.clone()).is_err(), "accepted {bad}");
        }
    }
    // Unknown fields are skipped but must still be JSON.
    let extra = text.replacen('{', "{\"x\":[1,{\"y\":null}],", 1);
    assert!(EncodedChange::decode(extra.clone()).is_ok());
    assert!(EncodedChange::decode(extra.replacen("null", "nul", 1)).is_err());
    // What decoded serializes as its own text.
    let c = EncodedChange::decode(reordered.clone()).expect("decode");
    assert_eq!(serde_json::to_string(&c).expect("serialize"), reordered);
}
