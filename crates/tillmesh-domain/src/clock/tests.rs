//! Laws of vector clocks.

use super::*;
use proptest::prelude::*;

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).expect("valid id")
}

fn clock() -> impl Strategy<Value = VectorClock> {
    proptest::collection::btree_map(prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")], 0u64..4, 0..4)
        .prop_map(|m| VectorClock::from_entries(m.into_iter().map(|(k, v)| (dev(k), v))))
}

fn le(a: &VectorClock, b: &VectorClock) -> bool {
    matches!(a.compare(b), ClockOrdering::Before | ClockOrdering::Equal)
}

#[test]
fn increment_makes_a_clock_later() {
    let mut a = VectorClock::new();
    let before = a.clone();
    let dot = a.increment(&dev("a"));
    assert_eq!(dot.counter, 1);
    assert_eq!(before.compare(&a), ClockOrdering::Before);
    assert_eq!(a.compare(&before), ClockOrdering::After);
    assert!(a.contains(&dot) && !before.contains(&dot));
}

#[test]
fn clocks_that_saw_different_events_are_concurrent() {
    let mut a = VectorClock::new();
    let mut b = VectorClock::new();
    a.increment(&dev("a"));
    b.increment(&dev("b"));
    assert_eq!(a.compare(&b), ClockOrdering::Concurrent);
    assert_eq!(a.partial_cmp(&b), None);
    let m = a.merged(&b);
    assert_eq!(a.compare(&m), ClockOrdering::Before);
    assert_eq!(m.get(&dev("a")), 1);
    assert_eq!(m.get(&dev("b")), 1);
}

#[test]
fn zero_entries_do_not_change_equality_or_encoding() {
    let a: VectorClock = serde_json::from_str(r#"{"a":1,"b":0}"#).expect("json");
    let b: VectorClock = serde_json::from_str(r#"{"a":1}"#).expect("json");
    assert_eq!(a, b);
    assert_eq!(a.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn compare_is_antisymmetric(a in clock(), b in clock()) {
        let expected = match a.compare(&b) {
            ClockOrdering::Before => ClockOrdering::After,
            ClockOrdering::After => ClockOrdering::Before,
            o => o,
        };
        prop_assert_eq!(b.compare(&a), expected);
        prop_assert_eq!(a.compare(&b) == ClockOrdering::Equal, a == b);
    }

    #[test]
    fn compare_is_transitive(a in clock(), b in clock(), c in clock()) {
        if le(&a, &b) && le(&b, &c) {
            prop_assert!(le(&a, &c));
        }
        if a.compare(&b) == ClockOrdering::Before && le(&b, &c) {
            prop_assert_eq!(a.compare(&c), ClockOrdering::Before);
        }
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent(a in clock(), b in clock(), c in clock()) {
        prop_assert_eq!(a.merged(&b), b.merged(&a));
        prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
        prop_assert_eq!(a.merged(&a), a.clone());
    }

    #[test]
    fn merge_is_the_least_upper_bound(a in clock(), b in clock(), u in clock()) {
        let m = a.merged(&b);
        prop_assert!(le(&a, &m) && le(&b, &m));
        // Any other upper bound is above the merge.
        if le(&a, &u) && le(&b, &u) {
            prop_assert!(le(&m, &u));
        }
    }

    #[test]
    fn partial_ord_agrees_with_compare(a in clock(), b in clock()) {
        let po = a.partial_cmp(&b);
        let expected = match a.compare(&b) {
            ClockOrdering::Before => Some(std::cmp::Ordering::Less),
            ClockOrdering::After => Some(std::cmp::Ordering::Greater),
            ClockOrdering::Equal => Some(std::cmp::Ordering::Equal),
            ClockOrdering::Concurrent => None,
        };
        prop_assert_eq!(po, expected);
    }
}
