//! The Raft scenario: a key-value store on Raft under seeded chaos, with
//! Raft's safety properties checked after every step, clients whose
//! history is checked for linearizability, then healing and liveness.
//! Members are `1..=n` (`u32`).
//!
//! ## What is checked after every step
//! (every delivered message, timer, sync, command, crash and restart)
//! * **election safety**: at most one leader per term (from the `Role`
//!   events);
//! * **leader append-only**: while a server leads a term, its log only
//!   grows;
//! * **log matching**: every entry any server holds agrees with every other
//!   entry of the same index and term ever seen, in content and in the term
//!   of the entry before it (checked incrementally: each log's new entries);
//! * **leader completeness**: every entry a server reports committed is in
//!   the log of every later leader (checked when the leader takes office,
//!   and against every later commit);
//! * **state-machine safety**: no two servers apply different entries at one
//!   index, and each applies in index order (a restart or an installed
//!   snapshot moves it to the snapshot's index).
//!
//! The clients' operations (get, put, compare-and-set, delete over a few
//! keys) are recorded with their invoke and return times, and outcomes
//! that are unknown (the server crashed, the answer did not come) as such;
//! [`RaftOutcome::history`] is checked by the linearizability checker.
//! Odd clients collect their outcomes as the sim's earlier clients did
//! ([`Raft::take_result`], [`Raft::take_read`] and the applied index);
//! even clients await them as the driver does (`await_result`,
//! `await_read`, and [`Settles::take_settled`] after their polls, which
//! must never settle a token twice).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::linearizability::{History, KvOp, KvRet, OpId};
use super::{Chaos, DiskModel, NetFaults, Observer, OracleConfig, Sim};
use crate::raft::kv::{KvCommand, KvReply, KvStore};
use crate::raft::{
    Entry, Membership, Outcome, Payload, Raft, RaftConfig, RaftError, RaftEvent, RaftSettled,
    RaftToken, ReadMode, Role, Session,
};
use troupe_framework::sansio::Settles;

/// The core the scenario runs.
pub type KvRaft = Raft<u32, KvStore>;

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A digest of a whole entry (term and payload).
pub fn entry_digest(e: &Entry<u32>) -> u64 {
    match &e.payload {
        Payload::Noop => fnv(&e.term.to_le_bytes()),
        Payload::Command { session, bytes } => {
            let mut b = bytes.clone();
            if let Some(s) = session {
                b.extend_from_slice(s.client.as_bytes());
                b.extend_from_slice(&s.seq.to_le_bytes());
            }
            b.extend_from_slice(&e.term.to_le_bytes());
            fnv(&b)
        }
        Payload::Config(m) => fnv(format!("{}{m:?}", e.term).as_bytes()),
    }
}

/// Checks Raft's safety properties after every step (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct RaftObserver {
    /// term -> its leader.
    leaders: BTreeMap<u64, u32>,
    /// (index, term) -> (digest, term of the entry before).
    entries: BTreeMap<(u64, u64), (u64, u64)>,
    /// Per node: (life, index and term up to which its log was checked).
    checked: BTreeMap<u32, (u64, u64, u64)>,
    /// index -> (term, digest) of committed entries.
    committed: BTreeMap<u64, (u64, u64)>,
    /// Per node: (life, commit index recorded).
    commit_seen: BTreeMap<u32, (u64, u64)>,
    /// index -> (term, digest) applied somewhere.
    applied: BTreeMap<u64, (u64, u64)>,
    /// Per node: (life, last index applied).
    applied_at: BTreeMap<u32, (u64, u64)>,
    /// (node, term) leaders already checked for completeness, with their
    /// last index then.
    leading: BTreeMap<(u32, u64), u64>,
    /// Entries applied (all nodes), for coverage.
    pub applied_events: u64,
    /// Distinct leaders seen (term, node).
    pub leaders_seen: u64,
    /// Snapshot installs seen.
    pub installs: u64,
    /// Configuration changes and leadership transfers the leader accepted.
    pub changes: u64,
}

