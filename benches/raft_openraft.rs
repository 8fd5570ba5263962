//! Troupe Raft against openraft, same run, same machine, same shape as
//! openraft's own cluster benchmark (`cluster_benchmark` in openraft 0.9):
//! three voters in one process, in-memory log and state machine, messages
//! passed in memory, empty writes, `C` clients writing back to back to the
//! leader, each waiting for its write to be applied before the next.
//!
//! - **openraft** 0.9.25 (crates.io), `storage-v2`: a log and a state
//!   machine kept in `BTreeMap`s behind `std::sync::Mutex`es (openraft's
//!   bench uses tokio `RwLock`s: this store is no slower), an "RPC" that
//!   calls the target `Raft`'s `append_entries` / `vote` /
//!   `install_snapshot` directly (no serialization), openraft's bench config
//!   (election timeout 200-2000 ms, `purge_batch_size` 1024, the rest
//!   default: 300 entries per append, snapshot every 5000 logs), on a tokio
//!   runtime (`RAFT_BENCH_OPENRAFT_THREADS` workers, default 2 = this
//!   machine's cores; 0 = a current-thread runtime). Clients:
//!   `raft.client_write(Empty).await`.
//! - **Troupe**: the production path with only the network swapped: three
//!   `Node`s on one actix system (one thread; `RAFT_BENCH_TROUPE_THREADS=2`
//!   puts the followers on a second arbiter), each with its default
//!   in-memory durable store (`MemoryStore`), joined by an in-memory
//!   transport that puts every encoded frame straight into the peer node's
//!   inbound channel (no QUIC); `start_raft` puts a supervised `Driver`
//!   actor around the sans-IO Raft core on each; every message is encoded
//!   and decoded by the framework's codec, every log write goes through the
//!   store. `RaftConfig::default()` (512 entries per append, 8 appends in
//!   flight per follower, snapshot every 10 000 entries). Node `a` leads
//!   (a leadership transfer if another won the first election). Clients:
//!   `replica.propose((), None).await` on the leader: one command to the
//!   driver, answered when the core settles the entry.
//!
//! - **Troupe cores alone** (a diagnostic third column, not the
//!   comparison): the same three sans-IO cores pumped by a loop in this
//!   bench, messages handed over as values, writes dropped: what the
//!   framework path costs on top of the cores is the difference.
//!
//! Per round and concurrency, the three run one after the other (openraft
//! and Troupe alternate which goes first) on a fresh cluster: warm-up,
//! then clients write for the measured window; writes/s counts the writes
//! started in the window, latency is each write's (p50/p99 over all
//! clients), CPU is all threads' schedstat run time over the window per
//! write (steadier than rates on this shared machine). Tables give medians
//! over rounds, the ratio the median of per-round ratios.
//!
//! `cargo bench --bench raft_openraft`. Knobs (env): `RAFT_BENCH_ROUNDS`
//! (5), `RAFT_BENCH_SECS` measured seconds (2, after 0.5 s of warm-up),
//! `RAFT_BENCH_CLIENTS` (`1,64,256,1024`), `RAFT_BENCH_OPENRAFT_THREADS`
//! (2), `RAFT_BENCH_TROUPE_THREADS` (1 or 2), `RAFT_BENCH_ONLY`
//! (`openraft`, `troupe` or `cores`),
//! `RAFT_BENCH_MAX_BATCH` / `RAFT_BENCH_MAX_INFLIGHT` (Troupe's, default
//! 512 / 8). Without `--bench` (as `cargo test --benches` runs it) one
//! short round at 1 and 64 clients checks that it works.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use support::{env, median, median_d, percentile};
use troupe::protocols::raft::RaftConfig;

/// mimalloc for both sides, as the `troupe` binary uses it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One measurement.
#[derive(Debug, Clone, Default)]
struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    cpu_us_per_write: f64,
}

/// The measured window and what the clients recorded in it.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn new(warmup: Duration, len: Duration) -> Self {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + len,
        }
    }
}

