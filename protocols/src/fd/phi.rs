//! Phi-accrual failure detector (Hayashibara, Défago, Yared, Katayama 2004),
//! with Akka's logistic approximation of the normal CDF.
//!
//! Every `heartbeat_interval` each node heartbeats every member. For each
//! peer a sliding window of the last `max_sample_size` inter-arrival times is
//! kept; the suspicion level of a peer silent for `dt` is
//! `phi = -log10(P(an interval longer than dt))` under a normal distribution
//! with `mu' = mean + acceptable_heartbeat_pause` and
//! `sigma = max(sd, min_std_deviation)`, computed as in Akka:
//! `y = (dt - mu')/sigma`, `e = exp(-y(1.5976 + 0.070566 y^2))`,
//! `phi = -log10(e/(1+e))` if `dt > mu'`, else `-log10(1 - 1/(1+e))`.
//! Phi is never NaN; when `e` underflows it is `+infinity`.
//!
//! A peer is `Suspect` when phi > `threshold` and `Down` after a further
//! `grace` with phi still above it; a heartbeat brings it back `Up`. Before
//! the first sample the window is seeded, like Akka's, with intervals of
//! 0.75x and 1.25x `first_heartbeat_estimate`; adding a member counts as a
//! first heartbeat for that clock, but the member is `Joining` until its
//! first real heartbeat makes it `Up`. A `Joining` member whose phi (on the
//! seeded window, from its admission) stays above `threshold` for `grace`
//! goes straight to `Down` (no `Suspect` of a member never up), at the
//! check at which an `Up` member silent since that instant would: the
//! first-contact deadline.
//!
//! When a `Down` peer is heard again its window is reset to that seed, so
//! an outage does not distort the learned distribution; shorter gaps
//! (pauses, suspicions) are recorded, which is how the detector adapts to
//! a jittery peer.
//!
//! Guarantees: strong completeness (a crashed peer's phi grows without bound,
//! so every live node declares it `Down`); accuracy is probabilistic and
//! adapts to the observed jitter. Cost: O(N^2) heartbeats per interval.

use std::collections::VecDeque;
use std::time::Duration;

use troupe_framework::membership::MemberStatus;

use super::{FdId, HeartbeatRule, Heartbeats};

/// Parameters of [`PhiAccrual`] (see [`super::config::PhiAccrualConfig`]):
/// its rule.
#[derive(Debug, Clone, PartialEq)]
pub struct PhiParams {
    /// Suspect when phi exceeds this.
    pub threshold: f64,
    /// Window size (inter-arrival samples kept).
    pub max_sample_size: usize,
    /// Lower bound of the standard deviation.
    pub min_std_deviation: Duration,
    /// Added to the mean interval.
    pub acceptable_heartbeat_pause: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Mean interval assumed before any sample.
    pub first_heartbeat_estimate: Duration,
    /// Time above threshold after `Suspect` before `Down`.
    pub grace: Duration,
    /// How often phi is evaluated.
    pub check_interval: Duration,
}

/// Akka's phi: suspicion level of a peer silent for `time_diff_ms` when
/// intervals have mean `mean_ms` (pause already added) and standard
/// deviation `std_dev_ms` (already clamped, must be > 0).
pub fn phi(time_diff_ms: f64, mean_ms: f64, std_dev_ms: f64) -> f64 {
    let y = (time_diff_ms - mean_ms) / std_dev_ms;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p = if time_diff_ms > mean_ms {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    };
    if p.is_nan() {
        // Only reachable with non-finite inputs; treat as "certainly failed".
        f64::INFINITY
    } else if p > 0.0 {
        p
    } else {
        // -log10(1.0) is -0.0; report +0.0. (Not `p.max(0.0)`: which zero
        // `f64::max` returns for -0.0 and +0.0 is unspecified, and it does
        // return -0.0 here.)
        0.0
    }
}

/// A sliding window of inter-arrival times (microseconds, exact sums).
#[derive(Debug, Clone)]
pub struct HeartbeatHistory {
    max: usize,
    intervals: VecDeque<u64>,
    sum: u128,
    squared_sum: u128,
}

