//! Retry policy: exponential, capped, jittered delays and a bounded number of attempts.

use std::time::Duration;

/// Exponential backoff with "equal jitter": the delay for attempt `n` is drawn from
/// `[d/2, d]` where `d = min(base * 2^(n-1), max)`. Keeping half of `d` fixed makes
/// delays grow reliably while still spreading terminals that failed together.
///
/// The random source is injected (`jitter` in `[0, 1)`), so the policy is pure and
/// testable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Cap on any one delay.
    pub max: Duration,
    /// Attempts allowed in total before an operation fails for good.
    pub max_attempts: u32,
}

impl BackoffPolicy {
    /// A policy; `max` is raised to `base` if smaller.
    pub fn new(base: Duration, max: Duration, max_attempts: u32) -> Self {
        Self { base, max: max.max(base), max_attempts }
    }

    /// Upper bound of the delay after failed attempt number `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(63);
        let factor = 1u128 << shift;
        let ms = self.base.as_millis().saturating_mul(factor).min(self.max.as_millis());
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The delay after failed attempt `attempt`, with `jitter` in `[0, 1)` (values
    /// outside are clamped).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as f64;
        let j = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
        Duration::from_millis((ceiling / 2.0 + ceiling / 2.0 * j).round() as u64)
    }

    /// Whether another attempt is allowed after `attempts` have been made.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy::new(Duration::from_millis(1000), Duration::from_millis(300_000), 8)
    }

    #[test]
    fn ceilings_double_until_the_cap() {
        let p = policy();
        let c: Vec<u128> = (1..=10).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(c, vec![1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000]);
    }

    #[test]
    fn retries_stop_at_max_attempts() {
        let p = policy();
        assert!(p.may_retry(7));
        assert!(!p.may_retry(8));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn delays_stay_within_half_and_full_ceiling(attempt in 1u32..200, jitter in 0.0f64..1.0) {
            let p = policy();
            let d = p.delay(attempt, jitter).as_millis();
            let c = p.ceiling(attempt).as_millis();
            prop_assert!(d * 2 >= c && d <= c, "attempt {attempt}: {d} not in [{c}/2, {c}]");
            prop_assert!(d <= 300_000);
        }

        #[test]
        fn delay_ceilings_never_shrink(attempt in 1u32..200) {
            let p = policy();
            prop_assert!(p.ceiling(attempt + 1) >= p.ceiling(attempt));
        }
    }
}
