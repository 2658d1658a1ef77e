//! Sets of non-negative integer positions kept as sorted, disjoint, non-adjacent inclusive ranges:
//! the rows, columns or channels one output unit depends on, holes included.

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IntervalSet {
    ranges: Vec<(u64, u64)>,
}

impl IntervalSet {
    pub fn empty() -> Self {
        IntervalSet { ranges: Vec::new() }
    }

    /// `lo..=hi`; empty when `lo > hi`.
    pub fn range(lo: u64, hi: u64) -> Self {
        if lo > hi {
            Self::empty()
        } else {
            IntervalSet { ranges: vec![(lo, hi)] }
        }
    }

    /// Builds from arbitrary (possibly overlapping, unsorted) ranges.
    pub fn from_ranges(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.retain(|(a, b)| a <= b);
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        IntervalSet { ranges: out }
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn min(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.0)
    }

    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.1)
    }

    /// Number of positions in the set.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// True when the set is one unbroken range (or empty).
    pub fn is_contiguous(&self) -> bool {
        self.ranges.len() <= 1
    }

    pub fn union(&self, other: &Self) -> Self {
        let mut all = self.ranges.clone();
        all.extend_from_slice(&other.ranges);
        Self::from_ranges(all)
    }

    pub fn is_superset(&self, other: &Self) -> bool {
        other
            .ranges
            .iter()
            .all(|&(a, b)| self.ranges.iter().any(|&(c, d)| c <= a && b <= d))
    }

    /// Positions of the set shifted by `-offset`, keeping only those in `offset..offset+len`.
    pub fn window(&self, offset: u64, len: u64) -> Self {
        let end = offset + len; // exclusive
        Self::from_ranges(
            self.ranges
                .iter()
                .filter(|&&(a, b)| b >= offset && a < end)
                .map(|&(a, b)| (a.max(offset) - offset, b.min(end - 1) - offset))
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(a, b)| a..=b)
    }
}
