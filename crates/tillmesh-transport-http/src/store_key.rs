//! The store key as a shared, replaceable secret: the client, the server-side
//! authenticator and pairing all read the current key from one handle, so a terminal
//! that joins a store with a pairing code switches keys without a restart.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

struct Current {
    key: Arc<String>,
    generation: u64,
}

/// Shared handle on the current store key (cheap to clone; never printed).
#[derive(Clone)]
pub struct StoreKey {
    inner: Arc<RwLock<Current>>,
}

impl StoreKey {
    /// A handle holding `key`.
    pub fn new(key: impl Into<String>) -> Self {
        Self { inner: Arc::new(RwLock::new(Current { key: Arc::new(key.into()), generation: 0 })) }
    }

    /// The current key.
    pub fn current(&self) -> Arc<String> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).key.clone()
    }

    /// The current key and its generation (bumped by every [`StoreKey::replace`]).
    pub fn snapshot(&self) -> (Arc<String>, u64) {
        let c = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        (c.key.clone(), c.generation)
    }

    /// Replaces the key (after joining another store); sessions made with the old
    /// key are no longer used.
    pub fn replace(&self, key: impl Into<String>) {
        let mut c = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        c.key = Arc::new(key.into());
        c.generation += 1;
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_the_key_is_seen_by_every_clone_and_bumps_the_generation() {
        let a = StoreKey::new("one");
        let b = a.clone();
        b.replace("two");
        let (k, g) = a.snapshot();
        assert_eq!((k.as_str(), g), ("two", 1));
        assert_eq!(format!("{a:?}"), "StoreKey(<secret>)");
    }
}
