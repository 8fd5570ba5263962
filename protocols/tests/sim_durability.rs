//! The simulator keeps the durability contract the production driver keeps,
//! and makes protocols face its failure mode:
//!
//! - with syncs that take time, no message and no event leaves before the
//!   writes it depends on are on the simulated disk — checked end to end (a
//!   receiver never hears of a record its sender's disk does not hold) and
//!   on the simulator's durability record;
//! - a crash loses writes that were not yet synced (a seeded choice keeps or
//!   loses the sync in flight, whole), and a restarted core is rebuilt from
//!   the disk alone: its next append must follow the disk's last record;
//! - keyed timers: setting an equal timer replaces it, cancelling removes it.
//!
//! Failing seeds replay with `TROUPE_SEED=<seed>`.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_framework::sansio::{Outputs, Protocol, Recovered};
use troupe_protocols::testkit::{
    check_durability_order, check_seeds, ms, DiskModel, DurabilityRecord, NetFaults, Observer,
    OracleConfig, Sim, SimProtocol,
};

/// Appends a record per command and tells every peer; remembers who told
/// it what.
#[derive(Debug)]
struct Journal {
    me: u32,
    peers: Vec<u32>,
    last: u64,
    heard: BTreeMap<u32, Vec<u64>>,
    fired: Vec<(Duration, u8)>,
}

type Out = Outputs<u32, u64, u8, u64>;

impl Journal {
    fn new(me: u32, n: u32, r: &Recovered) -> Self {
        Self {
            me,
            peers: (1..=n).filter(|p| *p != me).collect(),
            last: r.log_bounds("log").map_or(0, |(_, l)| l),
            heard: BTreeMap::new(),
            fired: Vec::new(),
        }
    }
    fn append(&mut self, out: &mut Out) {
        self.last += 1;
        out.append(
            "log",
            self.last,
            &[u64::from(self.me) * 1_000_000 + self.last],
        );
        for p in &self.peers {
            out.send(*p, self.last);
        }
        out.emit(self.last);
    }
}

impl Protocol for Journal {
    type Id = u32;
    type Msg = u64;
    type Timer = u8;
    type Event = u64;
    fn on_start(&mut self, _: Duration, _: &mut Out) {}
    fn on_message(&mut self, _: Duration, from: u32, index: u64, _: &mut Out) {
        self.heard.entry(from).or_default().push(index);
    }
    fn on_timer(&mut self, now: Duration, t: u8, _: &mut Out) {
        self.fired.push((now, t));
    }
}

impl SimProtocol for Journal {
    fn msg_kind(_: &u64) -> &'static str {
        "wrote"
    }
}

/// After every step: everything a node heard of is on its sender's disk;
/// every event a node emitted is on its own disk.
#[derive(Default)]
struct Durable {
    events: Vec<(u32, u64)>,
    /// Per (receiver, its life, sender): how many of the records it heard
    /// were checked (a record on a disk stays there: no need to check again).
    seen: BTreeMap<(u32, u64, u32), usize>,
    checks: u64,
}

fn on_disk(sim: &Sim<Journal>, node: &u32, index: u64) -> bool {
    let want = u64::from(*node) * 1_000_000 + index;
    sim.disk(node)
        .and_then(|d| d.record("log", index))
        .and_then(|r| rmp_serde::from_slice::<u64>(r).ok())
        == Some(want)
}

impl Observer<Journal> for Durable {
    fn on_event(&mut self, _: Duration, node: &u32, e: &u64) -> Result<(), String> {
        self.events.push((*node, *e));
        Ok(())
    }
    fn check(&mut self, sim: &Sim<Journal>) -> Result<(), String> {
        for (me, core) in sim.cores() {
            for (from, heard) in &core.heard {
                let seen = self.seen.entry((*me, sim.life(me), *from)).or_insert(0);
                let new = &heard[*seen..];
                *seen = heard.len();
                for i in new {
                    self.checks += 1;
                    if !on_disk(sim, from, *i) {
                        return Err(format!(
                            "{me} heard of record {i} of {from}, which {from}'s disk does not hold"
                        ));
                    }
                }
            }
        }
        for (node, i) in std::mem::take(&mut self.events) {
            self.checks += 1;
            if !on_disk(sim, &node, i) {
                return Err(format!(
                    "{node} reported record {i} before it was on its disk"
                ));
            }
        }
        Ok(())
    }
}

