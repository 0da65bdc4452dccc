//! Canonical bytes straight from the JSON form of a state, without building the state.
//!
//! Why: a terminal receiving a change for an entity it does not hold yet needs only
//! the state's canonical bytes (to check the record's checksum and to hash the
//! entity), whether it is deleted and whether it may hold a conflict. Building the
//! whole [`EntityState`](super::EntityState) (a map node, a vector and a string per
//! field) and freeing it again was most of the cost of receiving a change.
//!
//! The transcoder accepts only JSON exactly as [`super::encoding`] writes it: keys
//! and dots in their canonical order without duplicates, no zero clock entries, known
//! keys only, unescaped device ids. It checks what
//! [`EntityState::validate`](super::EntityState::validate) checks. Anything else
//! makes it give up (`None`), and the caller decodes the state the usual way, which
//! then decides. So it never accepts what the usual path refuses, and its bytes are
//! those of the state the usual path would build.

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::Value;

use super::{depth, MAX_VALUE_DEPTH};
use crate::canonical::Encoder;
use crate::checksum::Checksum;
use crate::ids::{validate_name, DeviceId, EntityKey};
use crate::time::Timestamp;

/// What the caller learns about a state besides its canonical bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSummary {
    /// [`EntityState::is_deleted`](super::EntityState::is_deleted).
    pub deleted: bool,
    /// Some register holds more than one write, so
    /// [`EntityState::conflicts`](super::EntityState::conflicts) may be non-empty.
    pub may_conflict: bool,
    /// The clock has an entry for the given origin.
    pub origin_in_context: bool,
}

/// Canonical bytes ([`crate::canonical::state_bytes`]) and summary of the state
/// whose JSON is `json`; `None` when the text is not in the exact form this crate
/// writes or breaks an invariant (decode it the usual way then).
pub fn transcode(json: &str, origin: &str) -> Option<(Vec<u8>, StateSummary)> {
    let mut cx = Cx { enc: Encoder::with_capacity(json.len()), devices: Vec::new(), alive: 0, may_conflict: false };
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(StateV(&mut cx)).ok()?;
    de.end().ok()?;
    let summary = StateSummary {
        deleted: !cx.devices.is_empty() && cx.alive == 0,
        may_conflict: cx.may_conflict,
        origin_in_context: cx.devices.iter().any(|(d, _)| *d == origin),
    };
    Some((cx.enc.finish(), summary))
}

/// A change record's fields besides its state, as [`transcode_record`] reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordFields {
    /// Device where the change was made.
    pub origin: DeviceId,
    /// Per-origin sequence number.
    pub seq: u64,
    /// The entity changed.
    pub key: EntityKey,
    /// Origin's wall-clock time of the change.
    pub at: Timestamp,
    /// The record's checksum as written.
    pub checksum: Checksum,
}

/// [`transcode`] of the state inside a whole change record's JSON, read in the same
/// pass as the record's other fields (a receiver otherwise scans the state's text
/// once to delimit it and once more to transcode it). `None` unless the record is in
/// the exact form this crate writes — its fields in declaration order, nothing else —
/// and its state transcodes; the caller then reads it the usual way.
pub fn transcode_record(json: &str) -> Option<(RecordFields, Vec<u8>, StateSummary)> {
    let mut cx = Cx { enc: Encoder::with_capacity(json.len()), devices: Vec::new(), alive: 0, may_conflict: false };
    let mut de = serde_json::Deserializer::from_str(json);
    let fields = de.deserialize_map(RecordV(&mut cx)).ok()?;
    de.end().ok()?;
    let summary = StateSummary {
        deleted: !cx.devices.is_empty() && cx.alive == 0,
        may_conflict: cx.may_conflict,
        origin_in_context: cx.devices.iter().any(|(d, _)| *d == fields.origin.as_str()),
    };
    Some((fields, cx.enc.finish(), summary))
}

struct Cx<'de> {
    enc: Encoder,
    /// The clock's entries, in order: dots name devices by index into it.
    devices: Vec<(&'de str, u64)>,
    alive: u64,
    may_conflict: bool,
}

