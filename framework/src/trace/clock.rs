//! The clock a [`super::FileTraceSink`] stamps records with on the node's
//! thread, and the mapping of its readings to wall-clock time.
//!
//! Guarantees: [`Span::micros`] maps the stamps taken between two paired
//! readings into the wall-clock interval of those readings, monotonically.

/// What a [`FileTraceSink`] stamps its records with, read on the node's
/// thread for every line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) enum Clock {
    /// The CPU's time-stamp counter (x86-64, when the kernel itself keeps
    /// time with it, so it is invariant and synchronized across cores):
    /// about a third of the cost of a wall-clock read on a VM. The writer
    /// maps it to wall-clock time (see [`Span`]).
    Tsc,
    /// Wall-clock nanoseconds since the Unix epoch.
    Wall,
}

impl Clock {
    /// The TSC where the kernel's clock source is the TSC, else the wall
    /// clock (decided once per process).
    pub(super) fn detect() -> Self {
        static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
        *CLOCK.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let source = std::fs::read_to_string(
                    "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                );
                if source.is_ok_and(|s| s.trim() == "tsc") {
                    return Clock::Tsc;
                }
            }
            Clock::Wall
        })
    }

    #[inline]
    pub(super) fn read(self) -> u64 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `rdtsc` has no preconditions (x86-64 always has it).
            Clock::Tsc => unsafe { core::arch::x86_64::_rdtsc() },
            _ => now_ns(),
        }
    }

    /// A reading of this clock and of the wall clock at the same moment.
    pub(super) fn pair(self) -> Pair {
        if self == Clock::Wall {
            let w = now_ns();
            return Pair { raw: w, wall_ns: w };
        }
        // The wall clock between two counter reads, the tightest of a few
        // tries (the thread may be preempted between the reads).
        let mut best = (u64::MAX, Pair { raw: 0, wall_ns: 0 });
        for _ in 0..4 {
            let a = self.read();
            let wall_ns = now_ns();
            let b = self.read();
            let width = b.wrapping_sub(a);
            if width < best.0 {
                best = (
                    width,
                    Pair {
                        raw: a + width / 2,
                        wall_ns,
                    },
                );
            }
            // ~10 us at any plausible counter rate.
            if width < 30_000 {
                break;
            }
        }
        best.1
    }
}

/// A [`Clock`] reading and the wall-clock time (ns since the epoch) it
/// stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pair {
    pub(super) raw: u64,
    pub(super) wall_ns: u64,
}

/// Maps the raw stamps of the records of one batch to wall-clock
/// microseconds: linearly between the pair taken when the writer took the
/// previous batch and the pair taken when it took this one, clamped to that
/// interval (every record of the batch was stamped within it, give or take
/// a preemption between a stamp and its append).
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    from: Pair,
    to: Pair,
    /// Wall-clock ns per raw tick.
    scale: f64,
    wall: bool,
}

impl Span {
    /// A span from `from` with no end reading (the records after a binary
    /// trace's last `CLOCK`: its node stopped before the writer took another
    /// reading), at the rate `like` measured.
    pub(super) fn open(clock: Clock, from: Pair, like: Option<Span>) -> Self {
        Self {
            from,
            to: Pair {
                raw: u64::MAX,
                wall_ns: u64::MAX,
            },
            scale: like.map_or(0.0, |s| s.scale),
            wall: clock == Clock::Wall,
        }
    }

    pub(super) fn new(clock: Clock, from: Pair, to: Pair) -> Self {
        let ticks = to.raw.saturating_sub(from.raw);
        let ns = to.wall_ns.saturating_sub(from.wall_ns);
        Self {
            from,
            to,
            scale: if ticks == 0 {
                0.0
            } else {
                ns as f64 / ticks as f64
            },
            wall: clock == Clock::Wall,
        }
    }

    /// The reading it starts from.
    pub(super) fn from(&self) -> Pair {
        self.from
    }

    #[inline]
    pub(super) fn micros(self, raw: u64) -> u64 {
        let ns = if self.wall {
            raw
        } else if raw <= self.from.raw || self.to.wall_ns <= self.from.wall_ns {
            // Before the interval, or the wall clock went back: its start
            // (its end if it went back).
            if self.to.wall_ns <= self.from.wall_ns {
                self.to.wall_ns
            } else {
                self.from.wall_ns
            }
        } else if raw >= self.to.raw {
            self.to.wall_ns
        } else {
            let off = ((raw - self.from.raw) as f64 * self.scale) as u64;
            (self.from.wall_ns + off).min(self.to.wall_ns)
        };
        ns / 1000
    }
}

pub(super) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

pub(super) fn now_us() -> u64 {
    now_ns() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_interpolates_within_its_pair_of_readings() {
        let from = Pair {
            raw: 1_000,
            wall_ns: 5_000_000,
        };
        let to = Pair {
            raw: 3_000,
            wall_ns: 9_000_000,
        };
        let s = Span::new(Clock::Tsc, from, to);
        assert_eq!(s.micros(0), 5_000);
        assert_eq!(s.micros(1_000), 5_000);
        assert_eq!(s.micros(2_000), 7_000);
        assert_eq!(s.micros(2_999), 8_998);
        assert_eq!(s.micros(3_000), 9_000);
        assert_eq!(s.micros(u64::MAX), 9_000);
        let mut last = 0;
        for raw in (0..4_000).step_by(7) {
            let t = s.micros(raw);
            assert!(t >= last);
            last = t;
        }
        // A wall clock that went back: the later reading for all.
        let back = Span::new(
            Clock::Tsc,
            to,
            Pair {
                raw: 4_000,
                wall_ns: 1_000,
            },
        );
        assert_eq!(back.micros(3_500), 1);
        // No time between the readings.
        let same = Span::new(Clock::Tsc, from, from);
        assert_eq!(same.micros(1_000), 5_000);
        // Wall-clock stamps are the time already.
        let wall = Span::new(Clock::Wall, from, to);
        assert_eq!(wall.micros(123_456_789), 123_456);
    }
}
