//! The driver's durability contract and keyed timers, on a real actix
//! system under virtual time with nodes on the simulated network:
//!
//! - a message, an event, a view and a command reply produced with durable
//!   writes leave only once the store acknowledged those writes — and so do
//!   the outputs of later inputs, even those that wrote nothing;
//! - meanwhile the core keeps taking inputs, and their writes join the
//!   store's queue (group commit);
//! - a failed write stops the protocol actor and nothing of it is sent; its
//!   supervisor restarts it from what the store holds;
//! - `set_timer` replaces a pending timer equal to the new one and
//!   `cancel_timer` removes it;
//! - an awaited request ([`DriverHandle::settle`]) is answered once the
//!   core settles its token, after the settling input's writes are durable;
//!   a refusal at once; `Dropped` when the protocol stops after taking it,
//!   `NotRunning` when it never ran.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use troupe_framework::sansio::{DurableError, Outputs, Protocol, Recovered, Settles, Write};
use troupe_framework::storage::{Completion, DurableStore, MemoryStore, StoreStats, SyncReport};
use troupe_framework::{Node, NodeConfig};
use troupe_protocols::driver::{spawn_driver, Awaited, DriverHandle, DriverSpec, WireMessage};
use troupe_transports::sim::{run_virtual, FaultPlan, SimCluster, SimNetwork};

/// "I appended record `index`".
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wrote(u64);
impl WireMessage for Wrote {
    const WIRE_NAME: &'static str = "test.journal.wrote";
}

#[derive(Debug, Clone, PartialEq)]
enum Tick {
    Beat,
    Other,
}

