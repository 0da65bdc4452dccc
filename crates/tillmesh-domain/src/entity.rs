//! The replicated entity: a causal context plus named fields, each a multi-value
//! register (plain values) or an observed-reset PN-counter (stock levels).
//!
//! Why this shape: every write gets a dot (device, per-entity counter) and the
//! entity's causal context records which dots the writer had seen. A register keeps
//! every value whose dot the other side had not seen, so concurrent writes of one
//! field survive side by side (a conflict), concurrent writes of *different* fields
//! never meet, and a later write that saw them all supersedes them (a resolution).
//! [`EntityState::join`] is a semilattice join — commutative, associative and
//! idempotent — so replicas that received the same changes are identical, whatever
//! the order, duplication or relay path. Changes carry whole entity states, so no
//! causal delivery is needed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::VectorClock;
use crate::conflict::Conflict;
use crate::dotmap::DotMap;
use crate::error::DomainError;
use crate::ids::{validate_name, DeviceId, Dot, EntityKey};
use crate::time::Timestamp;

/// Deepest nesting of arrays/objects accepted inside one field value.
pub const MAX_VALUE_DEPTH: usize = 32;

/// One surviving write of a register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterEntry {
    /// The written value (never JSON `null`: writing `null` removes the field).
    pub value: Value,
    /// Writer's wall-clock time; only used to pick a provisional value and to show.
    pub at: Timestamp,
}

/// A multi-value register: the set of writes not yet superseded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MvRegister {
    /// Surviving writes by dot.
    pub entries: DotMap<RegisterEntry>,
}

impl MvRegister {
    fn join(&mut self, my_ctx: &VectorClock, other: &MvRegister, other_ctx: &VectorClock) {
        // Keep mine if the other side also has it or has never seen it; take theirs
        // if I have never seen it. Anything seen but absent was superseded.
        self.entries.retain(|dot, _| other.entries.contains_key(dot) || !other_ctx.contains(dot));
        self.entries.merge_missing(&other.entries, |dot| !my_ctx.contains(dot));
    }

    /// The value shown while writes compete: the latest by writer time, ties broken by
    /// dot, so every replica with the same entries shows the same value.
    pub fn provisional(&self) -> Option<(&Dot, &RegisterEntry)> {
        self.entries.iter().max_by(|(da, a), (db, b)| a.at.cmp(&b.at).then_with(|| da.cmp(db)))
    }

    /// Whether surviving writes hold more than one distinct value.
    pub fn is_conflicted(&self) -> bool {
        let mut it = self.entries.values();
        match it.next() {
            Some(first) => it.any(|e| e.value != first.value),
            None => false,
        }
    }
}

/// An increment/decrement counter whose every device's adjustments count, with a
/// floor recorded by deletes ("observed reset").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    /// Sum of each device's increments.
    pub pos: BTreeMap<DeviceId, u64>,
    /// Sum of each device's decrements (as positive numbers).
    pub neg: BTreeMap<DeviceId, u64>,
    /// `pos` as seen by the latest delete: contributions below it no longer count.
    pub floor_pos: BTreeMap<DeviceId, u64>,
    /// `neg` as seen by the latest delete.
    pub floor_neg: BTreeMap<DeviceId, u64>,
}

fn max_merge(a: &mut BTreeMap<DeviceId, u64>, b: &BTreeMap<DeviceId, u64>) {
    for (d, n) in b {
        let e = a.entry(d.clone()).or_insert(0);
        *e = (*e).max(*n);
    }
}

fn sum_above(m: &BTreeMap<DeviceId, u64>, floor: &BTreeMap<DeviceId, u64>) -> i128 {
    m.iter().map(|(d, n)| i128::from(n.saturating_sub(floor.get(d).copied().unwrap_or(0)))).sum()
}

impl PnCounter {
    fn join(&mut self, other: &PnCounter) {
        max_merge(&mut self.pos, &other.pos);
        max_merge(&mut self.neg, &other.neg);
        max_merge(&mut self.floor_pos, &other.floor_pos);
        max_merge(&mut self.floor_neg, &other.floor_neg);
    }

    /// Exact value: the sum of all counted increments minus decrements.
    pub fn total(&self) -> i128 {
        sum_above(&self.pos, &self.floor_pos) - sum_above(&self.neg, &self.floor_neg)
    }

    /// The value as a 64-bit integer, saturating (only reachable by concurrent
    /// adjustments that together overflow).
    pub fn value(&self) -> i64 {
        i64::try_from(self.total()).unwrap_or(if self.total() < 0 { i64::MIN } else { i64::MAX })
    }

    /// Whether any adjustment was made since the last delete. A device's first
    /// adjustment counts even when it is zero (the field then exists with value 0).
    pub fn is_live(&self) -> bool {
        let above = |m: &BTreeMap<DeviceId, u64>, floor: &BTreeMap<DeviceId, u64>| {
            m.iter().any(|(d, n)| floor.get(d).is_none_or(|f| n > f))
        };
        above(&self.pos, &self.floor_pos) || above(&self.neg, &self.floor_neg)
    }

