//! Phi-accrual: Akka's formula against known values, window behaviour,
//! min-std clamping and the infinity case, through the public API.

use std::time::Duration;

use troupe_framework::membership::FailureDetector;
use troupe_framework::sansio::Protocol;
use troupe_protocols::fd::config::PhiAccrualConfig;
use troupe_protocols::fd::phi::{phi, HeartbeatHistory};
use troupe_protocols::fd::{FdMessage, FdOutputs, PhiAccrual, SimId};

#[test]
fn known_values() {
    assert!((phi(1000.0, 1000.0, 100.0) - 0.301).abs() < 5e-4);
    assert!((phi(1200.0, 1000.0, 100.0) - 1.643).abs() < 5e-4);
    assert!(phi(1100.0, 1000.0, 100.0) > 0.301 && phi(1100.0, 1000.0, 100.0) < 1.643);
}

#[test]
fn huge_gap_is_infinity_not_nan() {
    let p = phi(1.0e7, 1000.0, 100.0);
    assert!(p.is_infinite() && p > 0.0, "{p}");
    assert!(!phi(f64::MAX, 0.0, 100.0).is_nan());
    assert_eq!(phi(0.0, 1.0e7, 100.0), 0.0);
}

#[test]
fn window_slides() {
    let mut h = HeartbeatHistory::new(4);
    for ms in [1000, 1000, 1000, 1000] {
        h.record(Duration::from_millis(ms));
    }
    assert!((h.mean_ms() - 1000.0).abs() < 1e-9);
    assert!(h.std_dev_ms() < 1e-9);
    for _ in 0..4 {
        h.record(Duration::from_millis(2000));
    }
    assert_eq!(h.len(), 4);
    assert!((h.mean_ms() - 2000.0).abs() < 1e-9);
}

fn detector_with_intervals(ms: &[u64]) -> (PhiAccrual<SimId>, Duration) {
    let mut params = PhiAccrualConfig::default().params();
    params.acceptable_heartbeat_pause = Duration::ZERO;
    params.max_sample_size = 10;
    let mut d = PhiAccrual::new(SimId::new(0), params);
    let mut out = FdOutputs::new();
    d.add_member(Duration::ZERO, SimId::new(1), &mut out);
    let mut t = Duration::ZERO;
    for (i, m) in ms.iter().enumerate() {
        t += Duration::from_millis(*m);
        d.on_message(
            t,
            SimId::new(1),
            FdMessage::Heartbeat { seq: i as u64 },
            &mut out,
        );
    }
    (d, t)
}

#[test]
fn regular_heartbeats_use_the_min_std_deviation() {
    // 10 identical intervals fill the window (seed samples slid out): sd 0,
    // clamped to 100 ms, so phi(1200 ms) is the known 1.643.
    let (d, t) = detector_with_intervals(&[1000; 12]);
    let p = d
        .phi_of(t + Duration::from_millis(1200), &SimId::new(1))
        .unwrap_or(f64::NAN);
    assert!((p - 1.643).abs() < 5e-4, "{p}");
}

#[test]
fn jittery_heartbeats_raise_tolerance() {
    let (steady, t1) = detector_with_intervals(&[1000; 12]);
    let (jittery, t2) = detector_with_intervals(&[
        600, 1400, 600, 1400, 600, 1400, 600, 1400, 600, 1400, 600, 1400,
    ]);
    let gap = Duration::from_millis(1500);
    let ps = steady.phi_of(t1 + gap, &SimId::new(1)).unwrap_or(f64::NAN);
    let pj = jittery.phi_of(t2 + gap, &SimId::new(1)).unwrap_or(f64::NAN);
    assert!(
        pj < ps,
        "jittery {pj} should be less suspicious than steady {ps}"
    );
}
