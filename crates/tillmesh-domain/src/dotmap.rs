//! [`DotMap`]: a small map keyed by [`Dot`], kept as a sorted vector.
//!
//! Why not a `BTreeMap`: a register or an entity's alive set almost always holds one
//! dot (more only while concurrent writes compete), and every write builds one per
//! field. A B-tree allocates a node sized for eleven entries for that one; a vector
//! allocates exactly one entry, and lookups over a handful of dots are as fast.

use crate::ids::Dot;

/// Entries keyed by dot, iterated in dot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotMap<V> {
    entries: Vec<(Dot, V)>,
}

impl<V> Default for DotMap<V> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<V> DotMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map with one entry.
    pub fn one(dot: Dot, value: V) -> Self {
        Self { entries: vec![(dot, value)] }
    }

    fn find(&self, dot: &Dot) -> Result<usize, usize> {
        self.entries.binary_search_by(|(d, _)| d.cmp(dot))
    }

    /// Sets `dot`'s value, returning the value it replaces.
    pub fn insert(&mut self, dot: Dot, value: V) -> Option<V> {
        match self.find(&dot) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (dot, value));
                None
            }
        }
    }

    /// Inserts `make()` under `dot` unless the dot is present.
    pub fn insert_if_absent(&mut self, dot: &Dot, make: impl FnOnce() -> V) {
        if let Err(i) = self.find(dot) {
            self.entries.insert(i, (dot.clone(), make()));
        }
    }

    /// The value under `dot`.
    pub fn get(&self, dot: &Dot) -> Option<&V> {
        self.find(dot).ok().map(|i| &self.entries[i].1)
    }

    /// Whether `dot` is present.
    pub fn contains_key(&self, dot: &Dot) -> bool {
        self.find(dot).is_ok()
    }

    /// Keeps the entries for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Dot, &V) -> bool) {
        self.entries.retain(|(d, v)| keep(d, v));
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in dot order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Dot, &V)> + ExactSizeIterator {
        self.entries.iter().map(|(d, v)| (d, v))
    }

    /// Dots in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Dot> + ExactSizeIterator {
        self.entries.iter().map(|(d, _)| d)
    }

    /// Values in dot order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Mutable values in dot order.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

impl<V> DotMap<V> {
    /// Adds every entry of `other` whose dot is absent here and passes `take`. Sorts
    /// once instead of inserting one by one, so a state with many dots (only a broken or
    /// hostile peer sends one) costs O(n log n), not O(n²).
    pub fn merge_missing(&mut self, other: &DotMap<V>, mut take: impl FnMut(&Dot) -> bool)
    where
        V: Clone,
    {
        let before = self.entries.len();
        for (d, v) in &other.entries {
            if take(d) && self.entries[..before].binary_search_by(|(x, _)| x.cmp(d)).is_err() {
                self.entries.push((d.clone(), v.clone()));
            }
        }
        if self.entries.len() > before {
            self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
}

impl<V> FromIterator<(Dot, V)> for DotMap<V> {
    /// Later entries win over earlier ones with the same dot. O(n log n) whatever the
    /// order of the input.
    fn from_iter<I: IntoIterator<Item = (Dot, V)>>(iter: I) -> Self {
        let mut entries: Vec<(Dot, V)> = iter.into_iter().collect();
        // A stable sort keeps equal dots in input order; the last of each run wins.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Dot, V)> = Vec::with_capacity(entries.len());
        for (d, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == d => last.1 = v,
                _ => out.push((d, v)),
            }
        }
        Self { entries: out }
    }
}

impl<'a, V> IntoIterator for &'a DotMap<V> {
    type Item = (&'a Dot, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Dot, V)>, fn(&'a (Dot, V)) -> (&'a Dot, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(d, v)| (d, v))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    use super::*;
    use crate::ids::DeviceId;

    fn dot(d: u8, n: u64) -> Dot {
        Dot { device: DeviceId::parse(format!("d{d}")).expect("id"), counter: n }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every operation agrees with a `BTreeMap` doing the same.
        #[test]
        fn behaves_like_an_ordered_map(ops in proptest::collection::vec((0u8..4, 0u8..3, 1u64..4, any::<u8>()), 0..40)) {
            let (mut m, mut reference) = (DotMap::new(), BTreeMap::new());
            for (op, d, n, v) in ops {
                let k = dot(d, n);
                match op {
                    0 => prop_assert_eq!(m.insert(k.clone(), v), reference.insert(k, v)),
                    1 => {
                        m.insert_if_absent(&k, || v);
                        reference.entry(k).or_insert(v);
                    }
                    2 => {
                        m.retain(|_, x| x % 3 != v % 3);
                        reference.retain(|_, x| *x % 3 != v % 3);
                    }
                    _ => prop_assert_eq!(m.get(&k), reference.get(&k)),
                }
                prop_assert_eq!(m.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
                prop_assert_eq!(m.len(), reference.len());
            }
        }

        /// Building from a list and merging agree with a `BTreeMap` too.
        #[test]
        fn from_iter_and_merge_missing_behave_like_an_ordered_map(
            a in proptest::collection::vec((0u8..4, 1u64..4, any::<u8>()), 0..30),
            b in proptest::collection::vec((0u8..4, 1u64..4, any::<u8>()), 0..30),
            skip in 0u8..4,
        ) {
            let list = |v: &[(u8, u64, u8)]| v.iter().map(|(d, n, x)| (dot(*d, *n), *x)).collect::<Vec<_>>();
            let (la, lb) = (list(&a), list(&b));
            let mut m: DotMap<u8> = la.iter().cloned().collect();
            let mut reference: BTreeMap<Dot, u8> = la.iter().cloned().collect();
            prop_assert_eq!(m.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
            let other: DotMap<u8> = lb.iter().cloned().collect();
            let other_ref: BTreeMap<Dot, u8> = lb.iter().cloned().collect();
            let skipped = DeviceId::parse(format!("d{skip}")).expect("id");
            m.merge_missing(&other, |d| d.device != skipped);
            for (d, v) in other_ref.iter().filter(|(d, _)| d.device != skipped) {
                reference.entry(d.clone()).or_insert(*v);
            }
            prop_assert_eq!(m.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
        }
    }
}