impl HeartbeatHistory {
    /// An empty window holding at most `max` samples (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            intervals: VecDeque::new(),
            sum: 0,
            squared_sum: 0,
        }
    }

    /// Akka's seed: two samples, 0.75x and 1.25x of `estimate`.
    pub fn seeded(max: usize, estimate: Duration) -> Self {
        let mut h = Self::new(max);
        let mean = estimate.as_micros() as u64;
        let sd = mean / 4;
        h.record(Duration::from_micros(mean - sd));
        h.record(Duration::from_micros(mean + sd));
        h
    }

    /// Add one interval, dropping the oldest when full.
    pub fn record(&mut self, interval: Duration) {
        let us = interval.as_micros().min(u64::MAX as u128) as u64;
        if self.intervals.len() == self.max {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old as u128;
                self.squared_sum -= (old as u128) * (old as u128);
            }
        }
        self.intervals.push_back(us);
        self.sum += us as u128;
        self.squared_sum += (us as u128) * (us as u128);
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Mean interval in milliseconds (0 when empty).
    pub fn mean_ms(&self) -> f64 {
        if self.intervals.is_empty() {
            return 0.0;
        }
        self.sum as f64 / self.intervals.len() as f64 / 1000.0
    }

    /// Population standard deviation in milliseconds (0 when empty).
    pub fn std_dev_ms(&self) -> f64 {
        let n = self.intervals.len() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let mean = self.sum as f64 / n;
        let var = (self.squared_sum as f64 / n - mean * mean).max(0.0);
        var.sqrt() / 1000.0
    }
}

/// What the phi-accrual detector keeps per peer.
#[derive(Debug, Clone)]
pub struct Peer {
    history: HeartbeatHistory,
    last: Duration,
    suspect_since: Option<Duration>,
    /// Phi when the peer's status was last decided (the last check, or the
    /// last heartbeat, which brings it back `Up`): what [`PhiAccrual::phis`]
    /// shows next to that status.
    decided_phi: f64,
}

/// The phi-accrual detector core.
pub type PhiAccrual<Id> = Heartbeats<Id, PhiParams>;

impl<Id: FdId> PhiAccrual<Id> {
    /// The phi of `peer` at `now` (None if unknown): it rises continuously
    /// between heartbeats, while the status changes only at checks.
    pub fn phi_of(&self, now: Duration, peer: &Id) -> Option<f64> {
        self.roster
            .peers
            .get(peer)
            .map(|(_, p)| peer_phi(&self.rule, now, p))
    }

    /// The phi of every known peer when its status was last decided (at
    /// the last check, every `check_interval`, or the last heartbeat),
    /// ordered by id: the value that belongs next to the status. Phi *now*
    /// can already be above `threshold` while the peer is still `Up` until
    /// the next check; shown side by side that looks like a bug. For
    /// dashboards.
    pub fn phis(&self) -> Vec<(Id, f64)> {
        self.roster
            .peers
            .iter()
            .map(|(id, (_, p))| (id.clone(), p.decided_phi))
            .collect()
    }
}

/// Phi of peer `p` at `now` under `params`.
fn peer_phi(params: &PhiParams, now: Duration, p: &Peer) -> f64 {
    let dt = now.saturating_sub(p.last).as_secs_f64() * 1000.0;
    let mean = p.history.mean_ms() + params.acceptable_heartbeat_pause.as_secs_f64() * 1000.0;
    let sd = p
        .history
        .std_dev_ms()
        .max(params.min_std_deviation.as_secs_f64() * 1000.0);
    phi(dt, mean, sd)
}

impl HeartbeatRule for PhiParams {
    const KIND: &'static str = "phi-accrual";
    type Peer = Peer;

    fn fresh(&self, now: Duration) -> Peer {
        Peer {
            history: HeartbeatHistory::seeded(self.max_sample_size, self.first_heartbeat_estimate),
            last: now,
            suspect_since: None,
            decided_phi: 0.0,
        }
    }

    fn heard(&self, now: Duration, status: MemberStatus, p: &mut Peer) {
        if status == MemberStatus::Down {
            p.history = self.fresh(now).history;
        } else if now > p.last {
            p.history.record(now - p.last);
        }
        p.last = now;
        p.suspect_since = None;
        p.decided_phi = peer_phi(self, now, p);
    }

    fn decide(&self, now: Duration, status: MemberStatus, p: &mut Peer) -> Option<MemberStatus> {
        p.decided_phi = peer_phi(self, now, p);
        let above = p.decided_phi > self.threshold;
        if status == MemberStatus::Joining {
            // Never heard from: the same clock as a peer that heartbeated
            // when it was added (above the threshold, then `grace`), but
            // without reporting a suspicion of a peer that was never up.
            return match p.suspect_since {
                _ if !above => {
                    p.suspect_since = None;
                    None
                }
                None => {
                    p.suspect_since = Some(now);
                    None
                }
                Some(since) if now.saturating_sub(since) >= self.grace => Some(MemberStatus::Down),
                Some(_) => None,
            };
        }
        match (status, p.suspect_since) {
            (MemberStatus::Up, _) if above => Some(MemberStatus::Suspect),
            (MemberStatus::Suspect, Some(since))
                if above && now.saturating_sub(since) >= self.grace =>
            {
                Some(MemberStatus::Down)
            }
            (MemberStatus::Suspect, _) if !above => Some(MemberStatus::Up),
            _ => None,
        }
    }

