//! Change records: the unit of replication and of the change log.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::canonical::Encoder;
use crate::checksum::{calculate_checksum, Checksum};
use crate::clock::VectorClock;
use crate::digest::entity_hash_prefix;
use crate::entity::transcode::StateSummary;
use crate::entity::EntityState;
use crate::error::DomainError;
use crate::ids::{DeviceId, EntityKey};
use crate::time::Timestamp;

/// Version tag mixed into every record's canonical encoding, so a future format can
/// never collide with this one.
const RECORD_DOMAIN: &str = "tillmesh.change.v1";

/// Largest change record, as JSON text, a terminal writes, accepts or serves: 1 MiB.
///
/// Why a cap: a puller refuses answers over 64 MiB and a server always sends at least
/// one record, so a record near that size would stop every peer from pulling past it
/// for good. The cap sits 64 times below the puller's limit and 4 times below the
/// largest batch size a server agrees to, so any single record always fits.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Refuses a record text longer than [`MAX_RECORD_BYTES`].
///
/// # Errors
/// [`DomainError::TooLarge`] naming the entity.
pub fn check_record_size(key: &EntityKey, json_len: usize) -> Result<(), DomainError> {
    if json_len > MAX_RECORD_BYTES {
        return Err(DomainError::TooLarge { entity: key.to_string(), size: json_len, max: MAX_RECORD_BYTES });
    }
    Ok(())
}

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
        Checksum::of_parts(&[&Self::checksum_prefix(origin, seq, key, at), state_bytes])
    }

    /// [`ChangeRecord::checksum_of`] and [`crate::digest::entity_hash_of`] the key and
    /// state, which a write and a receiver both need: hashed together, which costs
    /// about one hash where the CPU has SHA-NI.
    pub fn checksum_and_entity_hash(
        origin: &DeviceId,
        seq: u64,
        key: &EntityKey,
        at: Timestamp,
        state_bytes: &[u8],
    ) -> (Checksum, Checksum) {
        Checksum::pair_of_parts(
            &[&Self::checksum_prefix(origin, seq, key, at), state_bytes],
            &[&entity_hash_prefix(key), state_bytes],
        )
    }

    /// What a record's checksum hashes before its state's canonical bytes.
    fn checksum_prefix(origin: &DeviceId, seq: u64, key: &EntityKey, at: Timestamp) -> Vec<u8> {
        let mut e = Encoder::new();
        e.str(RECORD_DOMAIN).device(origin).u64(seq).key(key).i64(at.0);
        e.finish()
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
        let origin_in_context = self.state.context.get(&self.origin) != 0;
        let made = Self::checksum_of(&self.origin, self.seq, &self.key, self.at, &bytes);
        check_parts(&self.origin, self.seq, &self.checksum, &made, origin_in_context)?;
        self.state.validate()?;
        Ok(bytes)
    }
}

/// The checks of a record that do not need its state decoded: its checksum against
/// the one its parts make, the sequence, and the origin's entry in the state's clock.
fn check_parts(
    origin: &DeviceId,
    seq: u64,
    checksum: &Checksum,
    made: &Checksum,
    origin_in_context: bool,
) -> Result<(), DomainError> {
    if made != checksum {
        return Err(DomainError::ChecksumMismatch { origin: origin.to_string(), seq });
    }
    if seq == 0 {
        return Err(DomainError::InvalidRecord("sequence numbers start at 1".into()));
    }
    if !origin_in_context {
        return Err(DomainError::InvalidRecord("the origin's write is missing from the clock".into()));
    }
    Ok(())
}

/// Everything of a change record but its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Device where the change was made.
    pub origin: DeviceId,
    /// Per-origin sequence number.
    pub seq: u64,
    /// The entity changed.
    pub key: EntityKey,
    /// Origin's wall-clock time of the change.
    pub at: Timestamp,
    /// The record's checksum as sent.
    pub checksum: Checksum,
}

