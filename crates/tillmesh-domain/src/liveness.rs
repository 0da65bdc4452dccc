//! Device liveness: online, stale or offline from the time since it was last heard.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A device's freshness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LivenessStatus {
    /// Heard from within one heartbeat period (plus slack).
    Online,
    /// Missed a heartbeat or two but not yet past the offline threshold.
    Stale,
    /// Silent for at least the offline threshold.
    Offline,
}

impl LivenessStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Stale => "stale",
            Self::Offline => "offline",
        }
    }
}

/// Thresholds deciding liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessPolicy {
    /// Silence (ms) after which a device is no longer `online` but `stale`.
    pub stale_after_ms: u64,
    /// Silence (ms) after which a device is `offline`.
    pub offline_after_ms: u64,
}

impl LivenessPolicy {
    /// From the heartbeat period and offline threshold. A device becomes stale after
    /// missing more than one heartbeat (1.5 periods), never later than offline.
    pub fn new(heartbeat_ms: u64, offline_after_ms: u64) -> Self {
        let stale = heartbeat_ms.saturating_mul(3) / 2;
        Self { stale_after_ms: stale.min(offline_after_ms), offline_after_ms }
    }

    /// Status of a device last heard at `last_seen`, judged at `now`.
    pub fn status(&self, last_seen: Timestamp, now: Timestamp) -> LivenessStatus {
        let silence = now.millis_since(last_seen);
        if silence >= self.offline_after_ms {
            LivenessStatus::Offline
        } else if silence >= self.stale_after_ms {
            LivenessStatus::Stale
        } else {
            LivenessStatus::Online
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_silent_for_90_seconds_is_offline() {
        let p = LivenessPolicy::new(30_000, 90_000);
        let seen = Timestamp(1_000_000);
        assert_eq!(p.status(seen, seen.plus_millis(10_000)), LivenessStatus::Online);
        assert_eq!(p.status(seen, seen.plus_millis(45_000)), LivenessStatus::Stale);
        assert_eq!(p.status(seen, seen.plus_millis(89_999)), LivenessStatus::Stale);
        assert_eq!(p.status(seen, seen.plus_millis(90_000)), LivenessStatus::Offline);
    }

    #[test]
    fn a_clock_that_went_backwards_counts_as_fresh() {
        let p = LivenessPolicy::new(30_000, 90_000);
        assert_eq!(p.status(Timestamp(5_000), Timestamp(1_000)), LivenessStatus::Online);
    }
}