/// Latencies of writes started in the window, from every client, and the
/// CPU spent in it: the run's figures.
fn summarize(mut lat: Vec<Duration>, cpu_ns: u64, len: Duration) -> Run {
    lat.sort();
    let n = lat.len().max(1) as f64;
    Run {
        per_sec: lat.len() as f64 / len.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        cpu_us_per_write: cpu_ns as f64 / 1e3 / n,
    }
}

/// Samples `support::cpu_ns()` at the window's start and end.
async fn cpu_over(w: Window) -> u64 {
    tokio::time::sleep_until(w.start.into()).await;
    let c0 = support::cpu_ns();
    tokio::time::sleep_until(w.end.into()).await;
    support::cpu_ns() - c0
}

// ---- openraft --------------------------------------------------------------

mod or {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::io::Cursor;
    use std::ops::RangeBounds;
    use std::sync::{Arc, Mutex, MutexGuard};

    use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
    use openraft::{
        Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
        RaftTypeConfig, SnapshotMeta, StorageError, StoredMembership, Vote,
    };

    /// An empty write, as in openraft's benchmark.
    #[derive(Debug, Clone, Default)]
    pub struct Empty;

    /// Its empty reply.
    #[derive(Debug, Clone, Default)]
    pub struct Nothing;

    openraft::declare_raft_types!(
        pub Cfg: D = Empty, R = Nothing, Node = ()
    );

    pub type Raft = openraft::Raft<Cfg>;
    type Id = u64;

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[derive(Default)]
    struct LogInner {
        vote: Option<Vote<Id>>,
        committed: Option<LogId<Id>>,
        purged: Option<LogId<Id>>,
        entries: BTreeMap<u64, Entry<Cfg>>,
    }

    /// The in-memory log (vote, entries, purge point).
    #[derive(Clone, Default)]
    pub struct Log(Arc<Mutex<LogInner>>);