impl<'de> Cx<'de> {
    /// The device of dot `(index, counter)`, if the dot is inside the clock.
    fn dot<E: serde::de::Error>(&self, index: usize, counter: u64) -> Result<&'de str, E> {
        match self.devices.get(index) {
            Some((d, n)) if counter >= 1 && counter <= *n => Ok(d),
            _ => Err(E::custom("dot outside the clock")),
        }
    }
}

fn give_up<E: serde::de::Error>(why: &str) -> E {
    E::custom(why)
}

/// Checks `(a, b)` comes strictly after the previous pair and remembers it.
fn ascending<T: PartialOrd + Copy, E: serde::de::Error>(prev: &mut Option<T>, next: T) -> Result<(), E> {
    if prev.is_some_and(|p| p >= next) {
        return Err(give_up("not in canonical order"));
    }
    *prev = Some(next);
    Ok(())
}

macro_rules! expecting {
    ($what:literal) => {
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str($what)
        }
    };
}

/// `{"context": …, "alive": …, "fields": …}`, the last two optional, in this order.
struct StateV<'c, 'de>(&'c mut Cx<'de>);

impl<'de> Visitor<'de> for StateV<'_, 'de> {
    type Value = ();
    expecting!("an entity state");

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let cx = self.0;
        // 0: nothing yet, 1: clock written, 2: alive written, 3: fields written.
        let mut stage = 0;
        while let Some(k) = m.next_key::<&'de str>()? {
            match (k, stage) {
                ("context", 0) => {
                    let Cx { enc, devices, .. } = &mut *cx;
                    m.next_value_seed(Seed(DeviceCountsV { enc, clock: Some(devices) }))?;
                    stage = 1;
                }
                ("alive", 1) => {
                    m.next_value_seed(Seed(AliveV(&mut *cx)))?;
                    stage = 2;
                }
                ("fields", 1 | 2) => {
                    if stage == 1 {
                        cx.enc.u64(0);
                    }
                    m.next_value_seed(Seed(FieldsV(&mut *cx)))?;
                    stage = 3;
                }
                _ => return Err(give_up("unexpected key")),
            }
        }
        match stage {
            0 => return Err(give_up("no context")),
            1 => {
                cx.enc.u64(0).u64(0);
            }
            2 => {
                cx.enc.u64(0);
            }
            _ => {}
        }
        Ok(())
    }
}

/// `{"origin", "seq", "key", "at", "state", "checksum"}`, in this order.
struct RecordV<'c, 'de>(&'c mut Cx<'de>);

impl<'de> Visitor<'de> for RecordV<'_, 'de> {
    type Value = RecordFields;
    expecting!("a change record");

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RecordFields, A::Error> {
        fn next<'de, A: MapAccess<'de>>(m: &mut A, name: &str) -> Result<(), A::Error> {
            match m.next_key::<&'de str>()? {
                Some(k) if k == name => Ok(()),
                _ => Err(give_up("not a record in written form")),
            }
        }
        next(&mut m, "origin")?;
        let origin = m.next_value()?;
        next(&mut m, "seq")?;
        let seq = m.next_value()?;
        next(&mut m, "key")?;
        let key = m.next_value()?;
        next(&mut m, "at")?;
        let at = m.next_value()?;
        next(&mut m, "state")?;
        m.next_value_seed(Seed(StateV(self.0)))?;
        next(&mut m, "checksum")?;
        let checksum = m.next_value()?;
        if m.next_key::<&'de str>()?.is_some() {
            return Err(give_up("unexpected key"));
        }
        Ok(RecordFields { origin, seq, key, at, checksum })
    }
}

/// Runs a visitor as a seed: maps through `deserialize_map`, sequences through
/// `deserialize_seq`, values through `deserialize_any`.
struct Seed<V>(V);

trait Shape {
    fn drive<'de, D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error>
    where
        Self: Visitor<'de, Value = ()>;
}

impl<'de, V: Visitor<'de, Value = ()> + Shape> DeserializeSeed<'de> for Seed<V> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.drive(d)
    }
}

macro_rules! shape {
    ($ty:ident, $how:ident) => {
        impl Shape for $ty<'_, '_> {
            fn drive<'de, D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error>
            where
                Self: Visitor<'de, Value = ()>,
            {
                d.$how(self)
            }
        }
    };
}

