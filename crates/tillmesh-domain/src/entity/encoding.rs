//! JSON form of [`EntityState`], as stored and sent to peers.
//!
//! Every dot's device is one of the context's devices (a state with a dot outside its
//! context is invalid), so a dot is written as the device's index among the context's
//! entries (which are in device order) and the counter. An entity has a dot per field,
//! so naming each writer once per state roughly halves a POS product's record (985 →
//! 548 bytes with a 6-character writer id; real writer ids are ~50 characters, which
//! the old form repeated per field). The checksums never depend on this form: they
//! hash [`crate::canonical`] bytes.
//!
//! ```json
//! {"context":{"till-a.9f…":2},
//!  "alive":[[0,2,1732550000000]],
//!  "fields":{"name":{"register":[[0,2,1732550000000,"Tea"]]},
//!            "stock":{"counter":{"pos":{"till-a.9f…":5},"neg":{},"floor_pos":{},"floor_neg":{}}}}}
//! ```

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{EntityState, FieldState, MvRegister, PnCounter, RegisterEntry};
use crate::clock::VectorClock;
use crate::dotmap::DotMap;
use crate::ids::{DeviceId, Dot};
use crate::time::Timestamp;

/// Index of each context device, for writing dots.
struct DeviceIndex<'a>(Vec<&'a DeviceId>);

impl<'a> DeviceIndex<'a> {
    fn new(context: &'a VectorClock) -> Self {
        Self(context.iter().map(|(d, _)| d).collect())
    }

    fn of<E: serde::ser::Error>(&self, dot: &Dot) -> Result<usize, E> {
        self.0
            .binary_search(&&dot.device)
            .map_err(|_| E::custom(format!("dot {}:{} outside the context", dot.device, dot.counter)))
    }
}

struct Alive<'a>(&'a DotMap<Timestamp>, &'a DeviceIndex<'a>);

impl Serialize for Alive<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (dot, at) in self.0 {
            seq.serialize_element(&(self.1.of::<S::Error>(dot)?, dot.counter, at))?;
        }
        seq.end()
    }
}

struct Register<'a>(&'a MvRegister, &'a DeviceIndex<'a>);

impl Serialize for Register<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.entries.len()))?;
        for (dot, e) in &self.0.entries {
            seq.serialize_element(&(self.1.of::<S::Error>(dot)?, dot.counter, e.at, &e.value))?;
        }
        seq.end()
    }
}

struct Field<'a>(&'a FieldState, &'a DeviceIndex<'a>);

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let has_register = !self.0.register.entries.is_empty();
        let has_counter = self.0.counter != PnCounter::default();
        let mut st = s.serialize_struct("FieldState", usize::from(has_register) + usize::from(has_counter))?;
        if has_register {
            st.serialize_field("register", &Register(&self.0.register, self.1))?;
        }
        if has_counter {
            st.serialize_field("counter", &self.0.counter)?;
        }
        st.end()
    }
}

struct Fields<'a>(&'a BTreeMap<String, FieldState>, &'a DeviceIndex<'a>);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, f) in self.0 {
            map.serialize_entry(name, &Field(f, self.1))?;
        }
        map.end()
    }
}

impl Serialize for EntityState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let index = DeviceIndex::new(&self.context);
        let mut st = s.serialize_struct("EntityState", 3)?;
        st.serialize_field("context", &self.context)?;
        st.serialize_field("alive", &Alive(&self.alive, &index))?;
        st.serialize_field("fields", &Fields(&self.fields, &index))?;
        st.end()
    }
}

/// Which device a decoded dot names: an index into the context (this form) or the
/// device itself (the form written before protocol 2, still read from old data dirs).
enum DotDevice {
    Index(usize),
    Named(DeviceId),
}

#[derive(Deserialize)]
struct NamedDot {
    device: DeviceId,
    counter: u64,
}

#[derive(Deserialize)]
struct NamedAlive {
    dot: NamedDot,
    at: Timestamp,
}

