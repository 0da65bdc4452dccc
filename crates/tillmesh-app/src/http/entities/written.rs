//! Entities written to JSON straight from their state, in [`EntityDto`]'s shape.
//!
//! Why: a batch answer holds up to 10,000 entities; building an [`EntityDto`] for each
//! (a map of cloned field values, a clock turned into a `Value`), serializing it and
//! freeing it again cost the terminal about as much CPU as storing the batch
//! (profile of 10,000-op `POST /api/entities/batch`).

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use tillmesh_domain::{EntityKey, EntityState};

#[cfg(doc)]
use super::EntityDto;

/// One entity, serialized exactly as [`EntityDto::new`] of the same key and state.
pub struct EntityJson<'a>(pub &'a EntityKey, pub &'a EntityState);

impl Serialize for EntityJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Self(key, state) = *self;
        let deleted = state.is_deleted();
        let mut st = s.serialize_struct("EntityDto", 6)?;
        st.serialize_field("type", key.entity_type())?;
        st.serialize_field("id", key.entity_id())?;
        st.serialize_field("fields", &VisibleFields(state, deleted))?;
        st.serialize_field("deleted", &deleted)?;
        st.serialize_field("version", &state.context)?;
        st.serialize_field("conflicts", &ConflictIds(key, state))?;
        st.end()
    }
}

/// `EntityState::view().fields` without cloning the values.
struct VisibleFields<'a>(&'a EntityState, bool);

impl Serialize for VisibleFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if !self.1 {
            for (name, f) in &self.0.fields {
                if f.is_counter() {
                    map.serialize_entry(name, &f.counter.value())?;
                } else if let Some((_, e)) = f.register.provisional() {
                    map.serialize_entry(name, &e.value)?;
                }
            }
        }
        map.end()
    }
}

struct ConflictIds<'a>(&'a EntityKey, &'a EntityState);

impl Serialize for ConflictIds<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let conflicts = self.1.conflicts(self.0);
        let mut seq = s.serialize_seq(Some(conflicts.len()))?;
        for c in &conflicts {
            seq.serialize_element(&c.id.0)?;
        }
        seq.end()
    }
}

/// The batch answer ([`super::BatchResult`]'s shape), written from the outcome.
pub struct BatchAnswer(pub Vec<(EntityKey, EntityState, bool)>);

impl Serialize for BatchAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("BatchResult", 2)?;
        st.serialize_field("applied", &self.0.len())?;
        st.serialize_field("entities", &Entities(&self.0))?;
        st.end()
    }
}

struct Entities<'a>(&'a [(EntityKey, EntityState, bool)]);

impl Serialize for Entities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (k, state, _) in self.0 {
            seq.serialize_element(&EntityJson(k, state))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tillmesh_domain::{DeviceId, EntityOp, Timestamp};

    use super::super::{BatchResult, EntityDto};
    use super::*;

    fn dev(s: &str) -> DeviceId {
        DeviceId::parse(s).expect("id")
    }

    fn put(fields: serde_json::Value) -> EntityOp {
        serde_json::from_value(json!({"op": "put", "fields": fields})).expect("op")
    }

    /// Plain, counter, conflicting and deleted states all come out as `EntityDto` does.
    #[test]
    fn written_entities_equal_their_dto() {
        let key = EntityKey::new("product", "p1").expect("key");
        let mut plain = EntityState::default();
        plain
            .apply_local(
                &put(json!({"name": "Tea", "price": 2.5, "tags": ["a", {"z": 1, "b": null}]})),
                &dev("a"),
                Timestamp(1),
            )
            .expect("put");
        let mut counted = plain.clone();
        counted
            .apply_local(&EntityOp::Counter { field: "stock".into(), delta: -3 }, &dev("b"), Timestamp(2))
            .expect("counter");
        let mut other = plain.clone();
        other.apply_local(&put(json!({"name": "Green tea"})), &dev("b"), Timestamp(3)).expect("put");
        let mut mine = plain.clone();
        mine.apply_local(&put(json!({"name": "Black tea"})), &dev("a"), Timestamp(4)).expect("put");
        let conflicted = mine.joined(&other);
        assert!(!conflicted.conflicts(&key).is_empty());
        let mut deleted = counted.clone();
        deleted.apply_local(&EntityOp::Delete, &dev("a"), Timestamp(5)).expect("delete");
        let states = [plain, counted, conflicted, deleted, EntityState::default()];
        for state in &states {
            let written = serde_json::to_string(&EntityJson(&key, state)).expect("json");
            let dto = serde_json::to_string(&EntityDto::new(&key, state)).expect("json");
            assert_eq!(written, dto);
        }
        let outcome: Vec<_> = states.iter().map(|s| (key.clone(), s.clone(), false)).collect();
        let want = BatchResult {
            applied: outcome.len(),
            entities: outcome.iter().map(|(k, s, _)| EntityDto::new(k, s)).collect(),
        };
        assert_eq!(
            serde_json::to_string(&BatchAnswer(outcome)).expect("json"),
            serde_json::to_string(&want).expect("json")
        );
    }
}
