//! NACK-based reliable multicast under seeded chaos: loss, duplication,
//! reordering, partitions that heal, crash and restart with unsynced writes
//! lost, and one member crashing for good mid-send. Integrity and FIFO are
//! checked on every delivery at every step, uniform agreement, validity and
//! drained hold-back queues after healing (see
//! `troupe_protocols::testkit::broadcast`). Failing seeds replay with
//! `TROUPE_SEED=<seed>`.
//!
//! Two targeted scenarios besides: feedback suppression (one loss shared by
//! several receivers costs fewer NACKs than receivers) and repair by a
//! member other than the origin (the origin crashes for good after a single
//! member got its message).

use std::time::Duration;

use troupe_protocols::broadcast::{BroadcastConfig, BroadcastCore, Engine, Nack};
use troupe_protocols::testkit::broadcast::{run_broadcast, OrderChecks};
use troupe_protocols::testkit::{check_seeds, ms, seeds, NetFaults, OracleConfig, Sim};

mod broadcast_common;

#[test]
fn nack_multicast_agrees_in_fifo_order_under_chaos() {
    let checks = OrderChecks {
        fifo: true,
        ..OrderChecks::default()
    };
    broadcast_common::run_suite(
        "nack_multicast_agrees_in_fifo_order_under_chaos",
        checks,
        |seed, sc| {
            run_broadcast(seed, sc, move |id, m, s| {
                Nack::new(id, m, Default::default(), s).with_rng_seed(seed)
            })
        },
    );
}

/// A group of `n` on a reliable network with a 5 ms one-way delay.
fn group(n: u32, seed: u64) -> Sim<Nack<u32>> {
    let members: Vec<u32> = (1..=n).collect();
    let m2 = members.clone();
    let mut sim = Sim::new(
        seed,
        members,
        Box::new(move |id, _| {
            Nack::new(*id, m2.clone(), BroadcastConfig::default(), None).with_rng_seed(seed)
        }),
        NetFaults::reliable(ms(5)),
        OracleConfig::default(),
    );
    sim.start(&mut ()).unwrap();
    sim
}

fn delivered(sim: &Sim<Nack<u32>>, id: u32) -> u64 {
    sim.core(&id).map_or(0, |c| c.stats().delivered)
}

/// Member 1's message is lost on its way to every other member but 2 (one
/// loss, `n - 2 = 10` receivers missing it). Member 1 broadcasts a second
/// message that arrives, so each of them detects the gap at about the same
/// time; NACKs are multicast, and a member that hears one for its gap
/// backs off. Over 30 seeds, the NACKs sent must be well below one per
/// receiver missing the message, and every member must deliver both.
#[test]
fn a_shared_loss_costs_fewer_nacks_than_receivers() {
    let n = 12u32;
    let mut nacks = 0;
    let mut suppressed = 0;
    let mut runs = 0u64;
    check_seeds(
        "a_shared_loss_costs_fewer_nacks_than_receivers",
        30,
        |seed| {
            let mut sim = group(n, seed);
            for to in 3..=n {
                sim.block(&1, &to, &mut ())?;
            }
            sim.command(&1, &mut (), |c, now, o| c.broadcast(vec![1], now, o))?;
            sim.heal(&mut ())?;
            sim.command(&1, &mut (), |c, now, o| c.broadcast(vec![2], now, o))?;
            sim.run_for(Duration::from_secs(3), &mut ())?;
            for m in 1..=n {
                if delivered(&sim, m) != 2 {
                    return Err(format!("member {m} delivered {}", delivered(&sim, m)));
                }
            }
            let sent: u64 = sim.cores().map(|(_, c)| c.nack_stats().nacks).sum();
            nacks += sent;
            suppressed += sim
                .cores()
                .map(|(_, c)| c.nack_stats().suppressed)
                .sum::<u64>();
            runs += 1;
            // Never more NACKs than receivers missing the message.
            if sent > u64::from(n - 2) {
                return Err(format!("{sent} NACKs for {} receivers missing", n - 2));
            }
            Ok(())
        },
    );
    eprintln!(
        "shared loss, {} receivers missing: {nacks} NACKs, {suppressed} suppressed over {runs} runs",
        n - 2
    );
    if seeds(30).len() < 30 {
        return;
    }
    // Well under one NACK per receiver missing the message, and under 3
    // per run: measured 61 NACKs in 30 runs (~2 per run); with the
    // back-off on hearing a NACK removed, 112 (~3.7 per run: the origin's
    // quick repair then is the only thing that stops the later timers).
    assert!(
        nacks * 2 < runs * u64::from(n - 2) && nacks < 3 * runs,
        "{nacks} NACKs in {runs} runs of {} receivers missing",
        n - 2
    );
    assert!(suppressed >= runs, "suppressed {suppressed} in {runs} runs");
}

/// The origin's message reaches member 2 only, then the origin crashes for
/// good. The others learn from 2's sessions that the message exists, NACK
/// it, and 2 repairs it: every survivor delivers it. Without repair by
/// members other than the origin, nobody would ever send it again.
#[test]
fn a_crashed_origins_message_is_repaired_by_the_member_that_holds_it() {
    check_seeds(
        "a_crashed_origins_message_is_repaired_by_the_member_that_holds_it",
        20,
        |seed| {
            let n = 5u32;
            let mut sim = group(n, seed);
            for to in 3..=n {
                sim.block(&1, &to, &mut ())?;
            }
            sim.command(&1, &mut (), |c, now, o| c.broadcast(vec![9], now, o))?;
            sim.run_for(ms(10), &mut ())?;
            if delivered(&sim, 2) != 1 {
                return Err("member 2 did not get the message".into());
            }
            sim.crash(&1, &mut ())?;
            sim.heal(&mut ())?;
            sim.run_for(Duration::from_secs(5), &mut ())?;
            for m in 2..=n {
                if delivered(&sim, m) != 1 {
                    return Err(format!(
                        "member {m} never delivered the crashed origin's message"
                    ));
                }
            }
            let repairs = sim.core(&2).map_or(0, |c| c.nack_stats().repairs);
            if repairs == 0 {
                return Err("member 2 sent no repair".into());
            }
            Ok(())
        },
    );
}
