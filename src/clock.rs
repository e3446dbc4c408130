//! Timestamps on two clocks: the wall clock (for people and for lining up
//! with other machines) and `CLOCK_MONOTONIC` (for durations, and comparable
//! with timestamps that processes on the same machine take themselves).

use std::time::{SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One instant on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stamp {
    /// Nanoseconds since the Unix epoch (controller wall clock).
    pub wall_ns: u64,
    /// Nanoseconds of the controller's `CLOCK_MONOTONIC`.
    pub mono_ns: u64,
}

impl Stamp {
    pub fn now() -> Stamp {
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Stamp {
            wall_ns,
            mono_ns: monotonic_ns(),
        }
    }

    /// Milliseconds from `self` to `later` on the monotonic clock.
    pub fn ms_until(&self, later: &Stamp) -> u64 {
        later.mono_ns.saturating_sub(self.mono_ns) / 1_000_000
    }

    /// `2026-11-22T21:30:00.123Z`.
    pub fn rfc3339(&self) -> String {
        let secs = self.wall_ns / 1_000_000_000;
        let ms = (self.wall_ns / 1_000_000) % 1000;
        let t = crate::artifact::utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        // utc_timestamp is `YYYYMMDDTHHMMSSZ`.
        format!(
            "{}-{}-{}T{}:{}:{}.{ms:03}Z",
            &t[0..4],
            &t[4..6],
            &t[6..8],
            &t[9..11],
            &t[11..13],
            &t[13..15]
        )
    }
}

/// A remote clock against the controller's wall clock, NTP-style: the
/// remote time is assumed read halfway through the round trip, so the error
/// is at most half of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClockOffset {
    /// Remote minus controller, nanoseconds.
    pub offset_ns: i64,
    /// The offset is right within ± this many nanoseconds (rtt/2).
    pub bound_ns: u64,
    /// Round trip of the probe the offset comes from.
    pub rtt_ns: u64,
    /// Probes taken; the one with the shortest round trip wins.
    pub probes: u32,
    /// When it was measured: controller wall clock at the middle of the
    /// winning probe, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub at_ns: u64,
}

/// A host's wall-clock instant on the controller's wall clock, with its
/// error bound: the host's offset is interpolated between the run's
/// measurements before and after (so a clock that drifts through a long
/// run is followed), or taken from the one there is.
pub fn to_controller(
    host_ns: u64,
    before: Option<&ClockOffset>,
    after: Option<&ClockOffset>,
) -> Option<(u64, u64)> {
    let h = i128::from(host_ns);
    let (offset, bound) = match (before, after) {
        (Some(b), Some(a)) if a.at_ns > b.at_ns => {
            // offset(c) = ob + d (c - tb) / span, and c = h - offset(c):
            // solved for c, then held to the span.
            let (ob, oa) = (i128::from(b.offset_ns), i128::from(a.offset_ns));
            let (tb, ta) = (i128::from(b.at_ns), i128::from(a.at_ns));
            let (span, d) = (ta - tb, oa - ob);
            let bound = b.bound_ns.max(a.bound_ns);
            let offset = if span + d <= 0 {
                ob
            } else {
                let c = ((h - ob) * span + d * tb) / (span + d);
                if c <= tb {
                    ob
                } else if c >= ta {
                    oa
                } else {
                    h - c
                }
            };
            (offset, bound)
        }
        (Some(o), _) | (None, Some(o)) => (i128::from(o.offset_ns), o.bound_ns),
        (None, None) => return None,
    };
    let c = u64::try_from(h - offset).ok()?;
    Some((c, bound))
}

/// [`to_controller`] over every measurement of a run (before, samples
/// through it, after; in time order): the offset is interpolated between
/// the two measurements around the instant, so a long run follows its
/// host's drift piece by piece.
pub fn to_controller_points(host_ns: u64, points: &[&ClockOffset]) -> Option<(u64, u64)> {
    match points {
        [] => None,
        [one] => to_controller(host_ns, Some(one), None),
        _ => {
            // The pair whose span holds the instant; before the first, the
            // first pair holds it (flat), after the last, the last.
            let mut last = None;
            // A handful of points a day: a walk is enough.
            for w in points.windows(2) {
                let r = to_controller(host_ns, Some(w[0]), Some(w[1]));
                if let Some((c, _)) = r
                    && c <= w[1].at_ns
                {
                    return r;
                }
                last = r;
            }
            last
        }
    }
}

/// What one probe saw: controller wall time before and after, and the
/// remote wall time read in between.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub before_ns: u64,
    pub remote_ns: u64,
    pub after_ns: u64,
}