    impl RaftLogReader<Cfg> for Log {
        async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
            &mut self,
            range: RB,
        ) -> Result<Vec<Entry<Cfg>>, StorageError<Id>> {
            Ok(lock(&self.0)
                .entries
                .range(range)
                .map(|(_, e)| e.clone())
                .collect())
        }
    }

    impl RaftLogStorage<Cfg> for Log {
        type LogReader = Log;

        async fn get_log_state(&mut self) -> Result<LogState<Cfg>, StorageError<Id>> {
            let l = lock(&self.0);
            let last = l
                .entries
                .values()
                .next_back()
                .map(|e| e.log_id)
                .or(l.purged);
            Ok(LogState {
                last_purged_log_id: l.purged,
                last_log_id: last,
            })
        }

        async fn get_log_reader(&mut self) -> Log {
            self.clone()
        }

        async fn save_vote(&mut self, vote: &Vote<Id>) -> Result<(), StorageError<Id>> {
            lock(&self.0).vote = Some(*vote);
            Ok(())
        }

        async fn read_vote(&mut self) -> Result<Option<Vote<Id>>, StorageError<Id>> {
            Ok(lock(&self.0).vote)
        }

        async fn save_committed(&mut self, c: Option<LogId<Id>>) -> Result<(), StorageError<Id>> {
            lock(&self.0).committed = c;
            Ok(())
        }

        async fn read_committed(&mut self) -> Result<Option<LogId<Id>>, StorageError<Id>> {
            Ok(lock(&self.0).committed)
        }

        async fn append<I>(
            &mut self,
            entries: I,
            done: LogFlushed<Cfg>,
        ) -> Result<(), StorageError<Id>>
        where
            I: IntoIterator<Item = Entry<Cfg>> + OptionalSend,
        {
            lock(&self.0)
                .entries
                .extend(entries.into_iter().map(|e| (e.log_id.index, e)));
            done.log_io_completed(Ok(()));
            Ok(())
        }

        async fn truncate(&mut self, from: LogId<Id>) -> Result<(), StorageError<Id>> {
            lock(&self.0).entries.split_off(&from.index);
            Ok(())
        }

        async fn purge(&mut self, upto: LogId<Id>) -> Result<(), StorageError<Id>> {
            let mut l = lock(&self.0);
            l.purged = Some(upto);
            l.entries = l.entries.split_off(&(upto.index + 1));
            Ok(())
        }
    }

    #[derive(Default)]
    struct MachineInner {
        applied: Option<LogId<Id>>,
        membership: StoredMembership<Id, ()>,
        snapshot: Option<SnapshotMeta<Id, ()>>,
        snapshots: u64,
    }

    /// The state machine: holds nothing but what Raft needs (the last
    /// applied log id and membership), as in openraft's benchmark; its
    /// snapshot is that metadata and no data.
    #[derive(Clone, Default)]
    pub struct Machine(Arc<Mutex<MachineInner>>);

    impl RaftSnapshotBuilder<Cfg> for Machine {
        async fn build_snapshot(&mut self) -> Result<Snapshot<Cfg>, StorageError<Id>> {
            let mut m = lock(&self.0);
            m.snapshots += 1;
            let meta = SnapshotMeta {
                last_log_id: m.applied,
                last_membership: m.membership.clone(),
                snapshot_id: format!("{}", m.snapshots),
            };
            m.snapshot = Some(meta.clone());
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(Vec::new())),
            })
        }
    }

    impl RaftStateMachine<Cfg> for Machine {
        type SnapshotBuilder = Machine;

        async fn applied_state(
            &mut self,
        ) -> Result<(Option<LogId<Id>>, StoredMembership<Id, ()>), StorageError<Id>> {
            let m = lock(&self.0);
            Ok((m.applied, m.membership.clone()))
        }

        async fn apply<I>(&mut self, entries: I) -> Result<Vec<Nothing>, StorageError<Id>>
        where
            I: IntoIterator<Item = Entry<Cfg>> + OptionalSend,
        {
            let mut m = lock(&self.0);
            let mut replies = Vec::new();
            for e in entries {
                m.applied = Some(e.log_id);
                if let EntryPayload::Membership(mem) = e.payload {
                    m.membership = StoredMembership::new(Some(e.log_id), mem);
                }
                replies.push(Nothing);
            }
            Ok(replies)
        }

        async fn get_snapshot_builder(&mut self) -> Machine {
            self.clone()
        }

        async fn begin_receiving_snapshot(
            &mut self,
        ) -> Result<Box<<Cfg as RaftTypeConfig>::SnapshotData>, StorageError<Id>> {
            Ok(Box::new(Cursor::new(Vec::new())))
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta<Id, ()>,
            _data: Box<<Cfg as RaftTypeConfig>::SnapshotData>,
        ) -> Result<(), StorageError<Id>> {
            let mut m = lock(&self.0);
            m.applied = meta.last_log_id;
            m.membership = meta.last_membership.clone();
            m.snapshot = Some(meta.clone());
            Ok(())
        }

        async fn get_current_snapshot(
            &mut self,
        ) -> Result<Option<Snapshot<Cfg>>, StorageError<Id>> {
            Ok(lock(&self.0).snapshot.clone().map(|meta| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(Vec::new())),
            }))
        }
    }

    /// The "network": every RPC is a call on the target's `Raft`.
    #[derive(Clone, Default)]
    pub struct Router(pub Arc<Mutex<BTreeMap<Id, Raft>>>);

    impl RaftNetworkFactory<Cfg> for Router {
        type Network = Peer;
        async fn new_client(&mut self, target: Id, _node: &()) -> Peer {
            let raft = lock(&self.0)[&target].clone();
            Peer { target, raft }
        }
    }

    /// A connection to one peer: its `Raft`.
    pub struct Peer {
        target: Id,
        raft: Raft,
    }

    impl RaftNetwork<Cfg> for Peer {
        async fn append_entries(
            &mut self,
            rpc: AppendEntriesRequest<Cfg>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<Id>, RPCError<Id, (), RaftError<Id>>> {
            self.raft
                .append_entries(rpc)
                .await
                .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }

        async fn install_snapshot(
            &mut self,
            rpc: InstallSnapshotRequest<Cfg>,
            _option: RPCOption,
        ) -> Result<
            InstallSnapshotResponse<Id>,
            RPCError<Id, (), RaftError<Id, InstallSnapshotError>>,
        > {
            self.raft
                .install_snapshot(rpc)
                .await
                .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }

        async fn vote(
            &mut self,
            rpc: VoteRequest<Id>,
            _option: RPCOption,
        ) -> Result<VoteResponse<Id>, RPCError<Id, (), RaftError<Id>>> {
            self.raft
                .vote(rpc)
                .await
                .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }
    }
}