/// `{"device": n, …}` in device order: the clock (`clock` set: counters ≥ 1, and the
/// devices recorded for dots to name) or one of a counter's maps (zeros are kept).
struct DeviceCountsV<'c, 'de> {
    enc: &'c mut Encoder,
    clock: Option<&'c mut Vec<(&'de str, u64)>>,
}
shape!(DeviceCountsV, deserialize_map);
shape!(StateV, deserialize_map);

impl<'de> Visitor<'de> for DeviceCountsV<'_, 'de> {
    type Value = ();
    expecting!("per-device counts");

    fn visit_map<A: MapAccess<'de>>(mut self, mut m: A) -> Result<(), A::Error> {
        let count = self.enc.count_placeholder();
        let mut prev = None;
        let mut n = 0u64;
        while let Some((d, v)) = m.next_entry::<&'de str, u64>()? {
            validate_name("device id", d).map_err(A::Error::custom)?;
            ascending(&mut prev, d)?;
            if let Some(devices) = self.clock.as_deref_mut() {
                if v == 0 {
                    return Err(give_up("zero clock entry"));
                }
                devices.push((d, v));
            }
            self.enc.str(d).u64(v);
            n += 1;
        }
        self.enc.patch_count(count, n);
        Ok(())
    }
}

/// Alive dots: `[[index, counter, at], …]` in dot order.
struct AliveV<'c, 'de>(&'c mut Cx<'de>);
shape!(AliveV, deserialize_seq);

impl<'de> Visitor<'de> for AliveV<'_, 'de> {
    type Value = ();
    expecting!("alive dots");

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        let cx = self.0;
        let count = cx.enc.count_placeholder();
        let mut prev = None;
        while let Some((i, c, at)) = s.next_element::<(usize, u64, i64)>()? {
            ascending(&mut prev, (i, c))?;
            let d = cx.dot::<A::Error>(i, c)?;
            cx.enc.str(d).u64(c).i64(at);
            cx.alive += 1;
        }
        cx.enc.patch_count(count, cx.alive);
        Ok(())
    }
}

/// Fields by name, in name order.
struct FieldsV<'c, 'de>(&'c mut Cx<'de>);
shape!(FieldsV, deserialize_map);

impl<'de> Visitor<'de> for FieldsV<'_, 'de> {
    type Value = ();
    expecting!("fields");

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let cx = self.0;
        let count = cx.enc.count_placeholder();
        let mut prev = None;
        let mut n = 0u64;
        while let Some(name) = m.next_key::<&'de str>()? {
            validate_name("field name", name).map_err(A::Error::custom)?;
            ascending(&mut prev, name)?;
            cx.enc.str(name);
            m.next_value_seed(Seed(FieldV(&mut *cx)))?;
            n += 1;
        }
        cx.enc.patch_count(count, n);
        Ok(())
    }
}

/// `{"register": […], "counter": {…}}`, either optional, in this order.
struct FieldV<'c, 'de>(&'c mut Cx<'de>);
shape!(FieldV, deserialize_map);

impl<'de> Visitor<'de> for FieldV<'_, 'de> {
    type Value = ();
    expecting!("a field");

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let cx = self.0;
        // 0: nothing yet, 1: register written, 2: counter written.
        let mut stage = 0;
        while let Some(k) = m.next_key::<&'de str>()? {
            match (k, stage) {
                ("register", 0) => {
                    m.next_value_seed(Seed(RegisterV(&mut *cx)))?;
                    stage = 1;
                }
                ("counter", 0 | 1) => {
                    if stage == 0 {
                        cx.enc.u64(0);
                    }
                    m.next_value_seed(Seed(CounterV(&mut *cx)))?;
                    stage = 2;
                }
                _ => return Err(give_up("unexpected key")),
            }
        }
        if stage == 0 {
            cx.enc.u64(0);
        }
        if stage < 2 {
            cx.enc.u64(0).u64(0).u64(0).u64(0);
        }
        Ok(())
    }
}

