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
    fn rfc3339_has_milliseconds() {
        let s = Stamp {
            wall_ns: 1_795_383_000_123_456_789,
            mono_ns: 0,
        };
        assert_eq!(s.rfc3339(), "2026-11-22T21:30:00.123Z");
    }
}
