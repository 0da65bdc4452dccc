//! Vector clocks: the causal history of an entity as a counter per device.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, Dot};

/// How two vector clocks relate causally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockOrdering {
    /// `self` happened before `other` (every entry ≤, at least one <).
    Before,
    /// `self` happened after `other`.
    After,
    /// Identical histories.
    Equal,
    /// Neither saw the other: concurrent histories.
    Concurrent,
}

/// A map from device to the number of events of that device that are known.
///
/// Missing entries mean zero, so `{a:1}` equals `{a:1, b:0}`; zero entries are never
/// stored, which keeps equality, hashing and encoding canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "BTreeMap<DeviceId, u64>", into = "BTreeMap<DeviceId, u64>")]
pub struct VectorClock(BTreeMap<DeviceId, u64>);

impl From<BTreeMap<DeviceId, u64>> for VectorClock {
    fn from(m: BTreeMap<DeviceId, u64>) -> Self {
        Self::from_entries(m)
    }
}

impl From<VectorClock> for BTreeMap<DeviceId, u64> {
    fn from(c: VectorClock) -> Self {
        c.0
    }
}

impl VectorClock {
    /// The empty clock (no events).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a clock from entries, dropping zeros.
    pub fn from_entries(entries: impl IntoIterator<Item = (DeviceId, u64)>) -> Self {
        Self(entries.into_iter().filter(|(_, n)| *n > 0).collect())
    }

    /// The counter of `device` (zero when absent).
    pub fn get(&self, device: &DeviceId) -> u64 {
        self.0.get(device).copied().unwrap_or(0)
    }

    /// Records one more event of `device` and returns its dot.
    ///
    /// Saturates at `u64::MAX`, which no real device reaches.
    pub fn increment(&mut self, device: &DeviceId) -> Dot {
        let n = self.0.entry(device.clone()).or_insert(0);
        *n = n.saturating_add(1);
        Dot { device: device.clone(), counter: *n }
    }

    /// Raises `device`'s counter to at least `counter`.
    pub fn observe(&mut self, device: &DeviceId, counter: u64) {
        if counter == 0 {
            return;
        }
        let n = self.0.entry(device.clone()).or_insert(0);
        *n = (*n).max(counter);
    }

    /// Whether the history this clock describes includes `dot`.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.get(&dot.device) >= dot.counter
    }

    /// Least upper bound: the pointwise maximum.
    pub fn merge(&mut self, other: &VectorClock) {
        for (d, n) in &other.0 {
            self.observe(d, *n);
        }
    }

    /// The least upper bound of two clocks, as a new clock.
    #[must_use]
    pub fn merged(&self, other: &VectorClock) -> VectorClock {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// Compares causal histories.
    pub fn compare(&self, other: &VectorClock) -> ClockOrdering {
        let mut less = false;
        let mut greater = false;
        let mut a = self.0.iter().peekable();
        let mut b = other.0.iter().peekable();
        loop {
            let (ord, x, y) = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((_, x)), None) => (Ordering::Greater, **x, 0),
                (None, Some((_, y))) => (Ordering::Less, 0, **y),
                (Some((ka, x)), Some((kb, y))) => match ka.cmp(kb) {
                    Ordering::Less => (Ordering::Greater, **x, 0),
                    Ordering::Greater => (Ordering::Less, 0, **y),
                    Ordering::Equal => (Ordering::Equal, **x, **y),
                },
            };
            match ord {
                Ordering::Greater => {
                    a.next();
                }
                Ordering::Less => {
                    b.next();
                }
                Ordering::Equal => {
                    a.next();
                    b.next();
                }
            }
            match x.cmp(&y) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
            if less && greater {
                return ClockOrdering::Concurrent;
            }
        }
        match (less, greater) {
            (false, false) => ClockOrdering::Equal,
            (true, false) => ClockOrdering::Before,
            (false, true) => ClockOrdering::After,
            (true, true) => ClockOrdering::Concurrent,
        }
    }

    /// Entries in device order.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &u64)> {
        self.0.iter()
    }

    /// Number of devices with a non-zero counter.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no event is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialOrd for VectorClock {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.compare(other) {
            ClockOrdering::Before => Some(Ordering::Less),
            ClockOrdering::After => Some(Ordering::Greater),
            ClockOrdering::Equal => Some(Ordering::Equal),
            ClockOrdering::Concurrent => None,
        }
    }
}

#[cfg(test)]
mod tests;
