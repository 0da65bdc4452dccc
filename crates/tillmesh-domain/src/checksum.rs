//! SHA-256 checksums over canonical encodings.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::change::ChangeRecord;
use crate::error::DomainError;

/// A SHA-256 digest, shown and serialized as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Checksum([u8; 32]);

impl Checksum {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Self(h.finalize().into())
    }

    /// SHA-256 of the concatenation of `a`, and of `b`, computed together (about the
    /// time of one where the CPU has SHA-NI; see `tillmesh-sha256-pair`).
    pub fn pair_of_parts(a: &[&[u8]], b: &[&[u8]]) -> (Self, Self) {
        let (a, b) = tillmesh_sha256_pair::sha256_pair(a, b);
        (Self(a), Self(b))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps a raw digest.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl TryFrom<String> for Checksum {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out)
            .map_err(|_| DomainError::InvalidRecord("checksum must be 64 hex characters".into()))?;
        Ok(Self(out))
    }
}

impl From<Checksum> for String {
    fn from(c: Checksum) -> Self {
        c.to_hex()
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.to_hex())
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Checksum of a change record's canonical encoding (its own checksum field excluded).
pub fn calculate_checksum(record: &ChangeRecord) -> Checksum {
    Checksum::of(&record.canonical_bytes())
}

/// Verifies a record's stored checksum against its content.
///
/// # Errors
/// [`DomainError::ChecksumMismatch`] when they differ.
pub fn verify_checksum(record: &ChangeRecord) -> Result<(), DomainError> {
    if calculate_checksum(record) == record.checksum {
        Ok(())
    } else {
        Err(DomainError::ChecksumMismatch { origin: record.origin.to_string(), seq: record.seq })
    }
}