    fn changed(&self, now: Duration, status: MemberStatus, p: &mut Peer) {
        p.suspect_since = match status {
            MemberStatus::Suspect => Some(now),
            MemberStatus::Up => None,
            _ => p.suspect_since,
        };
    }

    fn periods(&self) -> (Duration, Duration) {
        (self.heartbeat_interval, self.check_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd::config::PhiAccrualConfig;
    use crate::fd::{FdMessage, FdOutputs, FdTimer, SimId};
    use troupe_framework::membership::FailureDetector;
    use troupe_framework::sansio::Protocol;

    #[test]
    fn phi_known_values() {
        assert!((phi(1000.0, 1000.0, 100.0) - 0.301).abs() < 0.001);
        assert!((phi(1200.0, 1000.0, 100.0) - 1.643).abs() < 0.001);
        assert_eq!(phi(1e9, 1000.0, 100.0), f64::INFINITY);
        assert_eq!(phi(0.0, 1e9, 100.0), 0.0);
        assert!(!phi(f64::INFINITY, 1000.0, 100.0).is_nan());
    }

    /// No silence, no suspicion: phi is +0.0, never -0.0 (which a status
    /// page or JSON would show as "-0.0"), whatever `f64::max` does with
    /// zeros of both signs.
    #[test]
    fn phi_at_zero_elapsed_time_is_positive_zero() {
        let params = PhiAccrualConfig::default().params();
        let mut d = PhiAccrual::new(SimId::new(0), params);
        let mut out = FdOutputs::new();
        let peer = SimId::new(1);
        d.add_member(Duration::ZERO, peer, &mut out);
        let at = Duration::from_secs(1);
        d.on_message(at, peer, FdMessage::Heartbeat { seq: 1 }, &mut out);
        let reported = [
            d.phi_of(at, &peer).expect("known"),
            d.phis()[0].1,
            phi(0.0, 4000.0, 100.0),
            phi(std::hint::black_box(0.0), 1000.0, 250.0),
        ];
        for p in reported {
            assert!(
                p.is_sign_positive() && format!("{p:.2}") == "0.00",
                "phi {p} ({:?}) at zero elapsed time",
                format!("{p:.2}")
            );
        }
    }

    #[test]
    fn phi_grows_with_silence() {
        let mut last = -1.0;
        for dt in (0..20_000).step_by(250) {
            let p = phi(dt as f64, 4000.0, 200.0);
            assert!(p >= last, "phi must not decrease: {p} after {last} at {dt}");
            last = p;
        }
    }

    #[test]
    fn window_is_bounded_and_seeded() {
        let h = HeartbeatHistory::seeded(1000, Duration::from_secs(1));
        assert_eq!(h.len(), 2);
        assert!((h.mean_ms() - 1000.0).abs() < 1e-9);
        assert!((h.std_dev_ms() - 250.0).abs() < 1e-9);
        let mut h = HeartbeatHistory::new(3);
        for ms in [100, 200, 300, 400, 500] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.len(), 3);
        assert!((h.mean_ms() - 400.0).abs() < 1e-9);
    }

    /// A detector of member 0 that heard `beats` heartbeats from member 1,
    /// one a second from t = 1 s.
    fn beating(params: PhiParams, beats: u64) -> (PhiAccrual<SimId>, FdOutputs<SimId>) {
        let mut d = PhiAccrual::new(SimId::new(0), params);
        let mut out = FdOutputs::new();
        d.add_member(Duration::ZERO, SimId::new(1), &mut out);
        for s in 1..=beats {
            let beat = FdMessage::Heartbeat { seq: s };
            d.on_message(Duration::from_secs(s), SimId::new(1), beat, &mut out);
        }
        (d, out)
    }

    #[test]
    fn min_std_deviation_clamps() {
        let mut params = PhiAccrualConfig::default().params();
        params.acceptable_heartbeat_pause = Duration::ZERO;
        // Perfectly regular heartbeats: sd of the window tends to 0 but the
        // 100 ms floor is used.
        let (d, _) = beating(params, 2000);
        let now = Duration::from_secs(2000) + Duration::from_millis(1200);
        let p = d.phi_of(now, &SimId::new(1)).expect("known");
        assert!((p - 1.643).abs() < 0.001, "phi {p}");
    }

    #[test]
    fn crash_goes_suspect_then_down_after_grace() {
        let (mut d, mut out) = beating(PhiAccrualConfig::default().params(), 10);
        out.events.clear();
        let mut t = Duration::from_secs(10);
        while t < Duration::from_secs(30) {
            t += Duration::from_millis(100);
            d.check(t, &mut out);
        }
        let ev: Vec<_> = out.events.iter().map(|e| (e.status, e.at)).collect();
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[0].0, MemberStatus::Suspect);
        assert_eq!(ev[1].0, MemberStatus::Down);
        assert_eq!(ev[1].1 - ev[0].1, Duration::from_secs(4));
        // Suspect roughly at mean + pause + ~5 sigma after the last heartbeat.
        let since_last = ev[0].1 - Duration::from_secs(10);
        assert!(
            since_last > Duration::from_secs(4) && since_last < Duration::from_secs(6),
            "{since_last:?}"
        );
        assert_eq!(
            d.phi_of(Duration::from_secs(10_000), &SimId::new(1)),
            Some(f64::INFINITY)
        );
    }