/// A change record together with the JSON text it is stored and sent as.
///
/// Why: a terminal stores what it receives as text and relays it as is; keeping the
/// text a record was decoded from saves encoding every received record again. The
/// checksum covers canonical bytes, not this text, so any faithful JSON of the record
/// will do. Read-only (the header through `Deref`), so text and header cannot drift
/// apart — which also makes it sound to remember a successful verification (see
/// [`EncodedChange::check`]).
///
/// The state is not decoded when its text is in the exact form this crate writes:
/// [`crate::entity::transcode`] gives its canonical bytes straight from the text,
/// which is all a receiver needs for an entity it does not hold yet. Other text is
/// decoded as usual.
#[derive(Clone, Debug)]
pub struct EncodedChange {
    header: RecordHeader,
    /// One JSON value: every constructor parses all of it.
    json: Box<str>,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    /// Decoded; the entity hash of the state once [`EncodedChange::check`] passed.
    Decoded { state: EntityState, verified: Option<Checksum> },
    /// Left as text; its canonical bytes and summary came from the transcoder.
    Encoded { bytes: Vec<u8>, summary: StateSummary, verified: Option<Checksum> },
}

/// The state of a verified change: decoded, or only summarised (decode it from the
/// record's JSON text when needed).
#[derive(Clone, Debug)]
pub enum ReceivedState {
    /// The decoded state.
    Decoded(EntityState),
    /// Not decoded; what the receiver needs to know without decoding it.
    Encoded(StateSummary),
}

/// A change that passed [`EncodedChange::check`], taken apart for storing.
#[derive(Clone, Debug)]
pub struct VerifiedChange {
    /// Origin, sequence, key, time and checksum.
    pub header: RecordHeader,
    /// The record's JSON text, as received.
    pub json: String,
    /// [`crate::digest::entity_hash_of`] the record's key and state: the receiver's
    /// entity hash when the change supersedes what it held. Computed by the check,
    /// which a puller runs beside the writer, so the writer need not.
    pub entity_hash: Checksum,
    /// The state, decoded or not.
    pub state: ReceivedState,
}

/// A record as text with its state left undecoded.
#[derive(Deserialize)]
struct WireRecord<'a> {
    origin: DeviceId,
    seq: u64,
    key: EntityKey,
    at: Timestamp,
    #[serde(borrow)]
    state: &'a RawValue,
    checksum: Checksum,
}

impl EncodedChange {
    /// Encodes a record.
    pub fn new(record: ChangeRecord) -> Self {
        // A record holds strings, integers and JSON values only, so encoding cannot fail.
        let json = serde_json::to_string(&record).unwrap_or_else(|_| "null".into()).into_boxed_str();
        let ChangeRecord { origin, seq, key, at, state, checksum } = record;
        Self {
            header: RecordHeader { origin, seq, key, at, checksum },
            json,
            body: Body::Decoded { state, verified: None },
        }
    }

    /// Decodes a record from its JSON text, keeping the text.
    ///
    /// Any text: both ways of reading it below parse all of it (trailing characters
    /// included), so no separate validation pass is needed — which a puller would
    /// otherwise pay on every received record.
    ///
    /// # Errors
    /// The text is not a change record.
    pub fn decode(json: String) -> Result<Self, serde_json::Error> {
        Self::from_text(json.into_boxed_str())
    }

    /// Decodes a record from a JSON value cut out of a larger message.
    ///
    /// # Errors
    /// The text is not a change record.
    pub fn from_json(json: Box<RawValue>) -> Result<Self, serde_json::Error> {
        Self::from_text(json.into())
    }

    fn from_text(json: Box<str>) -> Result<Self, serde_json::Error> {
        // A record as this crate writes it is read in one pass; anything else (other
        // field order, a state in another form) the usual way, which then decides.
        if let Some((f, bytes, summary)) = crate::entity::transcode::transcode_record(&json) {
            let header = RecordHeader { origin: f.origin, seq: f.seq, key: f.key, at: f.at, checksum: f.checksum };
            return Ok(Self { header, json, body: Body::Encoded { bytes, summary, verified: None } });
        }
        let wire: WireRecord<'_> = serde_json::from_str(&json)?;
        let body = match crate::entity::transcode::transcode(wire.state.get(), wire.origin.as_str()) {
            Some((bytes, summary)) => Body::Encoded { bytes, summary, verified: None },
            None => Body::Decoded { state: serde_json::from_str(wire.state.get())?, verified: None },
        };
        let WireRecord { origin, seq, key, at, checksum, .. } = wire;
        Ok(Self { header: RecordHeader { origin, seq, key, at, checksum }, json, body })
    }

