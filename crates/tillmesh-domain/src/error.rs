//! Errors of the pure domain: invalid input and rejected operations.

use thiserror::Error;

/// Why a domain operation or a decoded value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// A name (type, id, field, device) does not match `[A-Za-z0-9_.-]{1,128}`.
    #[error("invalid {what} {value:?}: use 1-128 characters from A-Z a-z 0-9 _ . -")]
    InvalidName {
        /// What kind of name it was.
        what: &'static str,
        /// The start of the offending value.
        value: String,
    },
    /// A field is a counter and was written as a plain value, or the reverse.
    #[error("field {field:?} is a {existing}; it cannot be written as a {attempted}")]
    FieldKindMismatch {
        /// The field.
        field: String,
        /// Its kind now: `counter` or `plain value`.
        existing: &'static str,
        /// The kind of the rejected write.
        attempted: &'static str,
    },
    /// A counter adjustment would leave the range of a 64-bit signed integer.
    #[error("counter {field:?} would overflow")]
    CounterOverflow {
        /// The field.
        field: String,
    },
    /// A value nests arrays/objects deeper than allowed.
    #[error("value of field {field:?} nests deeper than {max} levels")]
    TooDeep {
        /// The field.
        field: String,
        /// The limit.
        max: usize,
    },
    /// An entity's state would exceed [`crate::change::MAX_RECORD_BYTES`] as a change
    /// record: refused at write and at receipt, so one record can never be too big
    /// for a puller to take.
    #[error("entity {entity} would be {size} bytes as a change record; the limit is {max} bytes")]
    TooLarge {
        /// The entity (`type/id`).
        entity: String,
        /// The record's size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A change record's checksum does not match its content.
    #[error("checksum mismatch for change {origin}#{seq}")]
    ChecksumMismatch {
        /// Origin device of the change.
        origin: String,
        /// Its per-origin sequence number.
        seq: u64,
    },
    /// A decoded record is structurally invalid.
    #[error("invalid change record: {0}")]
    InvalidRecord(String),
}
