//! Merge semantics and the semilattice laws of entity states.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

pub(super) fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).expect("valid id")
}

fn key() -> EntityKey {
    EntityKey::new("product", "p1").expect("valid key")
}

pub(super) fn put(fields: &[(&str, Value)]) -> EntityOp {
    EntityOp::Put { fields: fields.iter().map(|(k, v)| (k.to_string(), Some(v.clone()))).collect() }
}

pub(super) fn counter(field: &str, delta: i64) -> EntityOp {
    EntityOp::Counter { field: field.into(), delta }
}

pub(super) fn apply(s: &mut EntityState, op: &EntityOp, d: &str, at: i64) {
    s.apply_local(op, &dev(d), Timestamp(at)).expect("op applies");
}

/// Two terminals start from a shared state and each edits offline.
fn forked(base_op: &EntityOp) -> (EntityState, EntityState) {
    let mut base = EntityState::default();
    apply(&mut base, base_op, "a", 1);
    (base.clone(), base)
}

#[test]
fn concurrent_edits_of_different_fields_merge_without_conflict() {
    let (mut a, mut b) = forked(&put(&[("name", json!("Tea")), ("price", json!(100))]));
    apply(&mut a, &put(&[("name", json!("Green tea"))]), "a", 2);
    apply(&mut b, &put(&[("price", json!(120))]), "b", 2);
    let m = a.joined(&b);
    assert_eq!(m, b.joined(&a));
    assert_eq!(m.view().fields["name"], json!("Green tea"));
    assert_eq!(m.view().fields["price"], json!(120));
    assert!(m.conflicts(&key()).is_empty());
}

#[test]
fn concurrent_writes_to_one_field_become_a_conflict_with_the_same_id_everywhere() {
    let (mut a, mut b) = forked(&put(&[("price", json!(100))]));
    apply(&mut a, &put(&[("price", json!(110))]), "a", 5);
    apply(&mut b, &put(&[("price", json!(120))]), "b", 7);
    let ab = a.joined(&b);
    let ba = b.joined(&a);
    let (ca, cb) = (ab.conflicts(&key()), ba.conflicts(&key()));
    assert_eq!(ca.len(), 1);
    assert_eq!(ca, cb);
    assert_eq!(ca[0].values.len(), 2);
    // The provisional value is the latest write by writer time: b's.
    assert_eq!(ab.view().fields["price"], json!(120));
    assert_eq!(ca[0].provisional, json!(120));
}

#[test]
fn concurrent_writes_of_the_same_value_are_not_a_conflict() {
    let (mut a, mut b) = forked(&put(&[("price", json!(100))]));
    apply(&mut a, &put(&[("price", json!(130))]), "a", 5);
    apply(&mut b, &put(&[("price", json!(130))]), "b", 7);
    assert!(a.joined(&b).conflicts(&key()).is_empty());
}

#[test]
fn a_write_that_saw_the_conflict_resolves_it_everywhere() {
    let (mut a, mut b) = forked(&put(&[("price", json!(100))]));
    apply(&mut a, &put(&[("price", json!(110))]), "a", 5);
    apply(&mut b, &put(&[("price", json!(120))]), "b", 7);
    let mut c = a.joined(&b);
    apply(&mut c, &put(&[("price", json!(115))]), "c", 9);
    assert!(c.conflicts(&key()).is_empty());
    // b, which still has the conflict, receives the resolution.
    let b2 = b.joined(&a).joined(&c);
    assert!(b2.conflicts(&key()).is_empty());
    assert_eq!(b2.view().fields["price"], json!(115));
}

#[test]
fn offline_sales_on_two_terminals_both_decrement_stock() {
    let (mut a, mut b) = forked(&counter("stock", 10));
    apply(&mut a, &counter("stock", -3), "a", 2);
    apply(&mut b, &counter("stock", -2), "b", 2);
    apply(&mut b, &counter("stock", -1), "b", 3);
    assert_eq!(a.joined(&b).view().fields["stock"], json!(4));
}

#[test]
fn a_delete_wins_only_over_what_it_saw() {
    let (mut a, mut b) = forked(&put(&[("name", json!("Tea")), ("price", json!(1))]));
    apply(&mut a, &EntityOp::Delete, "a", 2);
    assert!(a.view().deleted);
    let m = a.joined(&b);
    assert!(m.view().deleted, "an older state does not revive a deleted entity");
    apply(&mut b, &put(&[("price", json!(2))]), "b", 3);
    let m = a.joined(&b);
    assert!(!m.view().deleted, "a concurrent write survives the delete");
    assert_eq!(m.view().fields.get("name"), None);
    assert_eq!(m.view().fields["price"], json!(2));
}

#[test]
fn a_delete_resets_counters_but_concurrent_adjustments_still_count() {
    let (mut a, mut b) = forked(&counter("stock", 10));
    apply(&mut a, &EntityOp::Delete, "a", 2);
    apply(&mut b, &counter("stock", -4), "b", 2);
    assert_eq!(a.joined(&b).view().fields["stock"], json!(-4));
}

