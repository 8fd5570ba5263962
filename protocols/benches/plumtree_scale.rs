//! Plumtree against push gossip (rumor mongering, feedback + coin) at
//! N = 256 and 1024 on the deterministic simulated network. Run with
//! `cargo bench -p troupe-protocols --bench plumtree_scale`.
//!
//! Network: no loss, one-way delay uniform in 2..10 ms; default settings
//! (fanout 3, 50 ms rounds, stop probability 1/4, graft after 100 ms,
//! anti-entropy backing pass every 500 ms with one peer). Workload: 10
//! warm-up broadcasts (Plumtree builds its tree), then 30 measured
//! broadcasts from random members, 500 ms apart (`GRAFT_MS=<ms>` sets
//! another graft timeout). Then one tree link of
//! Plumtree (a member and one of its eager peers; the same pair for rumor
//! mongering) is cut both ways, and 10 more broadcasts follow, 300 ms
//! apart ("recovery"). Reported per broadcast:
//! * payload messages (Plumtree: gossip; rumors: rumor), messages of the
//!   dissemination path (Plumtree: gossip, ihave, graft, prune; rumors:
//!   rumor, feedback) and of the anti-entropy pass
//!   (background: it runs while a member holds a message not known stable);
//! * redundancy: copies of a payload received after it was delivered, per
//!   delivery;
//! * time for a broadcast to reach every member: median and max over the
//!   broadcasts (rumor mongering alone leaves a residue: the anti-entropy
//!   pass reaches the rest, which is the max), and the share of deliveries
//!   made by the dissemination path alone within 1 s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use troupe_protocols::broadcast::epidemic::Spread;
use troupe_protocols::broadcast::{
    BroadcastConfig, BroadcastCore, BroadcastEvent, Engine, Epidemic, Plumtree,
};
use troupe_protocols::testkit::{NetFaults, Observer, OracleConfig, Sim};

const WARM_UP: usize = 10;
const MEASURED: usize = 30;
const RECOVERY: usize = 10;

/// A spread whose eager links (Plumtree's tree) can be read.
trait Links: Spread<u32> {
    /// The eager peers (none for a spread without a tree).
    fn eager_links(&self) -> Vec<u32>;
}

impl Links for plumtree::Tree {
    fn eager_links(&self) -> Vec<u32> {
        self.eager().iter().copied().collect()
    }
}

impl Links for rumor::Rumors {
    fn eager_links(&self) -> Vec<u32> {
        Vec::new()
    }
}

/// When each member delivered each payload.
#[derive(Default)]
struct Arrivals(BTreeMap<Vec<u8>, Vec<Duration>>);

