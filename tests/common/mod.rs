//! Shared actors for the integration tests: a ledger whose side effects are
//! counted outside the actor, so tests can check at-most-once execution.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use troupe::framework::{remote_message, OrFail};

/// Apply `amount` once; `op` identifies the operation for the side-effect log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Apply {
    pub op: u64,
    pub amount: i64,
}
remote_message!(Apply, "test.apply", i64);

/// Fire-and-forget note.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note(pub u64);
remote_message!(Note, "test.note", ());

/// Make the handler fail (returns an error and stops the actor).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail;
remote_message!(Fail, "test.fail", Result<(), String>);

/// Make the handler panic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Panic;
remote_message!(Panic, "test.panic", ());

/// Make the actor stop itself (`ctx.stop()`), without an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Halt;
remote_message!(Halt, "test.halt", ());

/// Make the actor wait `0` ms (`ctx.wait`) before it takes its next
/// message: what arrives meanwhile queues in its inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold(pub u64);
remote_message!(Hold, "test.hold", ());

/// What happened, visible to the test across restarts.
#[derive(Clone, Default)]
pub struct Effects {
    pub executions: Arc<Mutex<BTreeMap<u64, u32>>>,
    pub notes: Arc<Mutex<Vec<u64>>>,
    pub starts: Arc<AtomicU32>,
    /// When each instance started (tokio clock: virtual time in simulations).
    pub started_at: Arc<Mutex<Vec<tokio::time::Instant>>>,
    /// When each `Panic` was handled, just before the panic.
    pub panicked_at: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl Effects {
    pub fn executions_of(&self, op: u64) -> u32 {
        self.executions
            .lock()
            .unwrap()
            .get(&op)
            .copied()
            .unwrap_or(0)
    }
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }
}

pub struct Ledger {
    balance: i64,
    effects: Effects,
}

impl Ledger {
    pub fn new(effects: Effects) -> Self {
        Self {
            balance: 0,
            effects,
        }
    }
}

impl Actor for Ledger {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        self.effects.starts.fetch_add(1, Ordering::SeqCst);
        self.effects
            .started_at
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
    }
}

impl Handler<Apply> for Ledger {
    type Result = i64;
    fn handle(&mut self, m: Apply, _: &mut Context<Self>) -> i64 {
        *self
            .effects
            .executions
            .lock()
            .unwrap()
            .entry(m.op)
            .or_default() += 1;
        self.balance += m.amount;
        self.balance
    }
}

impl Handler<Note> for Ledger {
    type Result = ();
    fn handle(&mut self, m: Note, _: &mut Context<Self>) {
        self.effects.notes.lock().unwrap().push(m.0);
    }
}

impl Handler<Fail> for Ledger {
    type Result = Result<(), String>;
    fn handle(&mut self, _: Fail, ctx: &mut Context<Self>) -> Result<(), String> {
        Err::<(), String>("asked to fail".into()).or_fail(ctx)
    }
}

impl Handler<Panic> for Ledger {
    type Result = ();
    fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
        self.effects
            .panicked_at
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        panic!("asked to panic (this panic is expected by the test)");
    }
}

impl Handler<Hold> for Ledger {
    type Result = ();
    fn handle(&mut self, m: Hold, ctx: &mut Context<Self>) {
        ctx.wait(actix::fut::wrap_future(tokio::time::sleep(
            Duration::from_millis(m.0),
        )));
    }
}

impl Handler<Halt> for Ledger {
    type Result = ();
    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The spec for a ledger named `name` recording into `effects`.
pub fn ledger(name: &str, effects: &Effects) -> troupe::framework::ActorSpec<Ledger> {
    let e = effects.clone();
    troupe::framework::ActorSpec::new(name, move || Ledger::new(e.clone()))
        .handles::<Apply>()
        .handles::<Note>()
        .handles::<Fail>()
        .handles::<Panic>()
        .handles::<Halt>()
        .handles::<Hold>()
}

/// A simulated cluster (`seed`, reliable network) of `nodes`, each running
/// the default failure detector over the others and then `setup(node,
/// members)` (every node's start and restart); returns once the detectors
/// had three virtual seconds to see everyone up.
pub async fn detecting_cluster<F, Fut>(
    seed: u64,
    nodes: &[&str],
    setup: F,
) -> troupe::transports::sim::SimCluster
where
    F: Fn(troupe::framework::Node, Vec<String>) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    use troupe::transports::sim::{FaultPlan, SimCluster};
    let members: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    let mut sim = SimCluster::new(seed, FaultPlan::reliable());
    let setup = std::rc::Rc::new(setup);
    let all = members.clone();
    sim.on_start(move |node: troupe::framework::Node| {
        let (setup, members) = (setup.clone(), all.clone());
        async move {
            let peers: Vec<String> = members
                .iter()
                .filter(|m| *m != node.name())
                .cloned()
                .collect();
            let fd = troupe::protocols::fd::FailureDetectorConfig::default();
            troupe::failure_detector::start_failure_detector(&node, &fd, &peers)
                .await
                .unwrap();
            setup(node, members).await;
        }
    });
    for n in &members {
        sim.add_node(n).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim
}