impl RaftObserver {
    fn check_log(&mut self, id: u32, life: u64, core: &KvRaft) -> Result<(), String> {
        let log = core.log();
        let (mut from, mut prev_term) = match self.checked.get(&id) {
            Some(&(l, i, t))
                if l == life && log.term_at(i) == Some(t) && i >= log.snapshot_index() =>
            {
                (i + 1, t)
            }
            _ => (log.first_index(), log.snapshot_term()),
        };
        // Back off past a truncated tail: recheck from the snapshot.
        if from > log.last_index() + 1 {
            from = log.first_index();
            prev_term = log.snapshot_term();
        }
        for i in from..=log.last_index() {
            let Some(e) = log.entry(i) else {
                return Err(format!("node {id}: no entry at {i} below its last index"));
            };
            let d = entry_digest(e);
            match self.entries.get(&(i, e.term)) {
                Some(&(d0, p0)) if d0 != d || p0 != prev_term => {
                    return Err(format!(
                        "log matching: node {id} holds a different entry at index {i} term {}, or a different one before it (term {prev_term}, seen {p0})",
                        e.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.entries.insert((i, e.term), (d, prev_term));
                }
            }
            prev_term = e.term;
        }
        self.checked
            .insert(id, (life, log.last_index(), log.last_term()));
        Ok(())
    }

    fn check_commits(&mut self, id: u32, life: u64, core: &KvRaft) -> Result<(), String> {
        let log = core.log();
        let from = match self.commit_seen.get(&id) {
            Some(&(l, c)) if l == life => c + 1,
            _ => log.first_index(),
        };
        for i in from.max(log.first_index())..=core.commit_index() {
            let Some(e) = log.entry(i) else { break };
            let d = entry_digest(e);
            match self.committed.get(&i) {
                Some(&(t, d0)) if (t, d0) != (e.term, d) => {
                    return Err(format!(
                    "node {id} committed index {i} term {} but term {t} was committed there before",
                    e.term
                ))
                }
                Some(_) => {}
                None => {
                    self.committed.insert(i, (e.term, d));
                }
            }
        }
        self.commit_seen.insert(id, (life, core.commit_index()));
        Ok(())
    }

    fn check_leader(&mut self, id: u32, core: &KvRaft) -> Result<(), String> {
        let log = core.log();
        let key = (id, core.term());
        if let Some(&last) = self.leading.get(&key) {
            if log.last_index() < last {
                return Err(format!(
                    "leader append-only: leader {id} of term {} shrank its log from {last} to {}",
                    core.term(),
                    log.last_index()
                ));
            }
            self.leading.insert(key, log.last_index());
            return Ok(());
        }
        self.leading.insert(key, log.last_index());
        for (&i, &(t, d)) in self.committed.range(log.first_index()..) {
            match log.entry(i) {
                Some(e) if e.term == t && entry_digest(e) == d => {}
                _ => {
                    return Err(format!(
                        "leader completeness: leader {id} of term {} lacks committed index {i} (term {t})",
                        core.term()
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Observer<KvRaft> for RaftObserver {
    fn on_event(
        &mut self,
        _now: Duration,
        node: &u32,
        event: &RaftEvent<u32>,
    ) -> Result<(), String> {
        match event {
            RaftEvent::Role {
                term,
                role: Role::Leader,
                ..
            } => match self.leaders.insert(*term, *node) {
                Some(other) if other != *node => {
                    return Err(format!(
                        "election safety: {other} and {node} both lead term {term}"
                    ))
                }
                Some(_) => {}
                None => self.leaders_seen += 1,
            },
            RaftEvent::Applied {
                index,
                term,
                digest,
            } => {
                self.applied_events += 1;
                if let Some(&(t, d)) = self.applied.get(index) {
                    if (t, d) != (*term, *digest) {
                        return Err(format!(
                            "state-machine safety: node {node} applied term {term} at index {index}, another server term {t}"
                        ));
                    }
                } else {
                    self.applied.insert(*index, (*term, *digest));
                }
                if let Some((_, last)) = self.applied_at.get_mut(node) {
                    if *index != *last + 1 {
                        return Err(format!("node {node} applied index {index} after {last}"));
                    }
                    *last = *index;
                }
            }
            RaftEvent::SnapshotInstalled { index, .. } => {
                self.installs += 1;
                if let Some((_, last)) = self.applied_at.get_mut(node) {
                    *last = *index;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check(&mut self, sim: &Sim<KvRaft>) -> Result<(), String> {
        for (id, core) in sim.cores() {
            let life = sim.life(id);
            match self.applied_at.get(id) {
                Some(&(l, _)) if l == life => {}
                _ => {
                    self.applied_at.insert(*id, (life, core.applied_index()));
                }
            }
            self.check_log(*id, life, core)?;
            self.check_commits(*id, life, core)?;
            if core.role() == Role::Leader {
                self.check_leader(*id, core)?;
            }
        }
        Ok(())
    }
}

/// Settings of one scenario run.
#[derive(Debug, Clone)]
pub struct RaftScenario {
    /// Servers.
    pub nodes: u32,
    /// Clients.
    pub clients: u32,
    /// How long the faults last.
    pub chaos: Duration,
    /// Raft's settings.
    pub config: RaftConfig,
    /// Lose unsynced writes at a crash (a disk with sync delays).
    pub slow_disk: bool,
    /// The network while faults last.
    pub faults: NetFaults,
    /// Every this often during the faults, the leader is asked to change
    /// the configuration (voters alternate between all servers and the
    /// first three, the others becoming learners).
    pub reconfigure: Option<Duration>,
    /// Every this often during the faults, the leader is asked to hand
    /// leadership to another voter.
    pub transfer: Option<Duration>,
}

impl RaftScenario {
    /// The scenario for `seed`: 3 or 5 servers, small snapshots and chunks
    /// (so that snapshots are installed), pre-vote and the read mode
    /// varied by seed.
    pub fn for_seed(seed: u64) -> Self {
        let config = RaftConfig {
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            heartbeat: Duration::from_millis(30),
            max_batch: 8,
            max_inflight: 4,
            snapshot_after: 40,
            snapshot_chunk: 64,
            pre_vote: seed % 3 != 2,
            read_mode: if seed % 4 == 3 {
                ReadMode::Lease
            } else {
                ReadMode::ReadIndex
            },
            seed,
            ..RaftConfig::default()
        };
        Self {
            nodes: if seed.is_multiple_of(2) { 3 } else { 5 },
            clients: 4,
            chaos: Duration::from_secs(6),
            config,
            slow_disk: true,
            faults: NetFaults::chaotic(),
            reconfigure: None,
            transfer: None,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RaftOutcome {
    /// The clients' operations (check with
    /// [`super::linearizability::check_kv`]).
    pub history: History,
    /// The checker's counters.
    pub observer: RaftObserver,
    /// Operations that returned.
    pub returned: usize,
}

#[derive(Debug)]
enum Pending {
    Write {
        node: u32,
        life: u64,
        index: u64,
        term: u64,
        awaited: bool,
    },
    Read {
        node: u32,
        life: u64,
        id: u64,
        at: Option<u64>,
        key: String,
        awaited: bool,
    },
}

/// What each node settled for awaited requests and no poll collected yet,
/// with the node's life they belong to.
type Taken = HashMap<u32, (u64, HashMap<RaftToken, RaftSettled<KvReply>>)>;

struct Client {
    id: u32,
    seq: u64,
    leader: Option<u32>,
    op: Option<(OpId, Pending, Duration)>,
}

/// How long a client waits before it gives an operation up as unknown.
const GIVE_UP: Duration = Duration::from_secs(3);

/// Run the scenario: chaos with clients, then healing, then liveness (a
/// write through the leader applied everywhere).
pub fn run_kv_raft(seed: u64, s: &RaftScenario) -> Result<RaftOutcome, String> {
    let members: Vec<u32> = (1..=s.nodes).collect();
    let config = s.config.clone();
    let m = members.clone();
    let mut sim: Sim<KvRaft> = Sim::new(
        seed,
        members.clone(),
        Box::new(move |id, r| {
            Raft::recover(*id, Membership::new(m.clone()), config.clone(), r)
                .unwrap_or_else(|e| panic!("node {id}: recovering: {e}"))
        }),
        s.faults,
        OracleConfig::default(),
    );
    if s.slow_disk {
        sim.set_disk(DiskModel::syncing(
            Duration::from_millis(1),
            Duration::from_millis(8),
        ));
    }
    let mut obs = RaftObserver::default();
    sim.start(&mut obs)?;
    let mut chaos = Chaos::new(seed);
    chaos.max_crashed = ((s.nodes - 1) / 2) as usize;
    chaos.crash_prob = 0.01;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut clients: Vec<Client> = (1..=s.clients)
        .map(|id| Client {
            id,
            seq: 0,
            leader: None,
            op: None,
        })
        .collect();
    let history = History::new();
    let mut taken = Taken::new();
    let tick = Duration::from_millis(5);
    let end = s.chaos;
    let mut next_change = Duration::ZERO;
    let mut next_transfer = Duration::ZERO;
    while sim.now() < end {
        chaos.tick(&mut sim, &mut obs)?;
        if let Some(every) = s.reconfigure {
            if sim.now() >= next_change {
                next_change = sim.now() + every;
                reconfigure(&mut sim, &mut obs, &members)?;
            }
        }
        if let Some(every) = s.transfer {
            if sim.now() >= next_transfer {
                next_transfer = sim.now() + every;
                transfer(&mut sim, &mut obs, &mut rng)?;
            }
        }
        for c in clients.iter_mut() {
            client_step(
                &mut sim, &mut obs, &mut rng, c, &members, &history, &mut taken,
            )?;
        }
        sim.run_for(tick, &mut obs)?;
    }
    chaos.calm(&mut sim, &mut obs)?;
    sim.set_faults(NetFaults::reliable(Duration::from_millis(2)));
    // Let the clients finish what they started.
    let settle = sim.now() + GIVE_UP + Duration::from_secs(1);
    while sim.now() < settle && clients.iter().any(|c| c.op.is_some()) {
        for c in clients.iter_mut() {
            if c.op.is_some() {
                client_step(
                    &mut sim, &mut obs, &mut rng, c, &members, &history, &mut taken,
                )?;
            }
        }
        sim.run_for(tick, &mut obs)?;
    }
    for c in clients.iter_mut() {
        if let Some((op, _, _)) = c.op.take() {
            history.record_unknown(op);
        }
    }
    liveness(&mut sim, &mut obs)?;
    let returned = history
        .operations()
        .iter()
        .filter(|o| matches!(o.outcome, super::linearizability::Outcome::Returned { .. }))
        .count();
    Ok(RaftOutcome {
        history,
        observer: obs,
        returned,
    })
}

/// After healing: a leader is elected within a bound, a write through it
/// is applied on every server, and every server applied the same prefix.
fn liveness(sim: &mut Sim<KvRaft>, obs: &mut RaftObserver) -> Result<(), String> {
    let deadline = sim.now() + Duration::from_secs(10);
    let mut written: Option<(u32, u64, u64)> = None;
    while sim.now() < deadline {
        sim.run_for(Duration::from_millis(20), obs)?;
        let leader = sim
            .cores()
            .find(|(_, c)| c.role() == Role::Leader)
            .map(|(id, _)| *id);
        let Some(leader) = leader else { continue };
        if written.is_none_or(|(n, _, _)| n != leader || !sim.is_alive(&n)) {
            let mut got = None;
            sim.command(&leader, obs, |c, now, out| {
                got = c
                    .propose(
                        now,
                        None,
                        &KvCommand::Put {
                            key: "liveness".into(),
                            value: "ok".into(),
                        },
                        out,
                    )
                    .ok();
            })?;
            written = got.map(|(i, t)| (leader, i, t));
        }
        if let Some((_, index, _)) = written {
            if sim.cores().all(|(_, c)| c.applied_index() >= index) {
                return Ok(());
            }
        }
    }
    let status: Vec<String> = sim
        .cores()
        .map(|(id, c)| {
            format!(
                "{id}: {:?} term {} commit {} applied {}",
                c.role(),
                c.term(),
                c.commit_index(),
                c.applied_index()
            )
        })
        .collect();
    Err(format!(
        "liveness: no write applied everywhere 10 s after healing ({})",
        status.join("; ")
    ))
}

/// The live leader with the highest term, if any.
fn leader_of(sim: &Sim<KvRaft>) -> Option<u32> {
    sim.cores()
        .filter(|(_, c)| c.role() == Role::Leader)
        .max_by_key(|(_, c)| c.term())
        .map(|(id, _)| *id)
}

/// Ask the leader to move between all servers as voters and the first
/// three (the others learners).
fn reconfigure(
    sim: &mut Sim<KvRaft>,
    obs: &mut RaftObserver,
    members: &[u32],
) -> Result<(), String> {
    let Some(leader) = leader_of(sim) else {
        return Ok(());
    };
    let mut accepted = false;
    sim.command(&leader, obs, |c, now, out| {
        let all: BTreeSet<u32> = members.iter().copied().collect();
        let few: BTreeSet<u32> = members.iter().take(3).copied().collect();
        let (voters, learners) = if c.membership().voters == all {
            (few, all.clone())
        } else {
            (all.clone(), BTreeSet::new())
        };
        accepted = c.change_membership(now, voters, learners, out).is_ok();
    })?;
    obs.changes += u64::from(accepted);
    Ok(())
}

/// Ask the leader to hand leadership to a random other voter.
fn transfer(
    sim: &mut Sim<KvRaft>,
    obs: &mut RaftObserver,
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    let Some(leader) = leader_of(sim) else {
        return Ok(());
    };
    let mut accepted = false;
    let pick = rng.gen_range(0..8usize);
    sim.command(&leader, obs, |c, _, out| {
        let voters: Vec<u32> = c
            .membership()
            .members()
            .into_iter()
            .filter(|id| *id != leader && c.membership().is_voter(id))
            .collect();
        if let Some(to) = voters.get(pick % voters.len().max(1)) {
            accepted = c.transfer_leadership(*to, out).is_ok();
        }
    })?;
    obs.changes += u64::from(accepted);
    Ok(())
}

const KEYS: [&str; 3] = ["x", "y", "z"];

fn client_step(
    sim: &mut Sim<KvRaft>,
    obs: &mut RaftObserver,
    rng: &mut ChaCha8Rng,
    c: &mut Client,
    members: &[u32],
    history: &History,
    taken: &mut Taken,
) -> Result<(), String> {
    let now = sim.now();
    if let Some((op, pending, since)) = c.op.take() {
        match poll(sim, obs, &pending, taken)? {
            Poll::Waiting(p) if now.saturating_sub(since) < GIVE_UP => {
                c.op = Some((op, p, since));
            }
            Poll::Waiting(_) | Poll::Lost => history.record_unknown(op),
            Poll::Failed => history.record_failed(op),
            Poll::Done(r) => history.record_return(op, now, r),
        }
        return Ok(());
    }
    if !rng.gen_bool(0.3) {
        return Ok(());
    }
    let node = match c.leader {
        Some(l) if rng.gen_bool(0.9) => l,
        _ => members[rng.gen_range(0..members.len())],
    };
    let key = KEYS[rng.gen_range(0..KEYS.len())].to_string();
    let value = format!("{}-{}", c.id, c.seq + 1);
    let op = match rng.gen_range(0..10) {
        0..=3 => KvOp::Get,
        4..=6 => KvOp::Put { value },
        7..=8 => KvOp::Cas {
            expected: if rng.gen_bool(0.3) {
                None
            } else {
                Some(format!(
                    "{}-{}",
                    rng.gen_range(1..=4),
                    rng.gen_range(1..=c.seq.max(1) + 1)
                ))
            },
            value,
        },
        _ => KvOp::Delete,
    };
    let life = sim.life(&node);
    let mut started: Option<Result<Pending, RaftError<u32>>> = None;
    let cmd = match &op {
        KvOp::Get => None,
        KvOp::Put { value: v } => Some(KvCommand::Put {
            key: key.clone(),
            value: v.clone(),
        }),
        KvOp::Cas { expected, value } => Some(KvCommand::Cas {
            key: key.clone(),
            expected: expected.clone(),
            value: value.clone(),
        }),
        KvOp::Delete => Some(KvCommand::Delete { key: key.clone() }),
    };
    c.seq += 1;
    let session = Session {
        client: format!("c{}", c.id),
        seq: c.seq,
    };
    let awaited = c.id.is_multiple_of(2);
    let ran = sim.command(&node, obs, |core, now, out| {
        started = Some(match &cmd {
            None => core.read_index(now, out).map(|id| {
                if awaited {
                    core.await_read(id);
                }
                Pending::Read {
                    node,
                    life,
                    id,
                    at: None,
                    key: key.clone(),
                    awaited,
                }
            }),
            Some(cmd) => core
                .propose(now, Some(session), cmd, out)
                .map(|(index, term)| {
                    if awaited {
                        core.await_result(index, term);
                    }
                    Pending::Write {
                        node,
                        life,
                        index,
                        term,
                        awaited,
                    }
                }),
        });
    })?;
    if !ran {
        c.leader = None;
        return Ok(());
    }
    match started {
        Some(Ok(p)) => {
            let id = history.record_invoke(u64::from(c.id), key, op, now);
            c.op = Some((id, p, now));
        }
        Some(Err(RaftError::NotLeader { leader })) => c.leader = leader,
        _ => c.leader = None,
    }
    Ok(())
}

enum Poll {
    Waiting(Pending),
    Done(KvRet),
    Failed,
    Lost,
}

/// The settlement of `token` on `node` (in its life `life`), if it came:
/// takes what the node settled since the last poll into `taken`.
fn take_settled(
    sim: &mut Sim<KvRaft>,
    obs: &mut RaftObserver,
    taken: &mut Taken,
    node: u32,
    life: u64,
    token: RaftToken,
) -> Result<Option<RaftSettled<KvReply>>, String> {
    let mut got = Vec::new();
    sim.command(&node, obs, |c, _, _| c.take_settled(&mut got))?;
    let slot = taken.entry(node).or_insert_with(|| (life, HashMap::new()));
    if slot.0 != life {
        *slot = (life, HashMap::new());
    }
    for (t, settled) in got {
        if slot.1.insert(t, settled).is_some() {
            return Err(format!("node {node}: {t:?} was settled twice"));
        }
    }
    Ok(slot.1.remove(&token))
}

fn write_outcome(o: Outcome<Result<KvReply, crate::raft::CommandError>>) -> Poll {
    match o {
        Outcome::Applied(Ok(KvReply::Done { .. })) => Poll::Done(KvRet::Ok),
        Outcome::Applied(Ok(KvReply::Mismatch { current })) => {
            Poll::Done(KvRet::Mismatch { current })
        }
        Outcome::NotApplied => Poll::Failed,
        Outcome::Applied(Err(_)) | Outcome::Unknown => Poll::Lost,
    }
}

fn poll(
    sim: &mut Sim<KvRaft>,
    obs: &mut RaftObserver,
    p: &Pending,
    taken: &mut Taken,
) -> Result<Poll, String> {
    let (node, life) = match p {
        Pending::Write { node, life, .. } | Pending::Read { node, life, .. } => (*node, *life),
    };
    if !sim.is_alive(&node) || sim.life(&node) != life {
        return Ok(match p {
            Pending::Write { .. } => Poll::Lost,
            // A read changes nothing: it simply did not happen.
            Pending::Read { .. } => Poll::Failed,
        });
    }
    match p {
        &Pending::Write {
            index,
            term,
            awaited: true,
            ..
        } => {
            let token = RaftToken::Write { index, term };
            Ok(match take_settled(sim, obs, taken, node, life, token)? {
                None => Poll::Waiting(Pending::Write {
                    node,
                    life,
                    index,
                    term,
                    awaited: true,
                }),
                Some(RaftSettled::Write(o)) => write_outcome(o),
                Some(other) => return Err(format!("write {token:?} settled as {other:?}")),
            })
        }
        &Pending::Write { index, term, .. } => {
            let mut got = None;
            sim.command(&node, obs, |c, _, _| got = c.take_result(index, term))?;
            Ok(match got {
                None => Poll::Waiting(Pending::Write {
                    node,
                    life,
                    index,
                    term,
                    awaited: false,
                }),
                Some(o) => write_outcome(o),
            })
        }
        Pending::Read {
            id,
            key,
            awaited: true,
            ..
        } => {
            let token = RaftToken::Read(*id);
            match take_settled(sim, obs, taken, node, life, token)? {
                None => Ok(Poll::Waiting(Pending::Read {
                    node,
                    life,
                    id: *id,
                    at: None,
                    key: key.clone(),
                    awaited: true,
                })),
                // Confirmed, and its read index applied: read now.
                Some(RaftSettled::Read(true)) => {
                    let core = sim.core(&node).ok_or("a live node without a core")?;
                    let value = core.machine().get(key).map(|v| v.value.clone());
                    Ok(Poll::Done(KvRet::Value(value)))
                }
                Some(RaftSettled::Read(false)) => Ok(Poll::Failed),
                Some(other) => Err(format!("read {token:?} settled as {other:?}")),
            }
        }
        Pending::Read { id, at, key, .. } => {
            let id = *id;
            let waiting = |at| {
                Poll::Waiting(Pending::Read {
                    node,
                    life,
                    id,
                    at,
                    key: key.clone(),
                    awaited: false,
                })
            };
            let index = match at {
                Some(i) => *i,
                None => {
                    let mut got = None;
                    sim.command(&node, obs, |c, _, _| got = c.take_read(id).0)?;
                    match got {
                        None => return Ok(waiting(None)),
                        Some(None) => return Ok(Poll::Failed),
                        Some(Some(i)) => i,
                    }
                }
            };
            let core = sim.core(&node).ok_or("a live node without a core")?;
            if core.applied_index() < index {
                return Ok(waiting(Some(index)));
            }
            let value = core.machine().get(key).map(|v| v.value.clone());
            Ok(Poll::Done(KvRet::Value(value)))
        }
    }
}

/// Hand-driven servers for scripted scenarios (the Raft paper's figures):
/// every message sent waits in a queue until the script delivers or drops
/// it; timers fire only when the script says so; durable writes are
/// ignored (no crash is simulated).
pub struct Manual {
    /// The servers.
    pub cores: BTreeMap<u32, KvRaft>,
    /// Messages sent and not yet delivered: (from, to, message).
    pub queue: Vec<(u32, u32, crate::raft::RaftMsg<u32>)>,
    now: Duration,
}

impl Manual {
    /// Servers `1..=n` with `config`, each started.
    pub fn new(n: u32, config: RaftConfig) -> Self {
        Self::with_disks(n, config, |_| troupe_framework::sansio::Recovered::empty())
    }

    /// Servers `1..=n` with `config`, each rebuilt from `disk(id)` and started.
    pub fn with_disks(
        n: u32,
        config: RaftConfig,
        disk: impl Fn(u32) -> troupe_framework::sansio::Recovered,
    ) -> Self {
        let members: Vec<u32> = (1..=n).collect();
        let mut m = Self {
            cores: BTreeMap::new(),
            queue: Vec::new(),
            now: Duration::ZERO,
        };
        for id in &members {
            let core = Raft::recover(
                *id,
                Membership::new(members.clone()),
                config.clone(),
                &disk(*id),
            )
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
            m.cores.insert(*id, core);
        }
        for id in members {
            m.input(id, |c, now, out| {
                troupe_framework::sansio::Protocol::on_start(c, now, out)
            });
        }
        m
    }

    /// Run `f` on server `id` and queue what it sent.
    pub fn input<R>(
        &mut self,
        id: u32,
        f: impl FnOnce(&mut KvRaft, Duration, &mut super::Out<KvRaft>) -> R,
    ) -> R {
        self.now += Duration::from_millis(1);
        let mut out = super::Out::<KvRaft>::new();
        let core = self
            .cores
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no server {id}"));
        let r = f(core, self.now, &mut out);
        troupe_framework::sansio::Protocol::persist(core, &mut out);
        for (to, msg) in out.sends {
            self.queue.push((id, to, msg));
        }
        r
    }

    /// Fire server `id`'s election timer.
    pub fn timeout(&mut self, id: u32) {
        self.input(id, |c, now, out| {
            troupe_framework::sansio::Protocol::on_timer(
                c,
                now,
                crate::raft::RaftTimer::Election,
                out,
            )
        });
    }

    /// Deliver, in order, the queued messages for which `pick(from, to,
    /// message)` holds, and those they cause, until none is left; drop
    /// nothing else.
    pub fn deliver(&mut self, pick: impl Fn(u32, u32, &crate::raft::RaftMsg<u32>) -> bool) {
        loop {
            let Some(i) = self.queue.iter().position(|(f, t, m)| pick(*f, *t, m)) else {
                return;
            };
            let (from, to, msg) = self.queue.remove(i);
            self.input(to, |c, now, out| {
                troupe_framework::sansio::Protocol::on_message(c, now, from, msg, out)
            });
        }
    }

    /// Drop every queued message from or to `id`.
    pub fn isolate(&mut self, id: u32) {
        self.queue.retain(|(f, t, _)| *f != id && *t != id);
    }

    /// The server `id`.
    pub fn core(&self, id: u32) -> &KvRaft {
        &self.cores[&id]
    }
}
