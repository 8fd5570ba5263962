//! A shared counter guarded by a distributed lock, with a leader killed
//! mid-way — on the simulated network, in virtual time, in one command:
//!
//! ```text
//! cargo run --example locked_counter                          # centralized lock, bully election
//! cargo run --example locked_counter -- ricart-agrawala ring  # any lock, any election
//! cargo run --example locked_counter -- --trace lc.jsonl      # and write the run's trace
//! troupe trace view lc.jsonl -o lc.html                       # its space-time diagram
//! ```
//!
//! Locks: `centralized`, `ricart-agrawala`, `token-ring`, `lamport`;
//! elections: `bully`, `ring`, `next-in-line`.
//!
//! Four worker nodes (`n1`..`n4`) run a failure detector, an election and a
//! lock on the resource `counter`. Each worker loops: acquire the lock, read
//! the counter from a `store` node, write the value + 1, release. The store
//! is *fenced*, nothing more: it refuses a read or a write whose token is
//! below the largest token it has seen, and it does not compare values. So
//! only the lock and its fencing tokens keep two read-modify-writes from
//! interleaving.
//!
//! After five seconds the leader (`n4`, the highest id, also the
//! centralized lock's coordinator) is killed. The others notice, elect a new
//! leader, and the lock keeps working. At the end the example checks, and
//! fails if one does not hold (the suite runs the same check for every lock
//! and every election, `tests/examples.rs`):
//!
//! - no update was lost or doubled: the counter equals the number of writes
//!   the store applied, no write was applied twice, and every write
//!   acknowledged to a worker was applied;
//! - no two workers ever held the lock at the same time — promised when the
//!   failure detector made no false suspicion (here there is no partition
//!   and the only crash is real); the example records every `Down` or
//!   `Suspect` report about a running node, and says so if there was one;
//! - the lock kept working after the crash: at least two survivors wrote;
//! - the survivors agree on a leader that survived (for bully and ring, the
//!   highest survivor, `n3`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::failure_detector::start_failure_detector;
use troupe::prelude::*;
use troupe::protocols::fd::FailureDetectorConfig;

#[path = "common/trace_arg.rs"]
mod trace_arg;

const WORKERS: [&str; 4] = ["n1", "n2", "n3", "n4"];
/// The leader, killed at [`CRASH_AT`].
const VICTIM: &str = "n4";
const CRASH_AT: u64 = 5;
const RUN_FOR: u64 = 12;

/// Read the counter, fenced by `token`.
#[derive(Debug, Serialize, Deserialize)]
struct Read {
    token: u64,
}
remote_message!(Read, "example.store.read", Result<i64, String>);

/// Write `new`, fenced by `token`; `(writer, seq)` names the write.
#[derive(Debug, Serialize, Deserialize)]
struct Write {
    token: u64,
    new: i64,
    writer: String,
    seq: u64,
}
remote_message!(Write, "example.store.write", Result<(), String>);

#[derive(Default)]
struct StoreState {
    value: i64,
    /// The largest token seen on a read or a write.
    fence: u64,
    /// Applied writes, with the virtual second they were applied at.
    applied: BTreeMap<(String, u64), u64>,
    /// Reads and writes refused for a stale token.
    refused: u64,
    /// Writes that arrived again after being applied.
    doubled: u64,
}

impl StoreState {
    fn fenced(&mut self, token: u64) -> Result<(), String> {
        if token < self.fence {
            self.refused += 1;
            return Err(format!("stale fencing token {token} (seen {})", self.fence));
        }
        self.fence = token;
        Ok(())
    }
}

struct Store {
    state: Arc<Mutex<StoreState>>,
    start: tokio::time::Instant,
}

impl Actor for Store {
    type Context = Context<Self>;
}

impl Handler<Read> for Store {
    type Result = Result<i64, String>;
    fn handle(&mut self, r: Read, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.state.lock().expect("not poisoned");
        s.fenced(r.token)?;
        Ok(s.value)
    }
}

impl Handler<Write> for Store {
    type Result = Result<(), String>;
    fn handle(&mut self, w: Write, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.state.lock().expect("not poisoned");
        s.fenced(w.token)?;
        let at = self.start.elapsed().as_secs();
        if s.applied.insert((w.writer, w.seq), at).is_some() {
            s.doubled += 1;
            return Err("applied twice".into());
        }
        s.value = w.new;
        Ok(())
    }
}

/// What a run measured (see the module docs for what it must satisfy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The counter at the end.
    pub counter: i64,
    /// Writes the store applied.
    pub applied: usize,
    /// Writes acknowledged to the workers.
    pub acknowledged: usize,
    /// Reads and writes the store refused for a stale token.
    pub refused: u64,
    /// Survivors whose writes were applied after the crash.
    pub writers_after_crash: BTreeSet<String>,
    /// False suspicions: a running node reported `Down` or `Suspect`
    /// (`(observer, target)`). Mutual exclusion is promised only without.
    pub false_suspicions: BTreeSet<(String, String)>,
    /// The leader the survivors agree on.
    pub leader: String,
}

