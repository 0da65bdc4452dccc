//! Time and randomness ports: the domain never reads either by itself.

use crate::time::Timestamp;

/// Source of the current wall-clock time.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// Source of jitter for retry delays: a number in `[0, 1)`.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait JitterSource: Send + Sync + 'static {
    /// The next jitter value.
    fn jitter(&self) -> f64;
}