struct Run {
    checked_releases: usize,
    crashes: usize,
    lossy_crashes: usize,
    in_flight_kept: usize,
    in_flight_lost: usize,
}

fn run(seed: u64) -> Result<Run, String> {
    let n = 3;
    let mut sim: Sim<Journal> = Sim::new(
        seed,
        1..=n,
        Box::new(move |id, r| Journal::new(*id, n, r)),
        NetFaults::chaotic(),
        OracleConfig::default(),
    );
    sim.set_disk(DiskModel::syncing(ms(1), ms(12)));
    sim.record_durability();
    let mut obs = Durable::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    sim.start(&mut obs)?;
    for _ in 0..400 {
        let node = rng.gen_range(1..=n);
        match rng.gen_range(0..20) {
            0 => sim.crash(&node, &mut obs)?,
            1 | 2 => sim.restart(&node, &mut obs)?,
            _ => {
                for _ in 0..rng.gen_range(1..4) {
                    sim.command(&node, &mut obs, |c, _, out| c.append(out))?;
                }
            }
        }
        let d = ms(rng.gen_range(0..8));
        sim.run_for(d, &mut obs)?;
    }
    for node in 1..=n {
        sim.restart(&node, &mut obs)?;
    }
    sim.run_for(Duration::from_secs(1), &mut obs)?;
    // A restarted core continued from its disk; the disk's appends all
    // followed each other (the simulated disk refuses a gap).
    for node in 1..=n {
        let disk_last = sim
            .disk(&node)
            .and_then(|d| d.log_bounds("log"))
            .map_or(0, |b| b.1);
        let core_last = sim.core(&node).map_or(0, |c| c.last);
        if disk_last != core_last {
            return Err(format!("{node}: core at {core_last}, disk at {disk_last}"));
        }
    }
    let records = sim.durability_records();
    let checked_releases = check_durability_order(records)?;
    let mut crashes = 0;
    let mut lossy_crashes = 0;
    let (mut in_flight_kept, mut in_flight_lost) = (0, 0);
    for r in records {
        if let DurabilityRecord::Crashed {
            kept,
            submitted,
            in_flight,
            ..
        } = r
        {
            crashes += 1;
            if kept < submitted {
                lossy_crashes += 1;
            }
            match in_flight {
                Some(upto) if upto == kept => in_flight_kept += 1,
                Some(_) => in_flight_lost += 1,
                None => {}
            }
        }
    }
    if obs.checks == 0 {
        return Err("nothing was checked".into());
    }
    Ok(Run {
        checked_releases,
        crashes,
        lossy_crashes,
        in_flight_kept,
        in_flight_lost,
    })
}

#[test]
fn messages_and_events_never_leave_before_their_writes_are_synced() {
    let mut totals = (0, 0, 0, 0, 0);
    check_seeds(
        "messages_and_events_never_leave_before_their_writes_are_synced",
        40,
        |seed| {
            let r = run(seed)?;
            totals.0 += r.checked_releases;
            totals.1 += r.crashes;
            totals.2 += r.lossy_crashes;
            totals.3 += r.in_flight_kept;
            totals.4 += r.in_flight_lost;
            Ok(())
        },
    );
    let (releases, crashes, lossy, kept, lost) = totals;
    assert!(releases > 1000, "too few releases checked: {releases}");
    assert!(crashes > 50, "too few crashes: {crashes}");
    assert!(
        lossy > 10,
        "crashes must lose unsynced writes in some runs (not vacuous): {lossy} of {crashes}"
    );
    assert!(
        kept > 5 && lost > 5,
        "the sync in flight at a crash must sometimes survive and sometimes not: {kept} kept, {lost} lost"
    );
}

