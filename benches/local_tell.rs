//! Local `tell` through Troupe versus plain actix `do_send`, same actor, same run.
//!
//! Both sides send N messages to a counting actor on the same arbiter, in
//! chunks of 10,000 each followed by one request that waits for the mailbox
//! to drain (so the queue stays realistic instead of holding millions); the
//! rate is N over the whole time. Rounds alternate between the two so machine
//! noise hits both, and the ratio reported is the median of the per-round
//! ratios (each compares two back-to-back measurements).
//!
//! `cargo bench --bench local_tell` (set `TROUPE_BENCH_N` to change N).

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::var("TROUPE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let rounds = 9;
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
        for _ in 0..rounds {
            let t = Instant::now();
            for chunk in 0..n / CHUNK {
                for i in 0..CHUNK {
                    plain_addr.do_send(Bump(chunk * CHUNK + i));
                }
                plain_addr.send(Read).await.expect("plain actor alive");
            }
            plain.push(n as f64 / t.elapsed().as_secs_f64());

            let t = Instant::now();
            for chunk in 0..n / CHUNK {
                for i in 0..CHUNK {
                    bump.tell(Bump(chunk * CHUNK + i)).expect("local tell");
                }
                read.ask(Read)
                    .timeout(Duration::from_secs(60))
                    .await
                    .expect("framework actor alive");
            }
            framework.push(n as f64 / t.elapsed().as_secs_f64());
            ratio.push(framework[framework.len() - 1] / plain[plain.len() - 1]);
        }
        (median(plain), median(framework), median(ratio))
    });
    println!("local tell, {n} messages x {rounds} rounds (median):");
    println!("  plain actix do_send      {:>12.0} msg/s", plain);
    println!("  troupe RemoteRef::tell   {:>12.0} msg/s", framework);
    println!(
        "  ratio troupe/actix       {:>12.3}  (median of the per-round ratios; target >= 0.8)",
        ratio
    );
}
