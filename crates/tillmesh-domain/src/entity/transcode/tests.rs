//! The transcoder gives exactly the canonical bytes of the state the JSON decodes to,
//! or gives up; it never accepts a state the usual decoding or validation refuses.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{transcode, transcode_record, StateSummary};
use crate::canonical::state_bytes;
use crate::entity::tests::{apply, counter, dev, put, run, steps};
use crate::entity::EntityState;
use crate::ids::EntityKey;

fn key() -> EntityKey {
    EntityKey::new("product", "p1").expect("valid key")
}

/// What the usual path makes of `json` (decode, then validate).
fn usual(json: &str) -> Option<EntityState> {
    let s: EntityState = serde_json::from_str(json).ok()?;
    s.validate().ok()?;
    Some(s)
}

fn summary_of(s: &EntityState, origin: &str) -> StateSummary {
    StateSummary {
        deleted: s.is_deleted(),
        may_conflict: s.fields.values().any(|f| f.register.entries.len() > 1),
        origin_in_context: s.context.get(&dev(origin)) > 0,
    }
}

/// Asserts the transcoder agrees with the usual path on `json`.
fn agrees(json: &str) -> bool {
    let fast = transcode(json, "a");
    match (&fast, usual(json)) {
        (Some((bytes, summary)), Some(state)) => {
            assert_eq!(bytes, &state_bytes(&state), "bytes of {json}");
            assert_eq!(*summary, summary_of(&state, "a"), "summary of {json}");
            true
        }
        (Some(_), None) => panic!("accepted what the usual path refuses: {json}"),
        (None, _) => false,
    }
}

#[test]
fn values_of_every_kind_encode_as_the_usual_path_does() {
    let mut s = EntityState::default();
    let values = [
        ("a_int", json!(42)),
        ("b_neg", json!(-7)),
        ("c_big", json!(u64::MAX)),
        ("d_float", json!(0.1)),
        ("e_whole_float", json!(5.0)),
        ("f_text", json!("Caf\u{e9} \"quoted\" \\ tab\t line\n end")),
        ("g_true", json!(true)),
        ("h_false", json!(false)),
        ("i_array", json!([1, "two", [3.5, null], [], {"z": 1, "a": [null]}])),
        ("j_object", json!({"zeta": 1, "alpha": {"y": 2, "b": [true]}})),
        ("k_empty", json!("")),
    ];
    apply(&mut s, &put(&values), "a", 1_732_550_000_000);
    apply(&mut s, &counter("stock", 5), "b", 2);
    apply(&mut s, &counter("stock", -2), "a", 3);
    let text = serde_json::to_string(&s).expect("json");
    assert!(agrees(&text), "gave up on its own output: {text}");
}

#[test]
fn deleted_and_conflicting_states_are_summarised() {
    let mut a = EntityState::default();
    apply(&mut a, &put(&[("name", json!("Tea"))]), "a", 1);
    let mut b = a.clone();
    apply(&mut a, &put(&[("name", json!("Green tea"))]), "a", 2);
    apply(&mut b, &put(&[("name", json!("Black tea"))]), "b", 3);
    let merged = a.joined(&b);
    assert!(!merged.conflicts(&key()).is_empty());
    let text = serde_json::to_string(&merged).expect("json");
    assert!(agrees(&text));
    assert!(transcode(&text, "a").expect("accepted").1.may_conflict);

    apply(&mut a, &crate::entity::EntityOp::Delete, "a", 4);
    let text = serde_json::to_string(&a).expect("json");
    assert!(agrees(&text));
    assert!(transcode(&text, "a").expect("accepted").1.deleted);
    assert!(!transcode(&text, "nobody").expect("accepted").1.origin_in_context);
}

