//! Canonical hashes of replicated state, for "are we in sync?" checks.

use crate::canonical::Encoder;
use crate::checksum::Checksum;
use crate::entity::EntityState;
use crate::ids::EntityKey;

/// Hash of one entity's full replicated state (fields, tombstone, counters and, since
/// conflicts are derived from it, its open conflicts).
pub fn entity_hash(key: &EntityKey, state: &EntityState) -> Checksum {
    entity_hash_of(key, &crate::canonical::state_bytes(state))
}

/// [`entity_hash`], given the state's [`crate::canonical::state_bytes`].
pub fn entity_hash_of(key: &EntityKey, state_bytes: &[u8]) -> Checksum {
    Checksum::of_parts(&[&entity_hash_prefix(key), state_bytes])
}

/// What [`entity_hash_of`] hashes before the state's bytes.
pub(crate) fn entity_hash_prefix(key: &EntityKey) -> Vec<u8> {
    let mut e = Encoder::new();
    e.str("tillmesh.entity.v1").key(key);
    e.finish()
}

/// Folds entity hashes, fed in `(type, id)` order, into one store digest.
#[derive(Default)]
pub struct DigestBuilder {
    enc: Encoder,
    count: u64,
}

impl DigestBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next entity; callers feed keys in ascending order.
    pub fn add(&mut self, key: &EntityKey, hash: &Checksum) {
        self.enc.key(key).bytes(hash.as_bytes());
        self.count += 1;
    }

    /// The digest and the number of entities folded.
    pub fn finish(self) -> (Checksum, u64) {
        let mut bytes = b"tillmesh.digest.v1".to_vec();
        bytes.extend(self.enc.finish());
        (Checksum::of(&bytes), self.count)
    }
}
