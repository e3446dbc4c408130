//! Shards: a deterministic partition of a suite's runs for CI jobs
//! (`--shard I/N`). A run's shard depends on its workload, variant and
//! repetition (its *point*), never on its mode, so every mode of a point
//! (the baseline and what is compared with it) runs in one shard, on one
//! CI runner's hardware.
//!
//! Within a workload, its points are ordered by a hash of (variant,
//! repetition) and dealt out in turn, starting at a shard that a hash of
//! the workload's name picks. So:
//!
//! - it is the same on every machine and in every invocation;
//! - each workload's points are spread evenly (shard sizes differ by at
//!   most one point per workload);
//! - adding or removing another workload's runs moves nothing.
//!
//! (Hashing each point to a shard alone would never move a run, but leaves
//! shards very uneven for the tens of points a suite typically has, and the
//! slowest shard sets the CI job's time.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::RunPlan;

/// `I/N`: shard I (1-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}` is not a shard: expected `I/N`, like `2/8` (shard 2 of 8)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 {
            return Err(format!("`{s}`: the shard count must be at least 1"));
        }
        if index == 0 || index > count {
            return Err(format!("`{s}`: shards are numbered 1 to {count}"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    let d = h.finalize();
    let mut k = [0u8; 8];
    k.copy_from_slice(&d[..8]);
    u64::from_le_bytes(k)
}

/// Which shard every point of a suite is in, for `count` shards.
pub struct Assignment {
    count: u32,
    map: HashMap<(String, String, u32), u32>,
}

impl Assignment {
    /// From every run's (workload, variant, repetition); modes repeat
    /// points, which counts them once.
    pub fn new<'a>(points: impl Iterator<Item = (&'a str, String, u32)>, count: u32) -> Assignment {
        let count = count.max(1);
        let mut by_workload: BTreeMap<&str, BTreeSet<(u64, String, u32)>> = BTreeMap::new();
        for (w, v, r) in points {
            let h = hash64(&[v.as_bytes(), &r.to_le_bytes()]);
            by_workload.entry(w).or_default().insert((h, v, r));
        }
        let mut map = HashMap::new();
        for (w, pts) in by_workload {
            let start = hash64(&[w.as_bytes()]) % u64::from(count);
            for (rank, (_, v, r)) in pts.into_iter().enumerate() {
                let i = (start + rank as u64) % u64::from(count);
                map.insert((w.to_string(), v, r), i as u32 + 1);
            }
        }
        Assignment { count, map }
    }

    /// The assignment of an expansion's runs.
    pub fn of_expansion(exp: &crate::expand::Expansion, count: u32) -> Assignment {
        Assignment::new(
            exp.runs.iter().map(|r| {
                (
                    exp.groups[r.group].workload.name.as_str(),
                    r.variant_label(),
                    r.repetition,
                )
            }),
            count,
        )
    }

    /// The shard (1-based) of a point; 0 for one the suite does not have.
    pub fn shard(&self, workload: &str, variant: &str, repetition: u32) -> u32 {
        self.map
            .get(&(workload.to_string(), variant.to_string(), repetition))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `plan` is in shard `s` (of this assignment's count).
    pub fn holds(&self, s: Shard, plan: &RunPlan) -> bool {
        s.count == self.count
            && self.shard(&plan.workload, &plan.variant, plan.repetition) == s.index
    }

    /// How many of `points` each shard gets.
    pub fn sizes<'a>(&self, points: impl Iterator<Item = (&'a str, String, u32)>) -> Vec<usize> {
        let mut sizes = vec![0; self.count as usize];
        for (w, v, r) in points {
            let i = self.shard(w, &v, r);
            if i > 0 {
                sizes[i as usize - 1] += 1;
            }
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_arguments_are_checked() {
        assert_eq!("2/8".parse(), Ok(Shard { index: 2, count: 8 }));
        assert_eq!(" 1 / 1 ".parse(), Ok(Shard { index: 1, count: 1 }));
        for bad in ["0/4", "5/4", "1/0", "a/4", "3", "1/2/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(
            "0/4".parse::<Shard>(),
            Err("`0/4`: shards are numbered 1 to 4".into())
        );
    }

    fn points(spec: &[(&'static str, usize, u32)]) -> Vec<(&'static str, String, u32)> {
        let mut v = Vec::new();
        for &(w, variants, reps) in spec {
            for i in 0..variants {
                for r in 1..=reps {
                    v.push((w, format!("n={i}"), r));
                }
            }
        }
        v
    }

    #[test]
    fn every_point_is_in_one_shard_and_each_workload_is_spread_evenly() {
        for n in 1..=9u32 {
            let pts = points(&[("kv", 6, 5), ("streaming", 2, 2), ("one", 1, 1)]);
            let a = Assignment::new(pts.iter().map(|(w, v, r)| (*w, v.clone(), *r)), n);
            for (w, v, r) in &pts {
                let s = a.shard(w, v, *r);
                assert!((1..=n).contains(&s), "{w} {v} {r} → {s} of {n}");
            }
            for w in ["kv", "streaming", "one"] {
                let mine = pts.iter().filter(|p| p.0 == w);
                let sizes = a.sizes(mine.map(|(w, v, r)| (*w, v.clone(), *r)));
                let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                assert!(
                    hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
                    "{w}, {n}: {sizes:?}"
                );
            }
        }
    }

    #[test]
    fn another_workloads_runs_move_nothing_and_the_order_of_runs_does_not_matter() {
        let pts = points(&[("kv", 6, 5)]);
        let a = Assignment::new(pts.iter().map(|(w, v, r)| (*w, v.clone(), *r)), 4);
        let mut more = points(&[("streaming", 7, 3), ("kv", 6, 5)]);
        more.reverse();
        let b = Assignment::new(more.iter().map(|(w, v, r)| (*w, v.clone(), *r)), 4);
        for (w, v, r) in &pts {
            assert_eq!(a.shard(w, v, *r), b.shard(w, v, *r), "{v} r{r}");
        }
        // Every mode is the same point: repeated points count once.
        let twice = pts.iter().chain(pts.iter());
        let c = Assignment::new(twice.map(|(w, v, r)| (*w, v.clone(), *r)), 4);
        for (w, v, r) in &pts {
            assert_eq!(a.shard(w, v, *r), c.shard(w, v, *r));
        }
        assert_eq!(a.shard("kv", "n=99", 1), 0);
    }
}
