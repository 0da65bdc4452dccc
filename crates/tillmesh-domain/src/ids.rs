//! Identifier newtypes: devices, entity keys and dots (one write's unique id).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// Longest accepted entity type, entity id, field name or device id, in bytes.
pub const MAX_NAME_LEN: usize = 128;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Stable identifier of one terminal. Matches `[A-Za-z0-9_.-]{1,128}`.
///
/// Shared rather than owned text: every dot, clock entry and counter entry of every
/// entity names a device, and those are cloned on each write and merge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    /// Validates a device id.
    ///
    /// # Errors
    /// [`DomainError::InvalidName`] when `s` is empty, too long or has other characters.
    pub fn parse(s: impl AsRef<str>) -> Result<Self, DomainError> {
        let s = s.as_ref();
        if valid_name(s) {
            Ok(Self(Arc::from(s)))
        } else {
            Err(DomainError::InvalidName { what: "device id", value: truncate(s) })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for DeviceId {
    type Error = DomainError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<DeviceId> for String {
    fn from(d: DeviceId) -> Self {
        d.0.as_ref().to_owned()
    }
}

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = DeviceId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a device id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DeviceId, E> {
                DeviceId::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Validates an entity type, entity id or field name against `[A-Za-z0-9_.-]{1,128}`.
///
/// # Errors
/// [`DomainError::InvalidName`] naming `what` when the text does not match.
pub fn validate_name(what: &'static str, s: &str) -> Result<(), DomainError> {
    if valid_name(s) {
        Ok(())
    } else {
        Err(DomainError::InvalidName { what, value: truncate(s) })
    }
}

/// `(type, id)` of a replicated entity; both parts match `[A-Za-z0-9_.-]{1,128}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawEntityKey")]
pub struct EntityKey {
    entity_type: String,
    entity_id: String,
}

#[derive(Deserialize)]
struct RawEntityKey {
    entity_type: String,
    entity_id: String,
}

impl TryFrom<RawEntityKey> for EntityKey {
    type Error = DomainError;
    fn try_from(raw: RawEntityKey) -> Result<Self, Self::Error> {
        Self::new(raw.entity_type, raw.entity_id)
    }
}

impl EntityKey {
    /// Builds a key after validating both parts.
    ///
    /// # Errors
    /// [`DomainError::InvalidName`] when either part is invalid.
    pub fn new(entity_type: impl Into<String>, entity_id: impl Into<String>) -> Result<Self, DomainError> {
        let (entity_type, entity_id) = (entity_type.into(), entity_id.into());
        validate_name("entity type", &entity_type)?;
        validate_name("entity id", &entity_id)?;
        Ok(Self { entity_type, entity_id })
    }

    /// The entity's type, e.g. `product`.
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// The entity's id within its type.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.entity_type, self.entity_id)
    }
}

/// The unique id of one write: the writing device and its per-entity counter.
///
/// An entity's causal context ([`crate::VectorClock`]) contains a dot when
/// `context[device] >= counter`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// Device that made the write.
    pub device: DeviceId,
    /// That device's write counter for this entity, starting at 1.
    pub counter: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slashes_or_spaces_are_rejected() {
        assert!(EntityKey::new("product", "a/b").is_err());
        assert!(EntityKey::new("pro duct", "a").is_err());
        assert!(EntityKey::new("", "a").is_err());
        assert!(EntityKey::new("p", "x".repeat(129)).is_err());
        assert!(EntityKey::new("p", "x".repeat(128)).is_ok());
    }

    #[test]
    fn device_ids_are_validated_when_deserialized() {
        assert!(serde_json::from_str::<DeviceId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<DeviceId>("\"ok\\u002d1\"").is_ok(), "escaped text");
        assert!(serde_json::from_value::<DeviceId>(serde_json::json!("ok-1")).is_ok(), "owned text");
        assert!(serde_json::from_str::<DeviceId>("7").is_err());
        assert!(serde_json::from_str::<DeviceId>("\"not ok\"").is_err());
    }
}