#[derive(Deserialize)]
struct NamedEntry {
    dot: NamedDot,
    value: Value,
    at: Timestamp,
}

#[derive(Deserialize)]
struct NamedRegister {
    entries: Vec<RawEntry>,
}

/// `[index, counter, at]` or `{"dot": {...}, "at": …}`.
struct RawAlive(DotDevice, u64, Timestamp);

/// `[index, counter, at, value]` or `{"dot": {...}, "value": …, "at": …}`.
struct RawEntry(DotDevice, u64, Timestamp, Value);

/// A register: a list of entries, or `{"entries": [...]}`.
#[derive(Default)]
struct RawRegister(Vec<RawEntry>);

/// Implements `Deserialize` for a type read either from a JSON array (this form) or
/// from a JSON object (the older form), dispatching on the token without buffering.
macro_rules! array_or_object {
    ($ty:ident, $what:literal, |$seq:ident| $from_seq:expr, |$map:ident| $from_map:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, $seq: A) -> Result<$ty, A::Error> {
                        $from_seq
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, $map: A) -> Result<$ty, A::Error> {
                        $from_map
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};

array_or_object!(
    RawAlive,
    "an alive dot",
    |seq| {
        let (i, c, at) = <(usize, u64, Timestamp)>::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(RawAlive(DotDevice::Index(i), c, at))
    },
    |map| {
        let n = NamedAlive::deserialize(MapAccessDeserializer::new(map))?;
        Ok(RawAlive(DotDevice::Named(n.dot.device), n.dot.counter, n.at))
    }
);

array_or_object!(
    RawEntry,
    "a register entry",
    |seq| {
        let (i, c, at, v) = <(usize, u64, Timestamp, Value)>::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(RawEntry(DotDevice::Index(i), c, at, v))
    },
    |map| {
        let n = NamedEntry::deserialize(MapAccessDeserializer::new(map))?;
        Ok(RawEntry(DotDevice::Named(n.dot.device), n.dot.counter, n.at, n.value))
    }
);

array_or_object!(
    RawRegister,
    "a register",
    |seq| Ok(RawRegister(Vec::<RawEntry>::deserialize(SeqAccessDeserializer::new(seq))?)),
    |map| Ok(RawRegister(NamedRegister::deserialize(MapAccessDeserializer::new(map))?.entries))
);

#[derive(Deserialize)]
struct RawField {
    #[serde(default)]
    register: RawRegister,
    #[serde(default)]
    counter: PnCounter,
}

#[derive(Deserialize)]
struct RawState {
    context: VectorClock,
    #[serde(default)]
    alive: Vec<RawAlive>,
    #[serde(default)]
    fields: BTreeMap<String, RawField>,
}

impl<'de> Deserialize<'de> for EntityState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawState::deserialize(d)?;
        let devices: Vec<&DeviceId> = raw.context.iter().map(|(d, _)| d).collect();
        let dot = |device: DotDevice, counter: u64| -> Result<Dot, D::Error> {
            let device = match device {
                DotDevice::Index(i) => (*devices
                    .get(i)
                    .ok_or_else(|| D::Error::custom(format!("dot device index {i} is outside the context")))?)
                .clone(),
                DotDevice::Named(d) => d,
            };
            Ok(Dot { device, counter })
        };
        let alive: DotMap<Timestamp> = raw
            .alive
            .into_iter()
            .map(|RawAlive(d, counter, at)| Ok((dot(d, counter)?, at)))
            .collect::<Result<_, D::Error>>()?;
        let mut fields = BTreeMap::new();
        for (name, f) in raw.fields {
            let entries = f
                .register
                .0
                .into_iter()
                .map(|RawEntry(d, counter, at, value)| Ok((dot(d, counter)?, RegisterEntry { value, at })))
                .collect::<Result<_, D::Error>>()?;
            fields.insert(name, FieldState { register: MvRegister { entries }, counter: f.counter });
        }
        Ok(EntityState { context: raw.context, alive, fields })
    }
}
