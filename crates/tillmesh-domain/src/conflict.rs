//! Conflicts: a field whose concurrent writes hold different values.
//!
//! A conflict is not stored separately from the data: it is derived from an entity's
//! state, so it replicates with it, has the same id on every terminal that saw the
//! same competing writes, and disappears everywhere once a write that saw them all
//! (a resolution) arrives.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::Encoder;
use crate::checksum::Checksum;
use crate::entity::MvRegister;
use crate::ids::{DeviceId, EntityKey};
use crate::time::Timestamp;

/// Stable id of a conflict: a hash of the entity, field and competing dots.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConflictId(pub String);

impl fmt::Display for ConflictId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One competing value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictValue {
    /// The value written.
    pub value: Value,
    /// Device that wrote it.
    pub device_id: DeviceId,
    /// When that device wrote it (its clock).
    pub at: Timestamp,
}

/// An open conflict on one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Stable id.
    pub id: ConflictId,
    /// Entity concerned.
    pub key: EntityKey,
    /// Field concerned.
    pub field: String,
    /// Competing writes, in dot order.
    pub values: Vec<ConflictValue>,
    /// The value shown meanwhile.
    pub provisional: Value,
}

impl Conflict {
    pub(crate) fn new(key: &EntityKey, field: &str, reg: &MvRegister) -> Self {
        let mut e = Encoder::new();
        e.str("tillmesh.conflict.v1").key(key).str(field).u64(reg.entries.len() as u64);
        for dot in reg.entries.keys() {
            e.dot(dot);
        }
        let hash = Checksum::of(&e.finish()).to_hex();
        let values = reg
            .entries
            .iter()
            .map(|(dot, en)| ConflictValue { value: en.value.clone(), device_id: dot.device.clone(), at: en.at })
            .collect();
        Self {
            id: ConflictId(hash[..32].to_string()),
            key: key.clone(),
            field: field.to_string(),
            values,
            provisional: reg.provisional().map(|(_, e)| e.value.clone()).unwrap_or(Value::Null),
        }
    }

    /// Distinct competing values other than `shown`.
    pub fn other_values(&self, shown: &Value) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for v in &self.values {
            if &v.value != shown && !out.contains(&v.value) {
                out.push(v.value.clone());
            }
        }
        out
    }
}