/// Three openraft voters, node 0 initialized as leader (as openraft's
/// benchmark does), every node having applied the initial membership.
async fn openraft_cluster() -> (or::Router, or::Raft) {
    let config = Arc::new(
        openraft::Config {
            election_timeout_min: 200,
            election_timeout_max: 2000,
            purge_batch_size: 1024,
            ..Default::default()
        }
        .validate()
        .expect("openraft config"),
    );
    let router = or::Router::default();
    let mut rafts = BTreeMap::new();
    for id in 0..3u64 {
        let raft = or::Raft::new(
            id,
            config.clone(),
            router.clone(),
            or::Log::default(),
            or::Machine::default(),
        )
        .await
        .expect("openraft node");
        rafts.insert(id, raft);
    }
    *router.0.lock().expect("router") = rafts.clone();
    let leader = rafts[&0].clone();
    leader
        .initialize(
            [0u64, 1, 2]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
        )
        .await
        .expect("initialize");
    for r in rafts.values() {
        r.wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(1), "initial membership")
            .await
            .expect("cluster up");
    }
    (router, leader)
}

fn measure_openraft(threads: usize, clients: usize, warmup: Duration, len: Duration) -> Run {
    let rt = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let run = rt.block_on(async move {
        let (router, leader) = openraft_cluster().await;
        let w = Window::new(warmup, len);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let l = leader.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let t0 = Instant::now();
                    if t0 >= w.end {
                        break;
                    }
                    l.client_write(or::Empty).await.expect("openraft write");
                    if t0 >= w.start {
                        lat.push(t0.elapsed());
                    }
                }
                lat
            }));
        }
        let cpu = cpu_over(w).await;
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("client"));
        }
        let rafts: Vec<or::Raft> = router.0.lock().expect("router").values().cloned().collect();
        for r in rafts {
            let _ = r.shutdown().await;
        }
        summarize(lat, cpu, len)
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    run
}

// ---- Troupe ----------------------------------------------------------------

