//! Change records: the unit of replication and of the change log.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::canonical::Encoder;
use crate::checksum::{calculate_checksum, Checksum};
use crate::clock::VectorClock;
use crate::entity::EntityState;
use crate::error::DomainError;
use crate::ids::{DeviceId, EntityKey};
use crate::time::Timestamp;

/// Version tag mixed into every record's canonical encoding, so a future format can
/// never collide with this one.
const RECORD_DOMAIN: &str = "tillmesh.change.v1";

/// One change made on one device to one entity.
///
/// What changed is carried as the entity's whole state right after the write (a
/// state-based delta): joining it into any replica is safe in any order, duplicated
/// or relayed, so peers need no causal delivery. The record's clock is that state's
/// context. `(origin, seq)` identifies the change everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Device where the change was made.
    pub origin: DeviceId,
    /// Per-origin sequence number, 1, 2, 3, … without gaps.
    pub seq: u64,
    /// The entity changed.
    pub key: EntityKey,
    /// Origin's wall-clock time of the change (informational).
    pub at: Timestamp,
    /// The entity's state right after the change.
    pub state: EntityState,
    /// SHA-256 over [`ChangeRecord::canonical_bytes`].
    pub checksum: Checksum,
}

impl ChangeRecord {
    /// Builds a record and computes its checksum.
    pub fn new(origin: DeviceId, seq: u64, key: EntityKey, at: Timestamp, state: EntityState) -> Self {
        let mut r = Self { origin, seq, key, at, state, checksum: Checksum::from_bytes([0; 32]) };
        r.checksum = calculate_checksum(&r);
        r
    }

    /// The checksum of the record these parts make, given the canonical bytes of its
    /// state ([`crate::canonical::state_bytes`]): what [`ChangeRecord::new`] computes,
    /// without building the record.
    pub fn checksum_of(origin: &DeviceId, seq: u64, key: &EntityKey, at: Timestamp, state_bytes: &[u8]) -> Checksum {
        let mut e = Encoder::new();
        e.str(RECORD_DOMAIN).device(origin).u64(seq).key(key).i64(at.0);
        Checksum::of_parts(&[&e.finish(), state_bytes])
    }

    /// The vector clock of the change: the entity's version after it.
    pub fn clock(&self) -> &VectorClock {
        &self.state.context
    }

    /// Canonical encoding of everything but the checksum.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.str(RECORD_DOMAIN).device(&self.origin).u64(self.seq).key(&self.key).i64(self.at.0);
        e.entity_state(&self.state);
        e.finish()
    }

    /// Full check of a record received from elsewhere: checksum, sequence, and the
    /// state's invariants (the origin must have written at least `seq`'s dot).
    ///
    /// # Errors
    /// [`DomainError::ChecksumMismatch`] or [`DomainError::InvalidRecord`].
    pub fn verify(&self) -> Result<(), DomainError> {
        self.verified_state_bytes().map(|_| ())
    }

    /// [`ChangeRecord::verify`], handing back the canonical bytes of the state that
    /// checking the checksum computed, so that the receiver's entity hash of that
    /// state ([`crate::digest::entity_hash_of`]) need not encode it again.
    ///
    /// # Errors
    /// As [`ChangeRecord::verify`].
    pub fn verified_state_bytes(&self) -> Result<Vec<u8>, DomainError> {
        let bytes = crate::canonical::state_bytes(&self.state);
        if Self::checksum_of(&self.origin, self.seq, &self.key, self.at, &bytes) != self.checksum {
            return Err(DomainError::ChecksumMismatch { origin: self.origin.to_string(), seq: self.seq });
        }
        if self.seq == 0 {
            return Err(DomainError::InvalidRecord("sequence numbers start at 1".into()));
        }
        if self.state.context.get(&self.origin) == 0 {
            return Err(DomainError::InvalidRecord("the origin's write is missing from the clock".into()));
        }
        self.state.validate()?;
        Ok(bytes)
    }
}

/// A change record together with the JSON text it is stored and sent as.
///
/// Why: a terminal stores what it receives as text and relays it as is; keeping the
/// text a record was decoded from saves encoding every received record again. The
/// checksum covers canonical bytes, not this text, so any faithful JSON of the record
/// will do. Read-only (through `Deref`), so the two cannot drift apart — which also
/// makes it sound to remember a successful verification (see [`EncodedChange::check`]).
#[derive(Clone, Debug)]
pub struct EncodedChange {
    record: ChangeRecord,
    json: Box<RawValue>,
    /// Canonical bytes of the state, once [`ChangeRecord::verified_state_bytes`] passed.
    verified: Option<Vec<u8>>,
}

impl EncodedChange {
    /// Encodes a record.
    pub fn new(record: ChangeRecord) -> Self {
        // A record holds strings, integers and JSON values only, so encoding cannot fail.
        let text = serde_json::to_string(&record).unwrap_or_default();
        let json = RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Self { record, json, verified: None }
    }

    /// Decodes a record from its JSON text, keeping the text.
    ///
    /// # Errors
    /// The text is not a change record.
    pub fn decode(json: String) -> Result<Self, serde_json::Error> {
        let json = RawValue::from_string(json)?;
        let record = serde_json::from_str(json.get())?;
        Ok(Self { record, json, verified: None })
    }

    /// Verifies the record ([`ChangeRecord::verify`]) and remembers that it passed, so
    /// that [`EncodedChange::into_verified`] does not check it again. A puller checks a
    /// batch while the previous one is being stored; the store then only asks.
    ///
    /// # Errors
    /// As [`ChangeRecord::verify`].
    pub fn check(&mut self) -> Result<(), DomainError> {
        if self.verified.is_none() {
            self.verified = Some(self.record.verified_state_bytes()?);
        }
        Ok(())
    }

    /// The verified record, its JSON text and its state's canonical bytes; verifies
    /// unless [`EncodedChange::check`] already did.
    ///
    /// # Errors
    /// As [`ChangeRecord::verify`].
    pub fn into_verified(self) -> Result<(ChangeRecord, String, Vec<u8>), DomainError> {
        let bytes = match self.verified {
            Some(bytes) => bytes,
            None => self.record.verified_state_bytes()?,
        };
        Ok((self.record, self.json.get().to_owned(), bytes))
    }

    /// The record.
    pub fn record(&self) -> &ChangeRecord {
        &self.record
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// The record and its JSON text.
    pub fn into_parts(self) -> (ChangeRecord, String) {
        (self.record, self.json.get().to_owned())
    }
}

impl std::ops::Deref for EncodedChange {
    type Target = ChangeRecord;
    fn deref(&self) -> &ChangeRecord {
        &self.record
    }
}

impl From<ChangeRecord> for EncodedChange {
    fn from(record: ChangeRecord) -> Self {
        Self::new(record)
    }
}

impl PartialEq for EncodedChange {
    fn eq(&self, other: &Self) -> bool {
        self.record == other.record
    }
}

impl Serialize for EncodedChange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EncodedChange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Box::<RawValue>::deserialize(d)?;
        let record = serde_json::from_str(json.get()).map_err(serde::de::Error::custom)?;
        Ok(Self { record, json, verified: None })
    }
}

#[cfg(test)]
mod tests;