/// Register entries: `[[index, counter, at, value], …]` in dot order.
struct RegisterV<'c, 'de>(&'c mut Cx<'de>);
shape!(RegisterV, deserialize_seq);

impl<'de> Visitor<'de> for RegisterV<'_, 'de> {
    type Value = ();
    expecting!("a register");

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        let cx = self.0;
        let count = cx.enc.count_placeholder();
        let mut prev = None;
        let mut n = 0u64;
        while s.next_element_seed(Seed(EntryV { cx: &mut *cx, prev: &mut prev }))?.is_some() {
            n += 1;
        }
        cx.may_conflict |= n > 1;
        cx.enc.patch_count(count, n);
        Ok(())
    }
}

/// One register entry.
struct EntryV<'c, 'de> {
    cx: &'c mut Cx<'de>,
    prev: &'c mut Option<(usize, u64)>,
}
shape!(EntryV, deserialize_seq);

impl<'de> Visitor<'de> for EntryV<'_, 'de> {
    type Value = ();
    expecting!("a register entry");

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        let cx = self.cx;
        let missing = || give_up::<A::Error>("short register entry");
        let i = s.next_element::<usize>()?.ok_or_else(missing)?;
        let c = s.next_element::<u64>()?.ok_or_else(missing)?;
        let at = s.next_element::<i64>()?.ok_or_else(missing)?;
        ascending(self.prev, (i, c))?;
        let d = cx.dot::<A::Error>(i, c)?;
        cx.enc.str(d).u64(c).i64(at);
        s.next_element_seed(ValueSeed { enc: &mut cx.enc, level: 0 })?.ok_or_else(missing)?;
        if s.next_element::<IgnoredAny>()?.is_some() {
            return Err(give_up("long register entry"));
        }
        Ok(())
    }
}

/// A counter's four maps, all present, in their declared order.
struct CounterV<'c, 'de>(&'c mut Cx<'de>);
shape!(CounterV, deserialize_map);

impl<'de> Visitor<'de> for CounterV<'_, 'de> {
    type Value = ();
    expecting!("a counter");

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let cx = self.0;
        for part in ["pos", "neg", "floor_pos", "floor_neg"] {
            if m.next_key::<&'de str>()? != Some(part) {
                return Err(give_up("unexpected counter layout"));
            }
            m.next_value_seed(Seed(DeviceCountsV { enc: &mut cx.enc, clock: None }))?;
        }
        if m.next_key::<IgnoredAny>()?.is_some() {
            return Err(give_up("unexpected key"));
        }
        Ok(())
    }
}

/// A field's value, encoded as [`Encoder::json`] encodes the `Value` it would
/// decode to. `level` counts the arrays around it.
struct ValueSeed<'c> {
    enc: &'c mut Encoder,
    level: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();
    expecting!("a JSON value");

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        self.enc.tag(if b { b't' } else { b'f' });
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<(), E> {
        self.enc.tag(b'i').i64(i);
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<(), E> {
        match i64::try_from(u) {
            Ok(i) => self.enc.tag(b'i').i64(i),
            Err(_) => self.enc.tag(b'u').u64(u),
        };
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<(), E> {
        if !f.is_finite() {
            return Err(give_up("non-finite number"));
        }
        self.enc.tag(b'd').u64(f.to_bits());
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.enc.tag(b's').str(s);
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        // A field never holds null; inside arrays and objects it is a value like any.
        if self.level == 0 {
            return Err(give_up("null field value"));
        }
        self.enc.tag(b'n');
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        if self.level + 1 > MAX_VALUE_DEPTH {
            return Err(give_up("nested too deep"));
        }
        let count = self.enc.tag(b'a').count_placeholder();
        let mut n = 0u64;
        while s.next_element_seed(ValueSeed { enc: &mut *self.enc, level: self.level + 1 })?.is_some() {
            n += 1;
        }
        self.enc.patch_count(count, n);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<(), A::Error> {
        // Objects need their keys sorted: rare enough in POS data to build the value.
        let v: Value = serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
        if self.level + depth(&v) > MAX_VALUE_DEPTH {
            return Err(give_up("nested too deep"));
        }
        self.enc.json(&v);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