#[test]
fn writing_a_counter_as_a_plain_value_is_rejected_and_changes_nothing() {
    let (mut a, _) = forked(&counter("stock", 10));
    let before = a.clone();
    let err = a.apply_local(&put(&[("stock", json!(3))]), &dev("a"), Timestamp(2)).expect_err("mismatch");
    assert!(matches!(err, DomainError::FieldKindMismatch { .. }));
    assert_eq!(a, before);
    let (mut p, _) = forked(&put(&[("name", json!("x"))]));
    assert!(p.apply_local(&counter("name", 1), &dev("a"), Timestamp(2)).is_err());
}

#[test]
fn a_counter_adjusted_by_zero_exists_with_value_zero() {
    let mut s = EntityState::default();
    apply(&mut s, &counter("stock", 0), "a", 1);
    assert_eq!(s.view().fields["stock"], json!(0));
    assert!(s.apply_local(&put(&[("stock", json!(1))]), &dev("a"), Timestamp(2)).is_err());
}

#[test]
fn counter_overflow_is_rejected() {
    let (mut a, _) = forked(&counter("stock", i64::MAX));
    let err = a.apply_local(&counter("stock", 1), &dev("a"), Timestamp(2)).expect_err("overflow");
    assert!(matches!(err, DomainError::CounterOverflow { .. }));
    assert!(a.apply_local(&counter("stock", i64::MIN), &dev("a"), Timestamp(3)).is_ok());
}

#[test]
fn setting_a_field_to_null_removes_it() {
    let (mut a, _) = forked(&put(&[("name", json!("Tea")), ("note", json!("x"))]));
    a.apply_local(&EntityOp::Put { fields: BTreeMap::from([("note".to_string(), None)]) }, &dev("a"), Timestamp(2))
        .expect("put");
    assert_eq!(a.view().fields.get("note"), None);
    assert_eq!(a.view().fields["name"], json!("Tea"));
}

#[test]
fn too_deep_values_are_rejected() {
    let mut v = json!(1);
    for _ in 0..40 {
        v = json!([v]);
    }
    let mut s = EntityState::default();
    assert!(matches!(s.apply_local(&put(&[("x", v)]), &dev("a"), Timestamp(1)), Err(DomainError::TooDeep { .. })));
}

// ---- property tests -------------------------------------------------------------

const DEVICES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
pub(super) enum Step {
    Op(usize, EntityOp),
    Sync(usize, usize),
}

fn op() -> impl Strategy<Value = EntityOp> {
    let field = prop_oneof![Just("name"), Just("price"), Just("tax")];
    let value = prop_oneof![Just(None), (0i64..4).prop_map(|n| Some(json!(n)))];
    prop_oneof![
        4 => proptest::collection::btree_map(field.prop_map(String::from), value, 1..3)
            .prop_map(|fields| EntityOp::Put { fields }),
        2 => (-5i64..6).prop_map(|delta| EntityOp::Counter { field: "stock".into(), delta }),
        1 => Just(EntityOp::Delete),
    ]
}

pub(super) fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0..DEVICES.len(), op()).prop_map(|(d, o)| Step::Op(d, o)),
            1 => (0..DEVICES.len(), 0..DEVICES.len()).prop_map(|(a, b)| Step::Sync(a, b)),
        ],
        1..25,
    )
}

/// Runs a random history and returns every state emitted by a local write (what the
/// change records carry), plus the replicas' final states.
pub(super) fn run(steps: &[Step]) -> (Vec<EntityState>, Vec<EntityState>) {
    let mut replicas = vec![EntityState::default(); DEVICES.len()];
    let mut emitted = Vec::new();
    for (t, s) in steps.iter().enumerate() {
        match s {
            Step::Op(d, o) => {
                // Kind mismatches are rejected without effect, which is fine here.
                if replicas[*d].apply_local(o, &dev(DEVICES[*d]), Timestamp(t as i64)).is_ok() {
                    emitted.push(replicas[*d].clone());
                }
            }
            Step::Sync(a, b) => {
                let other = replicas[*b].clone();
                replicas[*a].join(&other);
            }
        }
    }
    (emitted, replicas)
}

