//! System adapters small enough to live in the app: the wall clock and the jitter
//! source for retry delays.

use std::time::{SystemTime, UNIX_EPOCH};

use tillmesh_domain::ports::{Clock, JitterSource};
use tillmesh_domain::Timestamp;

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// Jitter from the thread-local random generator.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomJitter;

impl JitterSource for RandomJitter {
    fn jitter(&self) -> f64 {
        rand::random::<f64>()
    }
}