#[test]
fn a_crash_loses_exactly_what_was_not_synced() {
    let mut sim: Sim<Journal> = Sim::new(
        9,
        [1, 2],
        Box::new(|id, r| Journal::new(*id, 2, r)),
        NetFaults::reliable(ms(1)),
        OracleConfig::default(),
    );
    sim.set_disk(DiskModel::syncing(ms(10), ms(10)));
    let obs = &mut ();
    sim.start(obs).unwrap();
    // Record 1 syncs from 0 to 10 ms; records 2 and 3 wait for the next sync.
    sim.command(&1, obs, |c, _, out| c.append(out)).unwrap();
    sim.run_for(ms(2), obs).unwrap();
    sim.command(&1, obs, |c, _, out| c.append(out)).unwrap();
    sim.command(&1, obs, |c, _, out| c.append(out)).unwrap();
    sim.run_for(ms(9), obs).unwrap();
    assert_eq!(
        sim.disk(&1).unwrap().log_bounds("log"),
        Some((1, 1)),
        "record 1 synced"
    );
    assert_eq!(
        sim.core(&2).unwrap().heard.get(&1).cloned(),
        Some(vec![1]),
        "only record 1 announced"
    );
    sim.crash(&1, obs).unwrap();
    // The sync of 2 and 3 (in flight) survived whole or not at all.
    let bounds = sim.disk(&1).unwrap().log_bounds("log");
    assert!(
        bounds == Some((1, 1)) || bounds == Some((1, 3)),
        "{bounds:?}"
    );
    sim.restart(&1, obs).unwrap();
    let last = sim.core(&1).unwrap().last;
    assert_eq!(Some(last), bounds.map(|b| b.1), "rebuilt from the disk");
    sim.command(&1, obs, |c, _, out| c.append(out)).unwrap();
    sim.run_for(ms(20), obs).unwrap();
    assert_eq!(
        sim.disk(&1).unwrap().log_bounds("log").map(|b| b.1),
        Some(last + 1)
    );
    // Without a sync delay nothing is ever lost.
    let mut sim: Sim<Journal> = Sim::new(
        9,
        [1, 2],
        Box::new(|id, r| Journal::new(*id, 2, r)),
        NetFaults::reliable(ms(1)),
        OracleConfig::default(),
    );
    sim.start(obs).unwrap();
    sim.command(&1, obs, |c, _, out| c.append(out)).unwrap();
    sim.crash(&1, obs).unwrap();
    assert_eq!(sim.disk(&1).unwrap().log_bounds("log"), Some((1, 1)));
}

#[test]
fn keyed_timers_replace_and_cancel_in_the_simulator() {
    let mut sim: Sim<Journal> = Sim::new(
        4,
        [1],
        Box::new(|id, r| Journal::new(*id, 1, r)),
        NetFaults::reliable(ms(1)),
        OracleConfig::default(),
    );
    let obs = &mut ();
    sim.start(obs).unwrap();
    sim.command(&1, obs, |_, _, out| {
        out.set_timer(ms(100), 7);
        out.set_timer(ms(300), 7); // replaces the first
        out.set_timer(ms(200), 8);
    })
    .unwrap();
    sim.run_for(ms(150), obs).unwrap();
    sim.command(&1, obs, |_, _, out| out.cancel_timer(8))
        .unwrap();
    sim.run_for(ms(500), obs).unwrap();
    assert_eq!(sim.core(&1).unwrap().fired, vec![(ms(300), 7)]);
    assert!(
        sim.is_idle(),
        "no cancelled or replaced timer left in the queue"
    );
}
