//! Local `tell` through Troupe versus plain actix `do_send`, same actor, same run.
//!
//! Both sides send N messages to a counting actor on the same arbiter, in
//! chunks of 10,000 each followed by one request that waits for the mailbox
//! to drain (so the queue stays realistic instead of holding millions); the
//! rate is N over the whole time. Each round measures both, back to back,
//! and the order rotates from round to round (plain actix first in even
//! rounds, Troupe first in odd ones) so that neither side always runs on
//! the warmer or the quieter half; the ratio reported is the median of the
//! per-round ratios (each compares two back-to-back measurements).
//!
//! `cargo bench --bench local_tell` (set `TROUPE_BENCH_N` to change N,
//! `TROUPE_BENCH_ROUNDS` the rounds, default 9).

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use troupe::framework::{remote_message, ActorSpec, Node, NodeConfig};
use troupe::transports::sim::{FaultPlan, SimNetwork};

#[derive(Debug, Serialize, Deserialize)]
struct Bump(u64);
remote_message!(Bump, "bench.bump", ());

#[derive(Debug, Serialize, Deserialize)]
struct Read;
remote_message!(Read, "bench.read", u64);

#[derive(Default)]
struct Counter(u64);
impl Actor for Counter {
    type Context = Context<Self>;
}
impl Handler<Bump> for Counter {
    type Result = ();
    fn handle(&mut self, m: Bump, _: &mut Context<Self>) {
        self.0 = self.0.wrapping_add(m.0);
    }
}
impl Handler<Read> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Read, _: &mut Context<Self>) -> u64 {
        self.0
    }
}

const CHUNK: u64 = 10_000;

/// One side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Plain actix `do_send`.
    Plain,
    /// Troupe's `RemoteRef::tell`.
    Troupe,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Side::Plain => Side::Troupe,
            Side::Troupe => Side::Plain,
        }
    }
}

/// Which side runs first in `round`: they take turns.
fn first_in_round(round: usize) -> Side {
    if round.is_multiple_of(2) {
        Side::Plain
    } else {
        Side::Troupe
    }
}

/// The bench's own check (it exits non-zero when it fails): over the
/// rounds, each side ran first as often as the other, give or take one.
fn check_rotation(order: &[Side]) {
    let plain_first = order.iter().filter(|s| **s == Side::Plain).count();
    let troupe_first = order.len() - plain_first;
    assert!(
        plain_first.abs_diff(troupe_first) <= 1,
        "the order did not rotate: plain actix first in {plain_first} rounds, troupe first in {troupe_first}"
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::var("TROUPE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let rounds: usize = std::env::var("TROUPE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9)
        .max(1);
    let sys = actix_rt::System::new();
    let (plain, framework, ratio) = sys.block_on(async move {
        let net = SimNetwork::new(1, FaultPlan::reliable());
        let (transport, rx) = net.attach("bench", 1024);
        let node = Node::builder(NodeConfig::named("bench"))
            .start(transport, rx)
            .expect("node starts");
        node.spawn(
            ActorSpec::new("counter", Counter::default)
                .handles::<Bump>()
                .handles::<Read>(),
        )
        .await
        .expect("spawn");
        let bump = node.lookup::<Bump>("bench/counter").expect("path");
        let read = node.lookup::<Read>("bench/counter").expect("path");
        let plain_addr = Counter::default().start();

        let (mut plain, mut framework, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        // Which side ran first in each round.
        let mut order = Vec::new();
        for round in 0..rounds {
            let first = first_in_round(round);
            order.push(first);
            let (mut p, mut f) = (0.0, 0.0);
            for side in [first, first.other()] {
                let t = Instant::now();
                match side {
                    Side::Plain => {
                        for chunk in 0..n / CHUNK {
                            for i in 0..CHUNK {
                                plain_addr.do_send(Bump(chunk * CHUNK + i));
                            }
                            plain_addr.send(Read).await.expect("plain actor alive");
                        }
                        p = n as f64 / t.elapsed().as_secs_f64();
                    }
                    Side::Troupe => {
                        for chunk in 0..n / CHUNK {
                            for i in 0..CHUNK {
                                bump.tell(Bump(chunk * CHUNK + i)).expect("local tell");
                            }
                            read.ask(Read)
                                .timeout(Duration::from_secs(60))
                                .await
                                .expect("framework actor alive");
                        }
                        f = n as f64 / t.elapsed().as_secs_f64();
                    }
                }
            }
            plain.push(p);
            framework.push(f);
            ratio.push(f / p);
        }
        check_rotation(&order);
        (median(plain), median(framework), median(ratio))
    });
    println!(
        "local tell, {n} messages x {rounds} rounds (median; plain actix first in even rounds, troupe first in odd ones):"
    );
    println!("  plain actix do_send      {:>12.0} msg/s", plain);
    println!("  troupe RemoteRef::tell   {:>12.0} msg/s", framework);
    println!(
        "  ratio troupe/actix       {:>12.3}  (median of the per-round ratios; target >= 0.8)",
        ratio
    );
}