fn join_all<'a>(states: impl IntoIterator<Item = &'a EntityState>) -> EntityState {
    let mut out = EntityState::default();
    for s in states {
        out.join(s);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn join_is_commutative_associative_and_idempotent(steps in steps(), i in 0usize..100, j in 0usize..100, k in 0usize..100) {
        let (emitted, replicas) = run(&steps);
        let all: Vec<_> = emitted.iter().chain(replicas.iter()).collect();
        let (a, b, c) = (all[i % all.len()], all[j % all.len()], all[k % all.len()]);
        prop_assert_eq!(a.joined(b), b.joined(a));
        prop_assert_eq!(a.joined(b).joined(c), a.joined(&b.joined(c)));
        prop_assert_eq!(a.joined(a), a.clone());
    }

    #[test]
    fn replicas_converge_whatever_the_order_and_duplication(
        steps in steps(),
        order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..60),
    ) {
        let (emitted, replicas) = run(&steps);
        prop_assume!(!emitted.is_empty());
        let in_order = join_all(&emitted);
        // Another replica receives every change at least once, in a random order with
        // random duplicates, then everything once more in reverse.
        let mut shuffled: Vec<&EntityState> = order.iter().map(|ix| ix.get(&emitted)).collect();
        shuffled.extend(emitted.iter().rev());
        let other = join_all(shuffled);
        prop_assert_eq!(&in_order, &other);
        prop_assert_eq!(in_order.view(), other.view());
        prop_assert_eq!(in_order.conflicts(&key()), other.conflicts(&key()));
        // Relay: replicas' own states carry nothing beyond what was emitted.
        prop_assert_eq!(join_all(replicas.iter().chain(emitted.iter())), in_order);
    }

    #[test]
    fn join_owned_is_join(steps in steps(), i in 0usize..100, j in 0usize..100) {
        let (emitted, replicas) = run(&steps);
        let mut all: Vec<EntityState> = emitted.into_iter().chain(replicas).collect();
        all.push(EntityState::default());
        let (a, b) = (&all[i % all.len()], &all[j % all.len()]);
        let mut owned = a.clone();
        let same = owned.join_owned(b.clone());
        prop_assert_eq!(&owned, &a.joined(b));
        prop_assert_eq!(same, &owned == b);
    }

    #[test]
    fn every_state_survives_its_json_form(steps in steps()) {
        let (emitted, replicas) = run(&steps);
        for s in emitted.iter().chain(replicas.iter()) {
            let text = serde_json::to_string(s).expect("encode");
            let back: EntityState = serde_json::from_str(&text).expect("decode");
            prop_assert_eq!(&back, s);
            prop_assert_eq!(serde_json::to_string(&back).expect("encode again"), text);
        }
    }

    #[test]
    fn counters_sum_every_devices_adjustments(deltas in proptest::collection::vec((0..DEVICES.len(), -50i64..50), 1..30)) {
        let mut replicas = vec![EntityState::default(); DEVICES.len()];
        for (t, (d, delta)) in deltas.iter().enumerate() {
            replicas[*d].apply_local(&counter("stock", *delta), &dev(DEVICES[*d]), Timestamp(t as i64)).expect("counter op");
        }
        let merged = join_all(&replicas);
        let sum: i64 = deltas.iter().map(|(_, x)| x).sum();
        prop_assert_eq!(&merged.view().fields["stock"], &json!(sum));
    }
}

#[test]
fn json_form_names_each_device_once_and_dots_by_index() {
    let mut s = EntityState::default();
    s.apply_local(&put(&[("name", json!("Tea"))]), &dev("b"), Timestamp(5)).expect("put");
    let mut other = EntityState::default();
    other.apply_local(&put(&[("name", json!("Coffee"))]), &dev("a"), Timestamp(6)).expect("put");
    s.join(&other);
    let v = serde_json::to_value(&s).expect("encode");
    assert_eq!(
        v,
        json!({
            "context": {"a": 1, "b": 1},
            "alive": [[0, 1, 6], [1, 1, 5]],
            "fields": {"name": {"register": [[0, 1, 6, "Coffee"], [1, 1, 5, "Tea"]]}}
        })
    );
}

#[test]
fn a_dot_index_outside_the_context_is_rejected() {
    let bad = r#"{"context":{"a":1},"alive":[[1,1,5]],"fields":{}}"#;
    let err = serde_json::from_str::<EntityState>(bad).expect_err("index 1 of a one-device context");
    assert!(err.to_string().contains("outside the context"), "{err}");
    let bad = r#"{"context":{},"alive":[],"fields":{"x":{"register":[[0,1,5,true]]}}}"#;
    assert!(serde_json::from_str::<EntityState>(bad).is_err());
}

#[test]
fn states_written_before_protocol_2_still_decode() {
    let old = r#"{"context":{"a":1,"b":1},
        "alive":[{"dot":{"device":"a","counter":1},"at":6},{"dot":{"device":"b","counter":1},"at":5}],
        "fields":{"name":{"register":{"entries":[
            {"dot":{"device":"a","counter":1},"value":"Coffee","at":6},
            {"dot":{"device":"b","counter":1},"value":"Tea","at":5}]}},
          "stock":{"counter":{"pos":{"a":3},"neg":{},"floor_pos":{},"floor_neg":{}}}}}"#;
    let s: EntityState = serde_json::from_str(old).expect("old form");
    assert_eq!(s.fields["name"].register.entries.len(), 2);
    assert_eq!(s.fields["stock"].counter.value(), 3);
    assert_eq!(s.alive.len(), 2);
    let again: EntityState = serde_json::from_str(&serde_json::to_string(&s).expect("encode")).expect("new form");
    assert_eq!(again, s);
}

#[test]
fn join_owned_into_nothing_drops_empty_fields_like_join() {
    let odd: EntityState =
        serde_json::from_str(r#"{"context":{"a":1},"alive":[[0,1,5]],"fields":{"x":{}}}"#).expect("decodes");
    let mut owned = EntityState::default();
    assert!(!owned.join_owned(odd.clone()), "the empty field is dropped, so the result differs");
    assert_eq!(owned, EntityState::default().joined(&odd));
    assert!(owned.fields.is_empty());
}