mod tr {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, OnceLock};

    use bytes::Bytes;
    use serde::{Deserialize, Serialize};
    use troupe::prelude::*;
    use troupe::protocols::raft::{RaftConfig, StateMachine};
    use troupe_framework::transport::{InboundSender, Transport, TransportError, TransportEvent};
    use troupe_framework::NodeConfig;

    /// The state machine: the last applied index and nothing else (the
    /// command and the reply are `()`: empty writes).
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Last(u64);

    impl StateMachine for Last {
        type Command = ();
        type Reply = ();
        fn apply(&mut self, index: u64, _: ()) {
            self.0 = index;
        }
    }

    /// Frames go straight into the peer node's inbound channel.
    pub struct InMemory {
        name: String,
        peers: OnceLock<HashMap<String, InboundSender>>,
        pub refused: Arc<AtomicU64>,
    }

    impl Transport for InMemory {
        fn local_name(&self) -> &str {
            &self.name
        }
        fn send(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
            let tx = self
                .peers
                .get()
                .and_then(|p| p.get(to))
                .ok_or_else(|| TransportError::UnknownPeer(to.into()))?;
            tx.try_send(TransportEvent::Frame {
                from: self.name.clone(),
                bytes: frame,
            })
            .map_err(|_| {
                self.refused.fetch_add(1, Ordering::Relaxed);
                TransportError::QueueFull {
                    peer: to.into(),
                    capacity: QUEUE,
                }
            })
        }
        fn shutdown(&self) {}
    }

    /// Frames queued per node (as many as QUIC keeps per peer).
    const QUEUE: usize = 8192;

    /// What [`cluster`] returns: the nodes, the leader's replica (on this
    /// thread), the count of frames the transport refused (a full queue),
    /// and the second arbiter, if any (stop it after the nodes).
    pub type Cluster = (
        Vec<Node>,
        Replica<Last>,
        Arc<AtomicU64>,
        Option<actix_rt::Arbiter>,
    );

    /// Nodes a, b, c on this actix system, joined in memory, each running
    /// replica group "bench", with "a" leading. `threads` 1: all on this
    /// arbiter (thread); 2: the followers b and c on a second arbiter.
    pub async fn cluster(config: RaftConfig, threads: usize) -> Cluster {
        let names = ["a", "b", "c"];
        let refused = Arc::new(AtomicU64::new(0));
        let mut txs = HashMap::new();
        let mut rxs = Vec::new();
        for n in names {
            let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
            txs.insert(n.to_string(), tx);
            rxs.push(rx);
        }
        let members: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let second = (threads > 1).then(actix_rt::Arbiter::new);
        let mut nodes = Vec::new();
        let mut replicas = Vec::new();
        for (n, rx) in names.into_iter().zip(rxs) {
            let t = Arc::new(InMemory {
                name: n.into(),
                peers: OnceLock::new(),
                refused: refused.clone(),
            });
            let peers = txs
                .iter()
                .filter(|(k, _)| k.as_str() != n)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let _ = t.peers.set(peers);
            let (members, config) = (members.clone(), config.clone());
            let start = move || async move {
                let node = Node::builder(NodeConfig::named(n))
                    .start(t, rx)
                    .expect("node");
                let r = start_raft::<Last>(&node, "bench", &members, config)
                    .await
                    .expect("raft");
                (node, r)
            };
            let (node, r) = match &second {
                // Started on the second arbiter's thread, where its actors
                // and its dispatcher then run.
                Some(arbiter) if n != "a" => {
                    let (tx, started) = tokio::sync::oneshot::channel();
                    arbiter.spawn_fn(move || {
                        actix_rt::spawn(async move {
                            let _ = tx.send(start().await);
                        });
                    });
                    started.await.expect("follower started")
                }
                _ => start().await,
            };
            nodes.push(node);
            replicas.push(r);
        }
        // "a" leads (as openraft's bench initializes node 0 as leader): the
        // clients run on its thread.
        let t0 = std::time::Instant::now();
        loop {
            if replicas[0].is_leader() {
                break;
            }
            if let Some(r) = replicas.iter().find(|r| r.is_leader()) {
                let _ = r.transfer_leadership("a").await;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "no leader"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let leader = replicas[0].clone();
        // The leader's no-op committed: proposals commit from here on.
        leader.propose((), None).await.expect("first write");
        (nodes, leader, refused, second)
    }
}

fn measure_troupe(
    config: RaftConfig,
    threads: usize,
    clients: usize,
    warmup: Duration,
    len: Duration,
) -> (Run, u64) {
    actix_rt::System::new().block_on(async move {
        let (nodes, leader, refused, second) = tr::cluster(config, threads).await;
        let w = Window::new(warmup, len);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let l = leader.clone();
            tasks.push(actix_rt::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let t0 = Instant::now();
                    if t0 >= w.end {
                        break;
                    }
                    l.propose((), None).await.expect("troupe write");
                    if t0 >= w.start {
                        lat.push(t0.elapsed());
                    }
                }
                lat
            }));
        }
        let cpu = cpu_over(w).await;
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("client"));
        }
        for n in &nodes {
            n.shutdown();
        }
        if let Some(a) = second {
            a.stop();
        }
        (summarize(lat, cpu, len), refused.load(Ordering::Relaxed))
    })
}