/// The best estimate from a set of probes (shortest round trip).
pub fn best_offset(probes: &[Probe]) -> Option<ClockOffset> {
    let best = probes
        .iter()
        .filter(|p| p.after_ns >= p.before_ns)
        .min_by_key(|p| p.after_ns - p.before_ns)?;
    let rtt = best.after_ns - best.before_ns;
    let mid = i128::from(best.before_ns) + i128::from(rtt / 2);
    let offset = i128::from(best.remote_ns) - mid;
    Some(ClockOffset {
        offset_ns: i64::try_from(offset).unwrap_or(i64::MAX),
        bound_ns: rtt / 2,
        rtt_ns: rtt,
        probes: probes.len() as u32,
        at_ns: u64::try_from(mid).unwrap_or(0),
    })
}

fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let ns = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
            u64::try_from(ns).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let a = Stamp::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = Stamp::now();
        assert!(b.mono_ns > a.mono_ns);
        assert!(a.ms_until(&b) >= 5);
        assert_eq!(b.ms_until(&a), 0);
    }

    #[test]
    fn the_offset_comes_from_the_shortest_round_trip() {
        let probes = [
            Probe {
                before_ns: 1_000,
                remote_ns: 50_000,
                after_ns: 9_000,
            },
            // rtt 2000, midpoint 11_000, remote 61_000: offset 50_000 ± 1000
            Probe {
                before_ns: 10_000,
                remote_ns: 61_000,
                after_ns: 12_000,
            },
            Probe {
                before_ns: 20_000,
                remote_ns: 90_000,
                after_ns: 26_000,
            },
        ];
        let o = best_offset(&probes).expect("an offset");
        assert_eq!(
            o,
            ClockOffset {
                offset_ns: 50_000,
                bound_ns: 1_000,
                rtt_ns: 2_000,
                probes: 3,
                at_ns: 11_000,
            }
        );
        assert_eq!(best_offset(&[]), None);
    }

    #[test]
    fn host_times_follow_a_drifting_clock_between_the_two_measurements() {
        let at = |at_ns, offset_ns, bound_ns| ClockOffset {
            offset_ns,
            bound_ns,
            rtt_ns: 2 * bound_ns,
            probes: 8,
            at_ns,
        };
        // The host runs 1000 ns ahead at t=1e6 and 3000 ns ahead at t=2e6.
        let (b, a) = (at(1_000_000, 1_000, 50), at(2_000_000, 3_000, 70));
        assert_eq!(
            to_controller(1_001_000, Some(&b), Some(&a)),
            Some((1_000_000, 70))
        );
        assert_eq!(
            to_controller(1_502_000, Some(&b), Some(&a)),
            Some((1_500_000, 70))
        );
        assert_eq!(
            to_controller(2_003_000, Some(&b), Some(&a)),
            Some((2_000_000, 70))
        );
        // Outside the span the nearest measurement holds.
        assert_eq!(
            to_controller(5_003_000, Some(&b), Some(&a)),
            Some((5_000_000, 70))
        );
        assert_eq!(to_controller(5_000, Some(&b), None), Some((4_000, 50)));
        assert_eq!(to_controller(5_000, None, Some(&a)), Some((2_000, 70)));
        assert_eq!(to_controller(5_000, None, None), None);
    }

    #[test]
    fn samples_through_a_run_are_followed_piece_by_piece() {
        let at = |at_ns: u64, offset_ns: i64| ClockOffset {
            offset_ns,
            bound_ns: 10,
            rtt_ns: 20,
            probes: 5,
            at_ns,
        };
        // The offset goes 0 → 1000 over the first half, then stays.
        let (b, m, a) = (at(1_000, 0), at(2_000, 1_000), at(3_000, 1_000));
        let pts = [&b, &m, &a];
        // Halfway through the first piece: offset 500.
        assert_eq!(to_controller_points(2_000, &pts), Some((1_500, 10)));
        // In the second piece the offset is flat 1000; before/after alone
        // would have said 750 here.
        assert_eq!(to_controller_points(3_500, &pts), Some((2_500, 10)));
        assert_eq!(to_controller(3_500, Some(&b), Some(&a)), Some((2_666, 10)));
        assert_eq!(to_controller_points(3_500, &[&b]), Some((3_500, 10)));
        assert_eq!(to_controller_points(3_500, &[]), None);
    }

    #[test]
    fn rfc3339_has_milliseconds() {
        let s = Stamp {
            wall_ns: 1_795_383_000_123_456_789,
            mono_ns: 0,
        };
        assert_eq!(s.rfc3339(), "2026-11-22T21:30:00.123Z");
    }
}