/// Run the example with `lock` and `election` on the simulated network
/// seeded by `seed`, printing progress when `verbose`; `Err` says which
/// check failed.
pub fn run(
    lock: MutexAlgorithm,
    election: ElectionAlgorithm,
    seed: u64,
    verbose: bool,
) -> Result<Report, String> {
    run_traced(lock, election, seed, verbose, None)
}

/// [`run`], writing the run's trace (every send, delivery, drop, timer,
/// crash...) to `trace` when given, before the checks (a failed run's
/// trace is the one to look at).
pub fn run_traced(
    lock: MutexAlgorithm,
    election: ElectionAlgorithm,
    seed: u64,
    verbose: bool,
    trace: Option<std::path::PathBuf>,
) -> Result<Report, String> {
    let say = move |line: String| {
        if verbose {
            println!("{line}");
        }
    };
    say(format!(
        "Shared counter under a {lock} lock; {election} election; leader {VICTIM} killed at t={CRASH_AT}s\n"
    ));
    run_virtual(move || async move {
        let start = tokio::time::Instant::now();
        let store = Arc::new(Mutex::new(StoreState::default()));
        let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        // Who holds the lock now, and every time a worker found another inside.
        let inside: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let overlaps: Arc<Mutex<Vec<String>>> = Arc::default();
        let crashed: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let suspicions: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
        let mut cluster = SimCluster::new(seed, FaultPlan::uniform(LinkFaults::lossy(0.02, 0.01)));
        let state = store.clone();
        let store_node = cluster
            .add_node("store")
            .await
            .map_err(|e| format!("store node: {e}"))?;
        store_node
            .spawn(
                ActorSpec::new("store", move || Store {
                    state: state.clone(),
                    start,
                })
                .handles::<Read>()
                .handles::<Write>(),
            )
            .await
            .map_err(|e| format!("store actor: {e}"))?;

        let fd = FailureDetectorConfig::from_toml_str(
            "[failure_detector]\nkind = \"heartbeat\"\ninterval_ms = 100\nacceptable_pause_ms = 300\ngrace_ms = 300\ncheck_interval_ms = 50\n",
        )
        .map_err(|e| format!("detector config: {e}"))?;
        let members: Vec<String> = WORKERS.iter().map(|w| w.to_string()).collect();
        let mut elections = Vec::new();
        for w in WORKERS {
            let node = cluster.add_node(w).await.map_err(|e| format!("{w}: {e}"))?;
            let peers: Vec<String> = members.iter().filter(|m| *m != w).cloned().collect();
            // Record every false suspicion this node's detector reports.
            let mut events = node.subscribe_membership();
            let (seen_by, crashed_now, found) =
                (w.to_string(), crashed.clone(), suspicions.clone());
            actix_rt::spawn(async move {
                while let Ok(e) = events.recv().await {
                    let down = matches!(e.status, MemberStatus::Down | MemberStatus::Suspect);
                    let running = !crashed_now
                        .lock()
                        .expect("not poisoned")
                        .contains(&e.member);
                    if down && running {
                        found
                            .lock()
                            .expect("not poisoned")
                            .insert((seen_by.clone(), e.member.clone()));
                    }
                }
            });
            start_failure_detector(&node, &fd, &peers)
                .await
                .map_err(|e| format!("{w}: detector: {e}"))?;
            let leader = start_election(&node, election, &members)
                .await
                .map_err(|e| format!("{w}: election: {e}"))?;
            let lock = start_lock(&node, "counter", lock, &members)
                .await
                .map_err(|e| format!("{w}: lock: {e}"))?;
            elections.push((w, leader));
            let (acked, inside, overlaps) = (acked.clone(), inside.clone(), overlaps.clone());
            let read = node
                .lookup::<Read>("store/store")
                .map_err(|e| e.to_string())?;
            let write = node
                .lookup::<Write>("store/store")
                .map_err(|e| e.to_string())?;
            let me = w.to_string();
            actix_rt::spawn(async move {
                for seq in 0.. {
                    if node.is_stopped() {
                        break; // this worker's node crashed
                    }
                    let Ok(guard) = lock.acquire_within(Duration::from_secs(5)).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if node.is_stopped() {
                        break;
                    }
                    {
                        let mut inside = inside.lock().expect("not poisoned");
                        if !inside.is_empty() {
                            overlaps.lock().expect("not poisoned").push(format!(
                                "{me} entered at {:?} while {inside:?} held the lock",
                                start.elapsed()
                            ));
                        }
                        inside.insert(me.clone());
                    }
                    let token = guard.fencing_token();
                    if let Ok(Ok(v)) = read
                        .ask(Read { token })
                        .timeout(Duration::from_secs(1))
                        .await
                    {
                        let w = Write {
                            token,
                            new: v + 1,
                            writer: me.clone(),
                            seq,
                        };
                        if let Ok(Ok(())) = write.ask(w).timeout(Duration::from_secs(1)).await {
                            acked.lock().expect("not poisoned").push((me.clone(), seq));
                        }
                    }
                    inside.lock().expect("not poisoned").remove(&me);
                    guard.release().await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }

        let show = |elections: &Vec<(&str, LeaderElection)>| {
            elections
                .iter()
                .map(|(w, e)| {
                    let l = e.current();
                    format!(
                        "{w}: {} (term {})",
                        l.leader.unwrap_or_else(|| "?".into()),
                        l.term
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        for t in 1..=RUN_FOR {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if t == CRASH_AT {
                crashed
                    .lock()
                    .expect("not poisoned")
                    .insert(VICTIM.to_string());
                cluster.crash(VICTIM);
                // A crashed node holds nothing.
                inside.lock().expect("not poisoned").remove(VICTIM);
                elections.retain(|(w, _)| *w != VICTIM);
                say(format!("[t={t:>2}s] {VICTIM} (the leader) crashes"));
            }
            let value = store.lock().expect("not poisoned").value;
            say(format!(
                "[t={t:>2}s] counter = {value:>4}   leaders seen: {}",
                show(&elections)
            ));
        }

        if let Some(path) = &trace {
            trace_arg::write(path, &cluster.net().trace());
        }
        let s = store.lock().expect("not poisoned");
        let acked = acked.lock().expect("not poisoned");
        let overlaps = overlaps.lock().expect("not poisoned");
        let false_suspicions = suspicions.lock().expect("not poisoned").clone();
        let writers_after_crash: BTreeSet<String> = s
            .applied
            .iter()
            .filter(|(_, at)| **at > CRASH_AT)
            .map(|((w, _), _)| w.clone())
            .collect();
        let leaders: BTreeSet<_> = elections.iter().map(|(_, e)| e.current().leader).collect();
        say(format!(
            "\nFinal counter {}; writes applied {}; acknowledged to workers {}; reads and writes refused for a stale token {}",
            s.value,
            s.applied.len(),
            acked.len(),
            s.refused
        ));
        if false_suspicions.is_empty() {
            if let Some(o) = overlaps.first() {
                return Err(format!("mutual exclusion: {o}"));
            }
        } else {
            say(format!(
                "The detector falsely suspected {false_suspicions:?}: mutual exclusion was not promised ({} overlaps)",
                overlaps.len()
            ));
        }
        if s.value < 0 || s.value as usize != s.applied.len() || s.doubled > 0 {
            return Err(format!(
                "an update was lost or doubled: counter {}, writes applied {}, applied twice {}",
                s.value,
                s.applied.len(),
                s.doubled
            ));
        }
        if let Some(a) = acked.iter().find(|a| !s.applied.contains_key(*a)) {
            return Err(format!("acknowledged write {a:?} missing from the store"));
        }
        if writers_after_crash.len() < 2 {
            return Err(format!(
                "the lock stopped working after the crash: writers after it {writers_after_crash:?}"
            ));
        }
        let leader = match leaders.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(l)] if l != VICTIM => l.clone(),
            other => {
                return Err(format!(
                    "the survivors do not agree on a surviving leader: {other:?}"
                ))
            }
        };
        if matches!(election, ElectionAlgorithm::Bully | ElectionAlgorithm::Ring) && leader != "n3"
        {
            return Err(format!(
                "{election} elected {leader}, not the highest survivor n3"
            ));
        }
        say(format!(
            "OK: no update lost or doubled, one holder at a time, {} survivors wrote after the crash; the survivors agree on leader {leader}",
            writers_after_crash.len()
        ));
        Ok(Report {
            counter: s.value,
            applied: s.applied.len(),
            acknowledged: acked.len(),
            refused: s.refused,
            writers_after_crash,
            false_suspicions,
            leader,
        })
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let trace = trace_arg::take(&mut args);
    let mut args = args.into_iter();
    let lock: MutexAlgorithm = args.next().map_or(MutexAlgorithm::Centralized, |a| {
        a.parse().unwrap_or_else(|e| {
            panic!("{e}; use centralized, ricart-agrawala, token-ring or lamport")
        })
    });
    let election: ElectionAlgorithm = args.next().map_or(ElectionAlgorithm::Bully, |a| {
        a.parse()
            .unwrap_or_else(|e| panic!("{e}; use bully, ring or next-in-line"))
    });
    if let Err(e) = run_traced(lock, election, 7, true, trace) {
        eprintln!("FAILED: {e}");
        std::process::exit(1);
    }
}
