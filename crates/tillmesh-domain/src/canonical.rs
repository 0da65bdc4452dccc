//! Canonical byte encoding of domain values, the input of every checksum and digest.
//!
//! Why hand-written: JSON text depends on map order, whitespace and float formatting,
//! so it cannot be hashed. Here every item is tagged and length-prefixed, maps are
//! written in sorted key order, and numbers are written as fixed-width integers or as
//! the IEEE-754 bits of the float, so equal values always give equal bytes.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::clock::VectorClock;
use crate::entity::{EntityState, FieldState};
use crate::ids::{DeviceId, Dot, EntityKey};

/// Accumulates canonical bytes.
#[derive(Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty encoder with room for `n` bytes.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self { buf: Vec::with_capacity(n) }
    }

    /// The bytes written so far.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far, kept.
    pub(crate) fn written(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets the bytes written so far (keeping the allocation).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    /// A fixed-width unsigned integer.
    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.buf.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// A fixed-width signed integer.
    pub fn i64(&mut self, n: i64) -> &mut Self {
        self.buf.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// Reserves a count written later with [`Encoder::patch_count`], for callers that
    /// learn how many items follow only after writing them.
    pub(crate) fn count_placeholder(&mut self) -> usize {
        let at = self.buf.len();
        self.u64(0);
        at
    }

    /// Writes `n` over the placeholder reserved at `at`.
    pub(crate) fn patch_count(&mut self, at: usize, n: u64) {
        if let Some(slot) = self.buf.get_mut(at..at + 8) {
            slot.copy_from_slice(&n.to_be_bytes());
        }
    }

    /// A one-byte tag.
    pub fn tag(&mut self, t: u8) -> &mut Self {
        self.buf.push(t);
        self
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
        self
    }

    /// Length-prefixed UTF-8 text.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// A JSON value; object keys sorted, numbers by kind.
    pub fn json(&mut self, v: &Value) -> &mut Self {
        match v {
            Value::Null => self.tag(b'n'),
            Value::Bool(b) => self.tag(if *b { b't' } else { b'f' }),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.tag(b'i').i64(i)
                } else if let Some(u) = n.as_u64() {
                    self.tag(b'u').u64(u)
                } else {
                    // JSON has no NaN or infinity, so the bits of a finite float are canonical.
                    self.tag(b'd').u64(n.as_f64().unwrap_or(0.0).to_bits())
                }
            }
            Value::String(s) => self.tag(b's').str(s),
            Value::Array(a) => {
                self.tag(b'a').u64(a.len() as u64);
                for x in a {
                    self.json(x);
                }
                self
            }
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                self.tag(b'o').u64(keys.len() as u64);
                for k in keys {
                    self.str(k);
                    if let Some(x) = o.get(k) {
                        self.json(x);
                    }
                }
                self
            }
        }
    }

    /// A device id.
    pub fn device(&mut self, d: &DeviceId) -> &mut Self {
        self.str(d.as_str())
    }

    /// A dot.
    pub fn dot(&mut self, d: &Dot) -> &mut Self {
        self.device(&d.device).u64(d.counter)
    }

    /// An entity key.
    pub fn key(&mut self, k: &EntityKey) -> &mut Self {
        self.str(k.entity_type()).str(k.entity_id())
    }

    /// A vector clock (entries in device order, zeros never stored).
    pub fn clock(&mut self, c: &VectorClock) -> &mut Self {
        self.u64(c.len() as u64);
        for (d, n) in c.iter() {
            self.device(d).u64(*n);
        }
        self
    }

    fn counts(&mut self, m: &BTreeMap<DeviceId, u64>) -> &mut Self {
        // Zero entries are encoded too: a device's zero adjustment makes a counter exist.
        self.u64(m.len() as u64);
        for (d, n) in m {
            self.device(d).u64(*n);
        }
        self
    }

    fn field(&mut self, f: &FieldState) -> &mut Self {
        self.u64(f.register.entries.len() as u64);
        for (dot, e) in &f.register.entries {
            self.dot(dot).i64(e.at.0).json(&e.value);
        }
        self.counts(&f.counter.pos).counts(&f.counter.neg).counts(&f.counter.floor_pos).counts(&f.counter.floor_neg)
    }

    /// A whole entity state.
    pub fn entity_state(&mut self, s: &EntityState) -> &mut Self {
        self.clock(&s.context);
        self.u64(s.alive.len() as u64);
        for (dot, at) in &s.alive {
            self.dot(dot).i64(at.0);
        }
        self.u64(s.fields.len() as u64);
        for (name, f) in &s.fields {
            self.str(name).field(f);
        }
        self
    }
}

/// Canonical bytes of an entity state alone. A new change's record checksum and its
/// entity hash both cover them ([`crate::ChangeRecord::checksum_of`],
/// [`crate::digest::entity_hash_of`]), so a write encodes its state once.
pub fn state_bytes(s: &EntityState) -> Vec<u8> {
    // A POS product encodes to ~700 bytes; one allocation instead of several regrowths.
    let mut e = Encoder { buf: Vec::with_capacity(1024) };
    e.entity_state(s);
    e.finish()
}