#[test]
fn anything_but_the_exact_written_form_makes_it_give_up() {
    let ok = r#"{"context":{"a":2,"b":1},"alive":[[0,2,5]],"fields":{"n":{"register":[[0,2,5,"x"]]}}}"#;
    assert!(agrees(ok));
    let variants: [(&str, &str); 14] = [
        ("unsorted clock", r#"{"context":{"b":1,"a":2},"alive":[[1,2,5]],"fields":{"n":{"register":[[1,2,5,"x"]]}}}"#),
        ("zero entry", r#"{"context":{"a":2,"b":0},"alive":[[0,2,5]],"fields":{}}"#),
        ("duplicate clock entry", r#"{"context":{"a":2,"a":3},"alive":[[0,2,5]],"fields":{}}"#),
        ("dot outside the clock", r#"{"context":{"a":2},"alive":[[0,3,5]],"fields":{}}"#),
        ("index outside the clock", r#"{"context":{"a":2},"alive":[[1,1,5]],"fields":{}}"#),
        ("dot zero", r#"{"context":{"a":2},"alive":[[0,0,5]],"fields":{}}"#),
        ("unsorted dots", r#"{"context":{"a":2},"alive":[[0,2,5],[0,1,5]],"fields":{}}"#),
        ("unsorted fields", r#"{"context":{"a":2},"fields":{"z":{},"b":{}}}"#),
        ("null value", r#"{"context":{"a":2},"fields":{"n":{"register":[[0,2,5,null]]}}}"#),
        ("bad field name", r#"{"context":{"a":2},"fields":{"n m":{}}}"#),
        ("unknown key", r#"{"context":{"a":2},"fields":{},"extra":1}"#),
        ("fields before alive", r#"{"context":{"a":2},"fields":{},"alive":[]}"#),
        ("old named dots", r#"{"context":{"a":2},"alive":[{"dot":{"device":"a","counter":2},"at":5}],"fields":{}}"#),
        ("entry too long", r#"{"context":{"a":2},"fields":{"n":{"register":[[0,2,5,"x",1]]}}}"#),
    ];
    for (why, text) in variants {
        assert!(transcode(text, "a").is_none(), "{why}: accepted {text}");
        // Whatever the usual path makes of it is still what counts.
        let _ = usual(text);
    }
    let deep = format!("[{}1{}]", "[".repeat(40), "]".repeat(40));
    let text = format!(r#"{{"context":{{"a":2}},"fields":{{"n":{{"register":[[0,2,5,{deep}]]}}}}}}"#);
    assert!(transcode(&text, "a").is_none(), "too deep");
    assert!(usual(&text).is_none(), "the usual path refuses it too");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every state a history produces (written states, merges, deletes, counters,
    /// conflicts) is accepted and encoded byte for byte as `state_bytes` does.
    #[test]
    fn every_state_is_transcoded_to_its_canonical_bytes(steps in steps()) {
        let (emitted, replicas) = run(&steps);
        for s in emitted.iter().chain(replicas.iter()) {
            let text = serde_json::to_string(s).expect("json");
            prop_assert!(agrees(&text), "gave up on {}", text);
        }
    }

    /// Mangled text: the transcoder either agrees with the usual path or gives up.
    #[test]
    fn mangled_text_is_never_accepted_wrongly(steps in steps(), cut in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let (emitted, _) = run(&steps);
        prop_assume!(!emitted.is_empty());
        let text = serde_json::to_string(cut.get(&emitted)).expect("json");
        let mut bytes = text.into_bytes();
        let i = cut.index(bytes.len());
        bytes[i] = byte;
        if let Ok(mangled) = String::from_utf8(bytes) {
            agrees(&mangled);
        }
    }
}

#[test]
fn values_equal_as_json_but_unsorted_objects_still_agree() {
    // Objects inside values are sorted by the encoder, whatever order they came in.
    let text = r#"{"context":{"a":1},"alive":[[0,1,5]],"fields":{"n":{"register":[[0,1,5,{"b":1,"a":2}]]}}}"#;
    assert!(agrees(text));
    let v: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).expect("json");
    assert_eq!(v, json!({"a": 2, "b": 1}));
}

/// A record of `state` by device "a", as this crate writes it.
fn record_text(state: &EntityState, seq: u64) -> String {
    let mut state = state.clone();
    state.context.observe(&dev("a"), seq);
    crate::change::EncodedChange::new(crate::change::ChangeRecord::new(
        dev("a"),
        seq,
        key(),
        crate::time::Timestamp(1_700_000_000_000 + seq as i64),
        state,
    ))
    .into_json()
}

/// Asserts that reading the whole record in one pass agrees with reading its fields
/// and then transcoding its state (or gives up); returns whether it read it.
fn record_agrees(text: &str) -> bool {
    let Some((fields, bytes, summary)) = transcode_record(text) else { return false };
    let usual: crate::change::ChangeRecord =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("accepted a record the usual path refuses ({e}): {text}"));
    assert_eq!(
        (fields.origin, fields.seq, fields.key, fields.at, fields.checksum),
        (usual.origin.clone(), usual.seq, usual.key.clone(), usual.at, usual.checksum),
        "fields of {text}"
    );
    usual.state.validate().unwrap_or_else(|e| panic!("accepted an invalid state ({e}): {text}"));
    assert_eq!(bytes, state_bytes(&usual.state), "bytes of {text}");
    assert_eq!(summary, summary_of(&usual.state, usual.origin.as_str()), "summary of {text}");
    true
}

#[test]
fn records_in_another_form_are_left_to_the_usual_path() {
    let mut s = EntityState::default();
    apply(&mut s, &put(&[("name", json!("x"))]), "a", 1);
    apply(&mut s, &counter("stock", -2), "b", 2);
    let text = record_text(&s, 3);
    assert!(record_agrees(&text), "the written form is read in one pass");
    let v: Value = serde_json::from_str(&text).expect("json");
    let reordered = {
        let o = v.as_object().expect("object");
        let mut keys: Vec<&String> = o.keys().collect();
        keys.reverse();
        let body: Vec<String> = keys.iter().map(|k| format!("{}:{}", json!(k), o[k.as_str()])).collect();
        format!("{{{}}}", body.join(","))
    };
    let mut extra = v.clone();
    extra["note"] = json!("hi");
    let mut missing = v.clone();
    missing.as_object_mut().expect("object").remove("checksum");
    for other in
        [reordered, serde_json::to_string(&extra).expect("json"), serde_json::to_string(&missing).expect("json")]
    {
        assert!(transcode_record(&other).is_none(), "gave up on {other}");
    }
    // The usual path still reads what this one leaves, and both make the same record.
    let raw = |t: &str| serde_json::value::RawValue::from_string(t.to_string()).expect("json");
    let fast = crate::change::EncodedChange::from_json(raw(&text)).expect("decodes");
    let slow =
        crate::change::EncodedChange::from_json(raw(&serde_json::to_string(&extra).expect("json"))).expect("decodes");
    assert_eq!(fast, slow);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every record of every state a history produces is read in one pass, with the
    /// same fields, bytes and summary as the usual path.
    #[test]
    fn every_written_record_is_read_in_one_pass(steps in steps()) {
        let (emitted, replicas) = run(&steps);
        for (i, s) in emitted.iter().chain(replicas.iter()).enumerate() {
            let text = record_text(s, i as u64 + 1);
            prop_assert!(record_agrees(&text), "gave up on {}", text);
        }
    }

    /// Mangled records: read alike or left to the usual path, never accepted wrongly.
    #[test]
    fn mangled_records_are_never_accepted_wrongly(steps in steps(), cut in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let (emitted, _) = run(&steps);
        prop_assume!(!emitted.is_empty());
        let mut bytes = record_text(cut.get(&emitted), 1).into_bytes();
        let i = cut.index(bytes.len());
        bytes[i] = byte;
        if let Ok(mangled) = String::from_utf8(bytes) {
            record_agrees(&mangled);
        }
    }
}