    fn reset(&mut self) {
        self.floor_pos = self.pos.clone();
        self.floor_neg = self.neg.clone();
    }
}

/// One field: a register, a counter, or (after concurrent writes of both kinds) both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldState {
    /// Plain-value writes.
    pub register: MvRegister,
    /// Counter adjustments.
    pub counter: PnCounter,
}

impl FieldState {
    /// Whether the field currently behaves as a counter. A counter that a delete reset
    /// is free to become a plain value again.
    pub fn is_counter(&self) -> bool {
        self.counter.is_live()
    }

    /// The value shown: the counter's value when it is a counter, else the register's
    /// provisional value; `None` when the field is absent.
    pub fn visible(&self) -> Option<Value> {
        if self.is_counter() {
            Some(Value::from(self.counter.value()))
        } else {
            self.register.provisional().map(|(_, e)| e.value.clone())
        }
    }

    fn is_empty(&self) -> bool {
        self.register.entries.is_empty() && self.counter == PnCounter::default()
    }
}

/// A local operation on one entity, as the API accepts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum EntityOp {
    /// Set fields; `None` removes a field. Other fields keep their values.
    Put {
        /// Field name → new value or removal.
        fields: BTreeMap<String, Option<Value>>,
    },
    /// Tombstone the entity: removes every value this terminal has seen.
    Delete,
    /// Adjust a counter field.
    Counter {
        /// The counter field.
        field: String,
        /// Signed adjustment.
        delta: i64,
    },
}

impl EntityOp {
    /// Checks names, value depth and kind-independent rules.
    ///
    /// # Errors
    /// [`DomainError::InvalidName`] or [`DomainError::TooDeep`].
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            EntityOp::Put { fields } => {
                for (name, value) in fields {
                    validate_name("field name", name)?;
                    if let Some(v) = value {
                        if depth(v) > MAX_VALUE_DEPTH {
                            return Err(DomainError::TooDeep { field: name.clone(), max: MAX_VALUE_DEPTH });
                        }
                    }
                }
                Ok(())
            }
            EntityOp::Delete => Ok(()),
            EntityOp::Counter { field, .. } => validate_name("field name", field),
        }
    }
}

/// Nesting depth of a JSON value (scalars are 0).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The full replicated state of one entity (JSON form: see `entity/encoding.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntityState {
    /// Every dot this state has seen (its version).
    pub context: VectorClock,
    /// Dots of writes that (re)created the entity and no delete has seen. The entity is
    /// deleted when it has history but no alive dot.
    pub alive: DotMap<Timestamp>,
    /// Fields by name.
    pub fields: BTreeMap<String, FieldState>,
}

/// What an entity looks like to a reader.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntityView {
    /// Visible field values (counters as integers).
    pub fields: serde_json::Map<String, Value>,
    /// Whether the entity is tombstoned.
    pub deleted: bool,
    /// The entity's vector clock.
    pub version: VectorClock,
}

impl EntityState {
    /// Whether a delete has removed the entity and no later or concurrent write revived it.
    pub fn is_deleted(&self) -> bool {
        !self.context.is_empty() && self.alive.is_empty()
    }

    /// Applies a local operation made by `device` at `at`, after validating it.
    ///
    /// # Errors
    /// Validation errors, [`DomainError::FieldKindMismatch`] and
    /// [`DomainError::CounterOverflow`]; on error the state is unchanged.
    pub fn apply_local(&mut self, op: &EntityOp, device: &DeviceId, at: Timestamp) -> Result<Dot, DomainError> {
        self.apply_local_owned(op.clone(), device, at)
    }

