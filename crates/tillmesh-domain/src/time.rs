//! Wall-clock instants as milliseconds since the Unix epoch.
//!
//! The domain never reads the clock itself; instants arrive through
//! [`crate::ports::Clock`] or as arguments.

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus `ms` milliseconds, saturating.
    #[must_use]
    pub fn plus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    /// Milliseconds from `earlier` to `self`, zero when `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }
}