impl<S: Spread<u32>> Observer<Epidemic<u32, S>> for Arrivals {
    fn on_event(&mut self, now: Duration, _: &u32, e: &BroadcastEvent<u32>) -> Result<(), String> {
        let BroadcastEvent::Delivered { payload, .. } = e;
        self.0.entry(payload.clone()).or_default().push(now);
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
struct Row {
    payloads: f64,
    path: f64,
    ae: f64,
    redundancy: f64,
    median_ms: f64,
    max_ms: f64,
    within_1s: f64,
    grafts: f64,
    swaps: f64,
    /// The eager graph: (mean over members of the farthest member's
    /// distance, the largest such distance), in hops; `inf` if it is not
    /// connected.
    depth: (f64, f64),
}

const PATH: [&str; 6] = ["gossip", "ihave", "graft", "prune", "rumor", "feedback"];

fn phase<S: Links>(
    sim: &mut Sim<Epidemic<u32, S>>,
    obs: &mut Arrivals,
    rng: &mut ChaCha8Rng,
    count: usize,
    gap: Duration,
    tag: u32,
    origin: Option<u32>,
) -> Row {
    let n = sim.cores().count() as u32;
    let members: Vec<u32> = (1..=n).collect();
    sim.reset_counts();
    obs.0.clear();
    let dup0: u64 = sim.cores().map(|(_, c)| c.gossip_stats().duplicates).sum();
    let del0: u64 = sim.cores().map(|(_, c)| c.stats().delivered).sum();
    let graft0: u64 = sim.cores().map(|(_, c)| c.gossip_stats().grafts).sum();
    let swap0: u64 = sim.cores().map(|(_, c)| c.gossip_stats().swaps).sum();
    let mut sent_at = Vec::new();
    for i in 0..count {
        let m = origin.unwrap_or_else(|| *members.choose(rng).unwrap());
        let payload = (tag * 1000 + i as u32).to_le_bytes().to_vec();
        sent_at.push((payload.clone(), sim.now()));
        sim.command(&m, obs, |c, now, o| c.broadcast(payload, now, o))
            .unwrap();
        sim.run_for(gap, obs).unwrap();
    }
    // Let the anti-entropy pass reach what the dissemination path missed.
    sim.run_for(Duration::from_secs(5), obs).unwrap();
    let b = count as f64;
    let counts = sim.sent_counts();
    let path: u64 = PATH
        .iter()
        .map(|k| counts.get(k).copied().unwrap_or(0))
        .sum();
    let ae: u64 = sim.total_sent() - path;
    let dup: u64 = sim
        .cores()
        .map(|(_, c)| c.gossip_stats().duplicates)
        .sum::<u64>()
        - dup0;
    let del: u64 = sim.cores().map(|(_, c)| c.stats().delivered).sum::<u64>() - del0;
    let grafts: u64 = sim
        .cores()
        .map(|(_, c)| c.gossip_stats().grafts)
        .sum::<u64>()
        - graft0;
    let swaps: u64 = sim
        .cores()
        .map(|(_, c)| c.gossip_stats().swaps)
        .sum::<u64>()
        - swap0;
    let mut to_all = Vec::new();
    let mut quick = 0usize;
    for (p, at) in &sent_at {
        let times = obs.0.get(p).cloned().unwrap_or_default();
        quick += times
            .iter()
            .filter(|t| **t - *at <= Duration::from_secs(1))
            .count();
        let last = if times.len() == n as usize {
            times
                .iter()
                .max()
                .map_or(f64::INFINITY, |t| (*t - *at).as_secs_f64() * 1e3)
        } else {
            f64::INFINITY
        };
        to_all.push(last);
    }
    to_all.sort_by(|a, b| a.total_cmp(b));
    let payloads = ["gossip", "rumor"]
        .iter()
        .map(|k| counts.get(k).copied().unwrap_or(0))
        .sum::<u64>();
    Row {
        payloads: payloads as f64 / b,
        path: path as f64 / b,
        ae: ae as f64 / b,
        redundancy: dup as f64 / del.max(1) as f64,
        median_ms: to_all[to_all.len() / 2],
        max_ms: to_all[to_all.len() - 1],
        within_1s: quick as f64 / (b * f64::from(n)),
        grafts: grafts as f64 / b,
        swaps: swaps as f64 / b,
        depth: eager_depth(sim, n),
    }
}

/// The eager links' graph, from every member: (mean, max) of its
/// eccentricity in hops (a link counts if either end holds it eager).
fn eager_depth<S: Links>(sim: &Sim<Epidemic<u32, S>>, n: u32) -> (f64, f64) {
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n as usize + 1];
    let mut any = false;
    for (id, c) in sim.cores() {
        for p in c.spread().eager_links() {
            any = true;
            adj[*id as usize].push(p as usize);
            adj[p as usize].push(*id as usize);
        }
    }
    if !any {
        return (f64::NAN, f64::NAN);
    }
    let (mut sum, mut max) = (0f64, 0f64);
    for s in 1..=n as usize {
        let mut dist = vec![u32::MAX; n as usize + 1];
        dist[s] = 0;
        let mut queue = std::collections::VecDeque::from([s]);
        while let Some(u) = queue.pop_front() {
            for &v in &adj[u] {
                if dist[v] == u32::MAX {
                    dist[v] = dist[u] + 1;
                    queue.push_back(v);
                }
            }
        }
        let ecc = dist[1..]
            .iter()
            .map(|d| {
                if *d == u32::MAX {
                    f64::INFINITY
                } else {
                    f64::from(*d)
                }
            })
            .fold(0f64, f64::max);
        sum += ecc;
        max = max.max(ecc);
    }
    (sum / f64::from(n), max)
}

fn run<S: Links>(
    n: u32,
    config: BroadcastConfig,
    cut: impl Fn(&Sim<Epidemic<u32, S>>) -> (u32, u32),
) -> (Row, Row, Row, (u32, u32)) {
    let members: Vec<u32> = (1..=n).collect();
    let m2 = members.clone();
    let faults = NetFaults {
        loss: 0.0,
        duplicate: 0.0,
        min_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(10),
    };
    let mut sim: Sim<Epidemic<u32, S>> = Sim::new(
        42,
        members,
        Box::new(move |id, _| Epidemic::new(*id, m2.clone(), config.clone(), None)),
        faults,
        OracleConfig::default(),
    );
    let mut obs = Arrivals::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    sim.start(&mut obs).unwrap();
    phase(
        &mut sim,
        &mut obs,
        &mut rng,
        WARM_UP,
        Duration::from_millis(300),
        1,
        None,
    );
    let steady = phase(
        &mut sim,
        &mut obs,
        &mut rng,
        MEASURED,
        Duration::from_millis(500),
        2,
        None,
    );
    let (a, b) = cut(&sim);
    sim.block(&a, &b, &mut obs).unwrap();
    sim.block(&b, &a, &mut obs).unwrap();
    let recovery = phase(
        &mut sim,
        &mut obs,
        &mut rng,
        RECOVERY,
        Duration::from_millis(300),
        3,
        None,
    );
    let one = phase(
        &mut sim,
        &mut obs,
        &mut rng,
        MEASURED,
        Duration::from_millis(300),
        4,
        Some(n / 2),
    );
    (steady, recovery, one, (a, b))
}

/// Default settings; `GRAFT_MS` overrides the graft timeout.
fn config() -> BroadcastConfig {
    let mut c = BroadcastConfig::default();
    if let Some(ms) = std::env::var("GRAFT_MS").ok().and_then(|v| v.parse().ok()) {
        c.gossip.graft_timeout = Duration::from_millis(ms);
    }
    c
}

/// The tree optimisation's threshold of the optimised rows: 3 hops, or
/// `OPT_HOPS`.
fn opt_hops() -> u32 {
    std::env::var("OPT_HOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A tree link of a warmed-up Plumtree group: member 1 and its first
/// eager peer.
fn tree_link(sim: &Sim<Plumtree<u32>>) -> (u32, u32) {
    let eager = sim.core(&1).map(|c| c.spread().eager().clone());
    (1, eager.and_then(|e| e.first().copied()).unwrap_or(2))
}

fn print(name: &str, n: u32, phase: &str, r: &Row) {
    println!(
        "| {name} | {n} | {phase} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.3} | {:.2} | {:.2} | {:.1} / {:.0} |",
        r.payloads,
        r.path,
        r.ae,
        r.redundancy,
        r.median_ms,
        r.max_ms,
        r.within_1s,
        r.grafts,
        r.swaps,
        r.depth.0,
        r.depth.1
    );
}

fn main() {
    println!(
        "| algorithm | N | phase | payload msgs / broadcast | dissemination msgs / broadcast | anti-entropy msgs / broadcast | duplicates / delivery | to all, median ms | to all, max ms | delivered within 1 s | grafts / broadcast | swaps / broadcast | tree depth, mean / max hops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in [256u32, 1024] {
        let t = Instant::now();
        let mut cut = (0, 0);
        for (name, hops) in [("plumtree", 0), ("plumtree, optimised", opt_hops())] {
            let mut c = config();
            c.gossip.optimization_threshold = hops;
            let (s, r, o, at) = run::<plumtree::Tree>(n, c, tree_link);
            let name = format!(
                "{name}{}",
                if hops > 0 {
                    format!(" ({hops} hops)")
                } else {
                    String::new()
                }
            );
            print(&name, n, "steady", &s);
            print(&name, n, &format!("cut {}-{}", at.0, at.1), &r);
            print(&name, n, &format!("one origin ({})", n / 2), &o);
            if hops == 0 {
                cut = at;
            }
        }
        let (s, r, o, _) = run::<rumor::Rumors>(n, config(), |_| cut);
        print("rumor", n, "steady", &s);
        print("rumor", n, &format!("cut {}-{}", cut.0, cut.1), &r);
        print("rumor", n, &format!("one origin ({})", n / 2), &o);
        eprintln!("N={n}: {:.1} s", t.elapsed().as_secs_f64());
    }
}

mod plumtree {
    pub type Tree = troupe_protocols::broadcast::plumtree::Tree<u32>;
}
mod rumor {
    pub type Rumors = troupe_protocols::broadcast::rumor::Rumors<u32>;
}
