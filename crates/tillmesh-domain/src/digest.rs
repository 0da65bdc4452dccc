//! Canonical hashes of replicated state, for "are we in sync?" checks.

use sha2::{Digest, Sha256};

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

/// Label hashed before the entities.
const DIGEST_DOMAIN: &[u8] = b"tillmesh.digest.v1";

/// Hashed in pieces of about this many bytes, so a large store's digest needs no
/// buffer of its size.
const DIGEST_PIECE: usize = 64 << 10;

/// Folds entity hashes, fed in `(type, id)` order, into one store digest: the SHA-256
/// of `tillmesh.digest.v1` followed by each entity's canonical key and hash.
pub struct DigestBuilder {
    hasher: Sha256,
    enc: Encoder,
    count: u64,
}

impl Default for DigestBuilder {
    fn default() -> Self {
        Self { hasher: Sha256::new_with_prefix(DIGEST_DOMAIN), enc: Encoder::new(), count: 0 }
    }
}

impl DigestBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next entity; callers feed keys in ascending order.
    pub fn add(&mut self, key: &EntityKey, hash: &Checksum) {
        self.add_parts(key.entity_type(), key.entity_id(), hash.as_bytes());
    }

    /// [`DigestBuilder::add`], given the key's parts: a store reading back keys it
    /// checked when writing them need not make an [`EntityKey`] of each again.
    pub fn add_parts(&mut self, entity_type: &str, entity_id: &str, hash: &[u8; 32]) {
        self.enc.str(entity_type).str(entity_id).bytes(hash);
        self.count += 1;
        if self.enc.written().len() >= DIGEST_PIECE {
            self.hasher.update(self.enc.written());
            self.enc.clear();
        }
    }

    /// The digest and the number of entities folded.
    pub fn finish(mut self) -> (Checksum, u64) {
        self.hasher.update(self.enc.written());
        (Checksum::from_bytes(self.hasher.finalize().into()), self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest as defined: one SHA-256 over the label and every entity's encoding.
    fn whole(entities: &[(EntityKey, Checksum)]) -> Checksum {
        let mut e = Encoder::new();
        for (key, hash) in entities {
            e.key(key).bytes(hash.as_bytes());
        }
        Checksum::of_parts(&[DIGEST_DOMAIN, &e.finish()])
    }

    #[test]
    fn the_digest_hashed_in_pieces_is_the_digest_of_the_whole() {
        // 5,000 entities encode to ~330 KB: several pieces, the last one partial.
        for n in [0u64, 1, 2, 5_000] {
            let entities: Vec<(EntityKey, Checksum)> = (0..n)
                .map(|i| {
                    let key = EntityKey::new("product", format!("p{i:08}")).expect("key");
                    (key, Checksum::of(&i.to_be_bytes()))
                })
                .collect();
            let mut b = DigestBuilder::new();
            for (i, (key, hash)) in entities.iter().enumerate() {
                if i % 2 == 0 {
                    b.add(key, hash);
                } else {
                    b.add_parts(key.entity_type(), key.entity_id(), hash.as_bytes());
                }
            }
            assert_eq!(b.finish(), (whole(&entities), n), "{n} entities");
        }
    }
}