    /// [`EntityState::apply_local`], taking the op's values instead of copying them.
    ///
    /// # Errors
    /// As [`EntityState::apply_local`]; on error the state is unchanged.
    pub fn apply_local_owned(&mut self, op: EntityOp, device: &DeviceId, at: Timestamp) -> Result<Dot, DomainError> {
        op.validate()?;
        // Check everything before touching the state, so a rejected op changes nothing.
        match &op {
            EntityOp::Put { fields } => {
                for name in fields.keys() {
                    if self.fields.get(name).is_some_and(FieldState::is_counter) {
                        return Err(DomainError::FieldKindMismatch {
                            field: name.clone(),
                            existing: "counter",
                            attempted: "plain value",
                        });
                    }
                }
            }
            EntityOp::Counter { field, delta } => {
                if let Some(f) = self.fields.get(field) {
                    if !f.is_counter() && !f.register.entries.is_empty() {
                        return Err(DomainError::FieldKindMismatch {
                            field: field.clone(),
                            existing: "plain value",
                            attempted: "counter",
                        });
                    }
                }
                let current = self.fields.get(field).map_or(0, |f| f.counter.total());
                let next = current + i128::from(*delta);
                let own = self.fields.get(field).map_or(0, |f| {
                    let m = if *delta >= 0 { &f.counter.pos } else { &f.counter.neg };
                    m.get(device).copied().unwrap_or(0)
                });
                if i64::try_from(next).is_err() || own.checked_add(delta.unsigned_abs()).is_none() {
                    return Err(DomainError::CounterOverflow { field: field.clone() });
                }
            }
            EntityOp::Delete => {}
        }
        let dot = self.context.increment(device);
        match op {
            EntityOp::Put { fields } => {
                self.alive = DotMap::one(dot.clone(), at);
                for (name, value) in fields {
                    let f = self.fields.entry(name).or_default();
                    f.register.entries.clear();
                    if let Some(v) = value.filter(|v| !v.is_null()) {
                        f.register.entries.insert(dot.clone(), RegisterEntry { value: v, at });
                    }
                }
            }
            EntityOp::Delete => {
                self.alive.clear();
                for f in self.fields.values_mut() {
                    f.register.entries.clear();
                    f.counter.reset();
                }
            }
            EntityOp::Counter { field, delta } => {
                self.alive = DotMap::one(dot.clone(), at);
                let c = &mut self.fields.entry(field).or_default().counter;
                let (m, amount) =
                    if delta >= 0 { (&mut c.pos, delta.unsigned_abs()) } else { (&mut c.neg, delta.unsigned_abs()) };
                let e = m.entry(device.clone()).or_insert(0);
                *e = e.saturating_add(amount);
            }
        }
        self.fields.retain(|_, f| !f.is_empty());
        Ok(dot)
    }

    /// Semilattice join with another replica's state of the same entity.
    pub fn join(&mut self, other: &EntityState) {
        let my_ctx = self.context.clone();
        // Alive dots follow the same keep-unless-seen rule as register entries.
        self.alive.retain(|dot, _| other.alive.contains_key(dot) || !other.context.contains(dot));
        self.alive.merge_missing(&other.alive, |dot| !my_ctx.contains(dot));
        let empty = FieldState::default();
        let names: Vec<String> = self.fields.keys().chain(other.fields.keys()).cloned().collect();
        for name in names {
            let theirs = other.fields.get(&name).unwrap_or(&empty);
            let mine = self.fields.entry(name).or_default();
            mine.register.join(&my_ctx, &theirs.register, &other.context);
            mine.counter.join(&theirs.counter);
        }
        self.fields.retain(|_, f| !f.is_empty());
        self.context.merge(&other.context);
    }

    /// [`EntityState::join`] taking `other` by value; returns whether the result is
    /// exactly `other`. A replica that has nothing of the entity yet (the usual case
    /// when catching up) takes `other` as it is instead of copying it entry by entry.
    pub fn join_owned(&mut self, other: EntityState) -> bool {
        if *self == EntityState::default() {
            *self = other;
            // What `join` would drop: fields left with nothing in them.
            let before = self.fields.len();
            self.fields.retain(|_, f| !f.is_empty());
            return self.fields.len() == before;
        }
        self.join(&other);
        *self == other
    }

    /// The join of two states, as a new state.
    #[must_use]
    pub fn joined(&self, other: &EntityState) -> EntityState {
        let mut out = self.clone();
        out.join(other);
        out
    }

    /// What a reader sees.
    pub fn view(&self) -> EntityView {
        let fields = if self.is_deleted() {
            serde_json::Map::new()
        } else {
            self.fields.iter().filter_map(|(n, f)| f.visible().map(|v| (n.clone(), v))).collect()
        };
        EntityView { fields, deleted: self.is_deleted(), version: self.context.clone() }
    }

    /// Open conflicts: fields whose surviving writes hold different values.
    pub fn conflicts(&self, key: &EntityKey) -> Vec<Conflict> {
        self.fields
            .iter()
            .filter(|(_, f)| !f.is_counter() && f.register.is_conflicted())
            .map(|(name, f)| Conflict::new(key, name, &f.register))
            .collect()
    }

    /// Checks invariants of a state received from elsewhere: valid names, values not
    /// `null` nor too deep, and every dot inside the context.
    ///
    /// # Errors
    /// [`DomainError::InvalidRecord`] describing the first violation.
    pub fn validate(&self) -> Result<(), DomainError> {
        let bad = |m: String| Err(DomainError::InvalidRecord(m));
        for dot in self.alive.keys() {
            if !self.context.contains(dot) || dot.counter == 0 {
                return bad(format!("alive dot {}:{} outside the context", dot.device, dot.counter));
            }
        }
        for (name, f) in &self.fields {
            validate_name("field name", name)?;
            for (dot, e) in &f.register.entries {
                if !self.context.contains(dot) || dot.counter == 0 {
                    return bad(format!("dot {}:{} of field {name} outside the context", dot.device, dot.counter));
                }
                if e.value.is_null() {
                    return bad(format!("field {name} holds null"));
                }
                if depth(&e.value) > MAX_VALUE_DEPTH {
                    return bad(format!("field {name} nests too deep"));
                }
            }
        }
        Ok(())
    }
}

mod encoding;
pub mod transcode;

#[cfg(test)]
mod tests;