    /// Verifies the record ([`ChangeRecord::verify`]) and remembers that it passed, so
    /// that [`EncodedChange::into_verified`] does not check it again. A puller checks a
    /// batch while the previous one is being stored; the store then only asks.
    ///
    /// # Errors
    /// As [`ChangeRecord::verify`].
    pub fn check(&mut self) -> Result<(), DomainError> {
        let h = &self.header;
        check_record_size(&h.key, self.json.len())?;
        match &mut self.body {
            Body::Decoded { verified: Some(_), .. } | Body::Encoded { verified: Some(_), .. } => {}
            Body::Decoded { state, verified } => {
                let bytes = crate::canonical::state_bytes(state);
                let (made, hash) = ChangeRecord::checksum_and_entity_hash(&h.origin, h.seq, &h.key, h.at, &bytes);
                check_parts(&h.origin, h.seq, &h.checksum, &made, state.context.get(&h.origin) != 0)?;
                state.validate()?;
                *verified = Some(hash);
            }
            Body::Encoded { bytes, summary, verified } => {
                // The transcoder already checked what `EntityState::validate` checks.
                let (made, hash) = ChangeRecord::checksum_and_entity_hash(&h.origin, h.seq, &h.key, h.at, bytes);
                check_parts(&h.origin, h.seq, &h.checksum, &made, summary.origin_in_context)?;
                *verified = Some(hash);
            }
        }
        Ok(())
    }

    /// The verified change taken apart; verifies unless [`EncodedChange::check`]
    /// already did.
    ///
    /// # Errors
    /// As [`ChangeRecord::verify`].
    pub fn into_verified(mut self) -> Result<VerifiedChange, DomainError> {
        self.check()?;
        let json = String::from(self.json);
        let (entity_hash, state) = match self.body {
            Body::Decoded { state, verified: Some(hash) } => (hash, ReceivedState::Decoded(state)),
            Body::Encoded { summary, verified: Some(hash), .. } => (hash, ReceivedState::Encoded(summary)),
            _ => return Err(DomainError::InvalidRecord("checked change lost its entity hash".into())),
        };
        Ok(VerifiedChange { header: self.header, json, entity_hash, state })
    }

    /// The whole record, decoding its state if it was left as text.
    ///
    /// # Errors
    /// Only if the text no longer decodes, which a successful [`EncodedChange::decode`]
    /// rules out.
    pub fn to_record(&self) -> Result<ChangeRecord, serde_json::Error> {
        match &self.body {
            Body::Decoded { state, .. } => {
                let h = self.header.clone();
                Ok(ChangeRecord {
                    origin: h.origin,
                    seq: h.seq,
                    key: h.key,
                    at: h.at,
                    state: state.clone(),
                    checksum: h.checksum,
                })
            }
            Body::Encoded { .. } => serde_json::from_str(&self.json),
        }
    }

    /// Canonical bytes of the state.
    fn state_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::Decoded { state, .. } => crate::canonical::state_bytes(state),
            Body::Encoded { bytes, .. } => bytes.clone(),
        }
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The JSON text, owned.
    pub fn into_json(self) -> String {
        self.json.into()
    }
}

impl std::ops::Deref for EncodedChange {
    type Target = RecordHeader;
    fn deref(&self) -> &RecordHeader {
        &self.header
    }
}

impl From<ChangeRecord> for EncodedChange {
    fn from(record: ChangeRecord) -> Self {
        Self::new(record)
    }
}

/// Equal records: same header and same state (compared by canonical bytes, so the
/// JSON text's layout does not matter).
impl PartialEq for EncodedChange {
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header && self.state_bytes() == other.state_bytes()
    }
}

/// Writes the record's own text. Serving a pull writes stored texts without serde
/// (see the server's pull answer); this is for everything else.
impl Serialize for EncodedChange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::from_str::<&RawValue>(&self.json).map_err(serde::ser::Error::custom)?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EncodedChange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Box::<RawValue>::deserialize(d)?;
        Self::from_json(json).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