/// Appends a record per command and tells `peer`; remembers what it heard.
#[derive(Debug, Default)]
struct Journal {
    peer: String,
    last: u64,
    heard: Vec<u64>,
    fired: Vec<(Duration, &'static str)>,
    /// Records of the peer someone awaits hearing of; heard, not taken.
    awaited: BTreeSet<u64>,
    settled: Vec<(u64, ())>,
}

impl Settles for Journal {
    type Token = u64;
    type Settled = ();
    fn take_settled(&mut self, into: &mut Vec<(u64, ())>) {
        into.append(&mut self.settled);
    }
}

type Out = Outputs<String, Wrote, Tick, u64>;

impl Journal {
    fn recover(peer: &str, r: &Recovered) -> Self {
        Self {
            peer: peer.to_string(),
            last: r.log_bounds("log").map_or(0, |(_, l)| l),
            ..Self::default()
        }
    }
    /// Append one record and announce it; emits its index.
    fn append(&mut self, out: &mut Out) -> u64 {
        self.last += 1;
        out.append("log", self.last, &[self.last]);
        out.send(self.peer.clone(), Wrote(self.last));
        out.emit(self.last);
        self.last
    }
}

impl Protocol for Journal {
    type Id = String;
    type Msg = Wrote;
    type Timer = Tick;
    type Event = u64;
    fn on_start(&mut self, _: Duration, _: &mut Out) {}
    fn on_message(&mut self, _: Duration, _from: String, m: Wrote, _: &mut Out) {
        self.heard.push(m.0);
        if self.awaited.remove(&m.0) {
            self.settled.push((m.0, ()));
        }
    }
    fn on_timer(&mut self, now: Duration, t: Tick, _: &mut Out) {
        self.fired.push((
            now,
            match t {
                Tick::Beat => "beat",
                Tick::Other => "other",
            },
        ));
    }
}

/// A store whose acknowledgements wait until the test releases them (and
/// that can be told to fail), in front of a [`MemoryStore`] that applies
/// writes only when they are acknowledged.
#[derive(Clone, Default)]
struct GateStore {
    inner: MemoryStore,
    gate: Arc<Mutex<Gate>>,
    /// Say the store groups no commits (`[storage] group_commit = false`).
    ungrouped: bool,
}

/// A submission waiting for the test to acknowledge it.
type Waiting = (
    String,
    Vec<Write>,
    oneshot::Sender<Result<SyncReport, DurableError>>,
);

#[derive(Default)]
struct Gate {
    waiting: VecDeque<Waiting>,
    fail_next: bool,
}

impl GateStore {
    /// Submissions waiting for their acknowledgement.
    fn waiting(&self) -> usize {
        self.gate.lock().unwrap().waiting.len()
    }
    /// Acknowledge everything waiting, as one sync.
    fn release(&self) {
        let all: Vec<_> = self.gate.lock().unwrap().waiting.drain(..).collect();
        let n = all.len();
        for (ns, writes, done) in all {
            let r = match self.inner.submit(&ns, writes) {
                Completion::Done(r) => r.map(|r| SyncReport { group: n, ..r }),
                Completion::Waiting(_) => unreachable!("a memory store answers at once"),
            };
            let _ = done.send(r);
        }
    }
}

impl DurableStore for GateStore {
    fn load(&self, ns: &str) -> Result<Recovered, DurableError> {
        self.inner.load(ns)
    }
    fn submit(&self, ns: &str, writes: Vec<Write>) -> Completion {
        let mut g = self.gate.lock().unwrap();
        if std::mem::take(&mut g.fail_next) {
            return Completion::Done(Err(DurableError::Store("disk full (test)".into())));
        }
        let (tx, rx) = oneshot::channel();
        g.waiting.push_back((ns.to_string(), writes, tx));
        Completion::Waiting(rx)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn location(&self) -> String {
        "gate".into()
    }
    fn groups_commits(&self) -> bool {
        !self.ungrouped
    }
}

/// Two nodes on a reliable simulated network: `a` with the gated store,
/// `b` with a memory store; a journal on each, telling the other.
async fn pair(
    net: &SimNetwork,
    gate: &GateStore,
) -> (DriverHandle<Journal>, DriverHandle<Journal>) {
    let mut handles = Vec::new();
    for (name, peer) in [("a", "b"), ("b", "a")] {
        let (transport, rx) = net.attach(name, 1024);
        let store: Arc<dyn DurableStore> = if name == "a" {
            Arc::new(gate.clone())
        } else {
            Arc::new(MemoryStore::new())
        };
        let node: Node = Node::builder(NodeConfig::named(name))
            .store(store)
            .start(transport, rx)
            .expect("node starts");
        let spec = DriverSpec::recovering("journal", move |_n: &Node, r: &Recovered| {
            Ok(Journal::recover(peer, r))
        });
        handles.push(spawn_driver(&node, spec).await.expect("driver"));
    }
    let b = handles.pop().expect("b");
    let a = handles.pop().expect("a");
    (a, b)
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[test]
fn nothing_of_an_input_leaves_before_its_writes_are_acknowledged() {
    run_virtual(|| async {
        let net = SimNetwork::new(1, FaultPlan::reliable());
        let gate = GateStore::default();
        let (a, b) = pair(&net, &gate).await;
        let mut events = a.subscribe();

        // The command's reply waits for the sync too: ask without awaiting.
        let a2 = a.clone();
        let reply = actix::spawn(async move { a2.invoke(|c, _, out| c.append(out)).await });
        settle().await;
        assert_eq!(gate.waiting(), 1, "the append was submitted");
        assert!(!reply.is_finished(), "the reply waits for the sync");
        assert!(events.try_recv().is_err(), "the event waits for the sync");
        let heard = b.invoke(|c, _, _| c.heard.clone()).await.unwrap();
        assert!(
            heard.is_empty(),
            "the message waits for the sync: {heard:?}"
        );

        // A later input that writes nothing still waits behind the first,
        // and more writes join the queue meanwhile (the core keeps going).
        let a3 = a.clone();
        let second = actix::spawn(async move { a3.invoke(|c, _, out| c.append(out)).await });
        let a4 = a.clone();
        let plain = actix::spawn(async move {
            a4.invoke(|c, _, out| {
                out.send(c.peer.clone(), Wrote(1000));
                c.last
            })
            .await
        });
        settle().await;
        assert_eq!(gate.waiting(), 2, "the second append joined the queue");
        assert!(
            !plain.is_finished(),
            "an input without writes waits behind earlier ones"
        );
        assert!(b
            .invoke(|c, _, _| c.heard.clone())
            .await
            .unwrap()
            .is_empty());

        gate.release();
        assert_eq!(reply.await.unwrap(), Ok(1));
        assert_eq!(second.await.unwrap(), Ok(2));
        assert_eq!(plain.await.unwrap(), Ok(2));
        settle().await;
        assert_eq!(events.try_recv().ok(), Some(1));
        assert_eq!(events.try_recv().ok(), Some(2));
        let heard = b.invoke(|c, _, _| c.heard.clone()).await.unwrap();
        assert_eq!(heard, vec![1, 2, 1000], "in order, once durable");
        let disk = gate.load("journal").unwrap();
        assert_eq!(disk.log_bounds("log"), Some((1, 2)));
    });
}

#[test]
fn a_failed_write_stops_the_protocol_sends_nothing_and_it_restarts_from_the_store() {
    run_virtual(|| async {
        let net = SimNetwork::new(2, FaultPlan::reliable());
        let gate = GateStore::default();
        let (a, b) = pair(&net, &gate).await;
        let first = actix::spawn({
            let a = a.clone();
            async move { a.invoke(|c, _, out| c.append(out)).await }
        });
        settle().await;
        gate.release();
        assert_eq!(first.await.unwrap(), Ok(1));

        gate.gate.lock().unwrap().fail_next = true;
        let failed = a.invoke(|c, _, out| c.append(out)).await;
        assert!(
            failed.is_err(),
            "the command's reply never comes: {failed:?}"
        );
        settle().await;
        let heard = b.invoke(|c, _, _| c.heard.clone()).await.unwrap();
        assert_eq!(heard, vec![1], "nothing of the failed input was sent");

        // Restarted by its supervisor from the store: record 1 only.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let last = tokio::time::timeout(Duration::from_secs(5), a.invoke(|c, _, _| c.last))
            .await
            .expect("the restarted protocol answers")
            .expect("restarted");
        assert_eq!(last, 1, "rebuilt from what was acknowledged");
        let next = actix::spawn({
            let a = a.clone();
            async move { a.invoke(|c, _, out| c.append(out)).await }
        });
        settle().await;
        gate.release();
        assert_eq!(
            next.await.unwrap(),
            Ok(2),
            "appends continue from the store"
        );
    });
}

#[test]
fn awaited_requests_are_answered_when_settled_and_durable_or_said_lost() {
    run_virtual(|| async {
        let net = SimNetwork::new(3, FaultPlan::reliable());
        let gate = GateStore::default();
        let (a, b) = pair(&net, &gate).await;
        // `a` awaits hearing of `b`'s record `n`, appending one of its own
        // when it takes the request; the answer is what it heard by then.
        let await_heard = |a: &DriverHandle<Journal>, n: u64| {
            let a = a.clone();
            actix::spawn(async move {
                a.settle(
                    move |c: &mut Journal, _, out| {
                        if n == 0 {
                            return Err(vec![]); // refused at once
                        }
                        c.append(out);
                        c.awaited.insert(n);
                        Ok(n)
                    },
                    |c, token, ()| {
                        assert_eq!(c.heard.last(), Some(&token));
                        c.heard.clone()
                    },
                )
                .await
            })
        };
        assert_eq!(await_heard(&a, 0).await.unwrap(), Awaited::Done(vec![]));
        let first = await_heard(&a, 1);
        settle().await;
        gate.release();
        b.invoke(|c, _, out| c.append(out)).await.unwrap();
        settle().await;
        assert_eq!(first.await.unwrap(), Awaited::Done(vec![1]));

        // Settled while `a`'s own write waits for its sync: the answer
        // waits too.
        let second = await_heard(&a, 2);
        settle().await;
        b.invoke(|c, _, out| c.append(out)).await.unwrap();
        settle().await;
        assert!(!second.is_finished(), "the answer waits for the sync");
        gate.release();
        settle().await;
        assert_eq!(second.await.unwrap(), Awaited::Done(vec![1, 2]));

        // Taken, then the protocol stops (a failed write): `Dropped`.
        let third = await_heard(&a, 3);
        settle().await;
        gate.release();
        settle().await;
        gate.gate.lock().unwrap().fail_next = true;
        let _ = a.invoke(|c, _, out| c.append(out)).await;
        assert_eq!(third.await.unwrap(), Awaited::Dropped);

        // The restarted protocol (a new address) answers again.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let fourth = await_heard(&a, 3);
        settle().await;
        gate.release();
        b.invoke(|c, _, out| c.append(out)).await.unwrap();
        settle().await;
        assert_eq!(fourth.await.unwrap(), Awaited::Done(vec![3]));

        // A protocol that never ran: `NotRunning`.
        let (transport, rx) = net.attach("c", 16);
        let node = Node::builder(NodeConfig::named("c"))
            .start(transport, rx)
            .expect("node starts");
        let (_, idle) = DriverSpec::new("journal", |_| Journal::default()).into_actor(&node);
        let never = idle
            .settle(|_: &mut Journal, _, _| Ok(1), |_, _, ()| 0u8)
            .await;
        assert_eq!(never, Awaited::NotRunning);
    });
}

#[test]
fn keyed_timers_replace_and_cancel_in_the_driver() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(3, FaultPlan::reliable());
        let node = cluster.add_node("a").await.unwrap();
        let j = spawn_driver(
            &node,
            DriverSpec::new("journal", |_| Journal {
                peer: "a".into(),
                ..Journal::default()
            }),
        )
        .await
        .unwrap();
        let t0 = node.now();
        j.invoke(|_, _, out| {
            out.set_timer(Duration::from_secs(1), Tick::Beat);
            out.set_timer(Duration::from_secs(3), Tick::Beat); // replaces the first
            out.set_timer(Duration::from_secs(2), Tick::Other);
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        j.invoke(|_, _, out| out.cancel_timer(Tick::Other))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let fired = j.invoke(|c, _, _| c.fired.clone()).await.unwrap();
        let fired: Vec<(u64, &str)> = fired
            .into_iter()
            .map(|(at, what)| ((at - t0).as_millis() as u64, what))
            .collect();
        assert_eq!(fired.len(), 1, "one timer fired: {fired:?}");
        assert_eq!(fired[0].1, "beat");
        assert!(
            (2990..=3010).contains(&fired[0].0),
            "the replacing timer fired, at 3 s: {fired:?}"
        );
    });
}

#[test]
fn a_store_without_group_commit_gets_each_inputs_writes_on_their_own() {
    for ungrouped in [false, true] {
        run_virtual(move || async move {
            let net = SimNetwork::new(1, FaultPlan::reliable());
            let gate = GateStore {
                ungrouped,
                ..GateStore::default()
            };
            let (a, _b) = pair(&net, &gate).await;
            // Three appends in one turn of the driver.
            let pending: Vec<_> = (0..3)
                .map(|_| {
                    let a = a.clone();
                    actix::spawn(async move { a.invoke(|c, _, out| c.append(out)).await })
                })
                .collect();
            settle().await;
            let want = if ungrouped { 3 } else { 1 };
            assert_eq!(gate.waiting(), want, "submissions, ungrouped: {ungrouped}");
            gate.release();
            let mut got = Vec::new();
            for p in pending {
                got.push(p.await.unwrap().unwrap());
            }
            got.sort_unstable();
            assert_eq!(got, [1, 2, 3]);
        });
    }
}