// ---- Troupe's cores alone (diagnostic) -------------------------------------

/// The three sans-IO Raft cores pumped by a loop on this thread, with
/// nothing of the framework: messages handed over as values (no codec),
/// durable writes dropped (a store that costs nothing), timers ignored
/// once the leader is elected (no failure, nothing to resend), clients
/// as a FIFO of outstanding proposals, each collected with `take_result`
/// as soon as the leader applied it and replaced by the client's next.
/// openraft's bench shape exactly; what the framework path adds on top of
/// the cores is the difference to the `troupe` column.
fn measure_cores(config: RaftConfig, clients: usize, warmup: Duration, len: Duration) -> Run {
    use std::collections::VecDeque;
    use troupe::framework::sansio::{Outputs, Protocol, Recovered};
    use troupe::protocols::raft::{Membership, Raft, RaftEvent, RaftMsg, RaftTimer, Role};

    type Core = Raft<u32, tr::Last>;
    type Out = Outputs<u32, RaftMsg<u32>, RaftTimer, RaftEvent<u32>>;
    let t0 = Instant::now();
    let now = || t0.elapsed();
    let mut cores: Vec<Core> = (0..3u32)
        .map(|i| {
            Raft::recover(
                i,
                Membership::new(0..3u32),
                config.clone(),
                &Recovered::empty(),
            )
            .expect("core")
        })
        .collect();
    let mut out = Out::new();
    let mut queue: VecDeque<(u32, u32, RaftMsg<u32>)> = VecDeque::new();
    let route = |from: u32, out: &mut Out, queue: &mut VecDeque<(u32, u32, RaftMsg<u32>)>| {
        let o = out.take();
        assert!(o.write_error.is_none(), "a write failed");
        for (to, m) in o.sends {
            queue.push_back((to, from, m));
        }
    };
    for (i, c) in cores.iter_mut().enumerate() {
        c.on_start(now(), &mut out);
        c.persist(&mut out);
        route(i as u32, &mut out, &mut queue);
    }
    // Node 0 campaigns at once (pre-vote, then the election).
    cores[0].on_timer(now(), RaftTimer::Election, &mut out);
    cores[0].persist(&mut out);
    route(0, &mut out, &mut queue);
    let step = |cores: &mut Vec<Core>,
                out: &mut Out,
                queue: &mut VecDeque<(u32, u32, RaftMsg<u32>)>|
     -> bool {
        let Some((to, from, m)) = queue.pop_front() else {
            return false;
        };
        let c = &mut cores[to as usize];
        c.on_message(now(), from, m, out);
        c.persist(out);
        route(to, out, queue);
        true
    };
    while !(cores[0].role() == Role::Leader && cores[0].commit_index() >= 1) {
        assert!(step(&mut cores, &mut out, &mut queue), "no leader");
    }
    let w = Window::new(warmup, len);
    // Outstanding proposals in index order: (index, term, started).
    let mut outstanding: VecDeque<(u64, u64, Instant)> = VecDeque::new();
    let propose = |cores: &mut Vec<Core>,
                   out: &mut Out,
                   queue: &mut VecDeque<(u32, u32, RaftMsg<u32>)>|
     -> (u64, u64, Instant) {
        let started = Instant::now();
        let (i, t) = cores[0]
            .propose(now(), None, &(), out)
            .expect("the leader proposes");
        cores[0].persist(out);
        route(0, out, queue);
        (i, t, started)
    };
    for _ in 0..clients {
        let p = propose(&mut cores, &mut out, &mut queue);
        outstanding.push_back(p);
    }
    let mut lat = Vec::new();
    let mut cpu0 = None;
    let mut cpu = None;
    while !outstanding.is_empty() {
        assert!(
            step(&mut cores, &mut out, &mut queue),
            "the cores went idle with writes outstanding"
        );
        let applied = cores[0].applied_index();
        while outstanding.front().is_some_and(|(i, _, _)| *i <= applied) {
            let (i, t, started) = outstanding.pop_front().expect("front");
            let r = cores[0].take_result(i, t);
            assert!(
                matches!(r, Some(troupe::protocols::raft::Outcome::Applied(Ok(())))),
                "write {i}: {r:?}"
            );
            let done = Instant::now();
            if started >= w.start && started < w.end {
                lat.push(done - started);
            }
            if done < w.end {
                let p = propose(&mut cores, &mut out, &mut queue);
                outstanding.push_back(p);
            }
        }
        let t = Instant::now();
        if cpu0.is_none() && t >= w.start {
            cpu0 = Some(support::cpu_ns());
        }
        if cpu.is_none() && t >= w.end {
            cpu = Some(support::cpu_ns() - cpu0.unwrap_or_else(support::cpu_ns));
        }
    }
    summarize(lat, cpu.unwrap_or(0), len)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = if quick {
        1
    } else {
        env("RAFT_BENCH_ROUNDS", 5usize).max(1)
    };
    let len = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs_f64(env("RAFT_BENCH_SECS", 2.0f64))
    };
    let warmup = Duration::from_millis(if quick { 100 } else { 500 });
    let clients: Vec<usize> = std::env::var("RAFT_BENCH_CLIENTS")
        .unwrap_or_else(|_| if quick { "1,64" } else { "1,64,256,1024" }.into())
        .split(',')
        .map(|c| c.trim().parse().expect("RAFT_BENCH_CLIENTS: numbers"))
        .collect();
    let threads: usize = env("RAFT_BENCH_OPENRAFT_THREADS", 2usize);
    let troupe_threads: usize = env("RAFT_BENCH_TROUPE_THREADS", 1usize).clamp(1, 2);
    let only = std::env::var("RAFT_BENCH_ONLY").unwrap_or_default();
    let (run_or, run_tr, run_cores) = (
        only.is_empty() || only == "openraft",
        only.is_empty() || only == "troupe",
        only.is_empty() || only == "cores",
    );
    let defaults = RaftConfig::default();
    let config = RaftConfig {
        max_batch: env("RAFT_BENCH_MAX_BATCH", defaults.max_batch),
        max_inflight: env("RAFT_BENCH_MAX_INFLIGHT", defaults.max_inflight),
        ..defaults
    };
    let dropped = Arc::new(AtomicU64::new(0));
    println!(
        "Raft, 3 voters in one process, in-memory log and state machine, empty writes; \
         {rounds} round(s) of {len:?} after {warmup:?} warm-up; openraft 0.9.25 on {}; \
         Troupe on one actix system, {} (max_batch {}, max_inflight {})",
        if threads == 0 {
            "a current-thread tokio runtime".to_string()
        } else {
            format!("a {threads}-worker tokio runtime")
        },
        if troupe_threads == 1 {
            "one thread"
        } else {
            "two threads (the leader and its clients on one, the followers on the other)"
        },
        config.max_batch,
        config.max_inflight,
    );
    // Per concurrency: openraft, troupe, cores, per-round ratios troupe/openraft.
    type Row = (Vec<Run>, Vec<Run>, Vec<Run>, Vec<f64>);
    let mut results: BTreeMap<usize, Row> = BTreeMap::new();
    for round in 0..rounds {
        for (ci, &c) in clients.iter().enumerate() {
            let troupe_first = (round + ci) % 2 == 1;
            let mut got: [Option<Run>; 3] = [None, None, None];
            let order = if troupe_first { [1, 0, 2] } else { [0, 1, 2] };
            for side in order {
                match side {
                    0 if run_or => got[0] = Some(measure_openraft(threads, c, warmup, len)),
                    1 if run_tr => {
                        let (r, refused) =
                            measure_troupe(config.clone(), troupe_threads, c, warmup, len);
                        dropped.fetch_add(refused, Ordering::Relaxed);
                        got[1] = Some(r);
                    }
                    2 if run_cores => got[2] = Some(measure_cores(config.clone(), c, warmup, len)),
                    _ => {}
                }
            }
            let e = results.entry(c).or_default();
            for (i, name) in ["openraft", "troupe", "cores"].iter().enumerate() {
                if let Some(r) = &got[i] {
                    println!(
                        "  round {} clients {c:>4}: {name:<8} {:>9.0} writes/s  p50 {:>8.1} us  p99 {:>8.1} us  {:>6.2} CPU-us/write",
                        round + 1,
                        r.per_sec,
                        r.p50.as_secs_f64() * 1e6,
                        r.p99.as_secs_f64() * 1e6,
                        r.cpu_us_per_write
                    );
                    [&mut e.0, &mut e.1, &mut e.2][i].push(r.clone());
                }
            }
            if let (Some(o), Some(t)) = (&got[0], &got[1]) {
                e.3.push(t.per_sec / o.per_sec);
            }
        }
    }
    let cell = |runs: &[Run]| -> String {
        if runs.is_empty() {
            return "- | - | - | -".into();
        }
        format!(
            "{:.0} | {:.0} us | {:.0} us | {:.2}",
            median(runs.iter().map(|r| r.per_sec).collect()),
            median_d(runs.iter().map(|r| r.p50).collect()).as_secs_f64() * 1e6,
            median_d(runs.iter().map(|r| r.p99).collect()).as_secs_f64() * 1e6,
            median(runs.iter().map(|r| r.cpu_us_per_write).collect()),
        )
    };
    println!("\nmedian of {rounds} round(s):\n");
    println!(
        "| clients | openraft writes/s | p50 | p99 | CPU-us/write | Troupe writes/s | p50 | p99 | CPU-us/write | Troupe / openraft |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut behind = Vec::new();
    for (c, (o, t, _, ratios)) in &results {
        let ratio = if ratios.is_empty() {
            "-".to_string()
        } else {
            let m = median(ratios.clone());
            if m < 1.0 {
                behind.push(*c);
            }
            format!(
                "{m:.2} ({})",
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        println!("| {c} | {} | {} | {ratio} |", cell(o), cell(t));
    }
    // Cores' worth of CPU each side used: writes/s x CPU per write.
    let cores = |runs: &[Run]| -> String {
        if runs.is_empty() {
            return "-".into();
        }
        format!(
            "{:.2}",
            median(
                runs.iter()
                    .map(|r| r.per_sec * r.cpu_us_per_write / 1e6)
                    .collect()
            )
        )
    };
    println!("\nCPU used, in cores (writes/s x CPU per write; the machine has 2):\n");
    println!("| clients | openraft | Troupe |");
    println!("|---:|---:|---:|");
    for (c, (o, t, _, _)) in &results {
        println!("| {c} | {} | {} |", cores(o), cores(t));
    }
    if run_cores {
        println!("\nTroupe's cores alone, no framework (diagnostic):\n");
        println!("| clients | writes/s | p50 | p99 | CPU-us/write |");
        println!("|---:|---:|---:|---:|---:|");
        for (c, (_, _, k, _)) in &results {
            println!("| {c} | {} |", cell(k));
        }
    }
    println!(
        "\nframes the in-memory transport refused (queue full): {}",
        dropped.load(Ordering::Relaxed)
    );
    if run_or && run_tr {
        if behind.is_empty() {
            println!("goal (Troupe >= openraft writes/s at every concurrency): holds");
        } else {
            println!(
                "goal (Troupe >= openraft writes/s at every concurrency): not met at {behind:?} clients"
            );
        }
    }
}