    /// A peer never heard from is `Joining` and goes straight to `Down` at
    /// the very check at which a peer that heartbeated when it was added
    /// goes `Down` (after its `Suspect`): with the defaults, phi on the
    /// seeded window passes 8 at 5.4 s and `Down` follows 4 s later.
    #[test]
    fn a_peer_never_heard_from_goes_down_when_one_silent_since_start_would() {
        let run = |heard: bool| {
            let params = PhiAccrualConfig::default().params();
            let mut d = PhiAccrual::new(SimId::new(0), params);
            let mut out = FdOutputs::new();
            d.add_member(Duration::ZERO, SimId::new(1), &mut out);
            if heard {
                let hb = FdMessage::Heartbeat { seq: 1 };
                d.on_message(Duration::ZERO, SimId::new(1), hb, &mut out);
            }
            for ms in (100..=12_000).step_by(100) {
                d.on_timer(Duration::from_millis(ms), FdTimer::Check, &mut out);
            }
            out.events
                .iter()
                .map(|e| (e.status, e.at.as_millis() as u64))
                .collect::<Vec<_>>()
        };
        use MemberStatus::*;
        assert_eq!(
            run(true),
            vec![(Joining, 0), (Up, 0), (Suspect, 5400), (Down, 9400)]
        );
        assert_eq!(run(false), vec![(Joining, 0), (Down, 9400)]);
    }

    /// `phis` shows the phi each status was decided on: never an `Up` peer
    /// above the threshold (phi *now* is, between a check and the next),
    /// never a suspected one below it; a heartbeat brings both back.
    #[test]
    fn phis_agree_with_the_status_they_decided() {
        let params = PhiAccrualConfig::default().params();
        let threshold = params.threshold;
        let check = params.check_interval;
        let mut d = PhiAccrual::new(SimId::new(0), params);
        let mut out = FdOutputs::new();
        let peer = SimId::new(1);
        d.add_member(Duration::ZERO, peer, &mut out);
        for s in 1..=10u64 {
            let hb = FdMessage::Heartbeat { seq: s };
            d.on_message(Duration::from_secs(s), peer, hb, &mut out);
        }
        let shown = |d: &PhiAccrual<SimId>| d.phis()[0].1;
        let mut t = Duration::from_secs(10);
        let mut ahead_of_check = false;
        while d.view()[0].1 != MemberStatus::Down {
            // Between two checks: phi now may pass the threshold first.
            let between = t + check / 2;
            let now_phi = d.phi_of(between, &peer).unwrap();
            if now_phi > threshold && d.view()[0].1 == MemberStatus::Up {
                ahead_of_check = true;
                assert!(shown(&d) <= threshold, "Up shown with phi {}", shown(&d));
            }
            t += check;
            d.on_timer(t, FdTimer::Check, &mut out);
            match d.view()[0].1 {
                MemberStatus::Up => assert!(shown(&d) <= threshold),
                _ => assert!(shown(&d) > threshold, "suspected with {}", shown(&d)),
            }
        }
        assert!(ahead_of_check, "phi now never ran ahead of a check");
        let hb = FdMessage::Heartbeat { seq: 11 };
        d.on_message(t + check / 2, peer, hb, &mut out);
        assert_eq!(d.view()[0].1, MemberStatus::Up);
        assert!(shown(&d) < 1.0, "{}", shown(&d));
    }
}
