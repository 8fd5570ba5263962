//! QUIC transport benchmark against raw quinn, in the same run, over loopback.
//!
//! (a) one-way throughput of ~100-byte frames through two `QuicTransport`s;
//! (b) the same framing over one long-lived raw quinn stream (mutual TLS too);
//! (c) request/response round trip, one in flight, transport vs raw quinn;
//! (d) time to connect and authenticate a new peer (handshake + hello) vs a raw
//!     quinn handshake;
//! (e) memory per idle connection (RSS delta for 100 connections).
//!
//! Each side runs on its own actix `Arbiter` (a current-thread tokio runtime on its
//! own thread), as nodes do. Run with
//! `cargo bench -p troupe-transports --bench quic_throughput` (env `QUIC_BENCH_N`
//! sets the frame count, default 2,000,000).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::Arbiter;
use bytes::Bytes;
use support::quic_support::{config, reserve_addr};
use support::{
    bind_on, on, percentile, raw_client_on, raw_rtt, raw_server, rss_kib, transport_pair,
    transport_rtt, transport_throughput, RawOneWay,
};
use troupe_framework::transport::{InboundEvents, Transport, TransportEvent};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::QuicTransport;

const FRAME: usize = 100;

// ----- (d) connect + authenticate, (e) memory -------------------------------------

/// A hub on `xa` that accepts `k` spokes named `prefix-i` bound on `xb`
/// (inbound capacities `hub_cap` and `spoke_cap`). Returns the spoke names,
/// the hub, and the spokes (keep them alive).
#[allow(clippy::type_complexity)]
async fn hub_and_spokes(
    xa: &Arbiter,
    xb: &Arbiter,
    ca: &ClusterCa,
    prefix: &str,
    k: usize,
    hub_cap: usize,
    spoke_cap: usize,
) -> (
    Vec<String>,
    (Arc<QuicTransport>, InboundEvents),
    Vec<(Arc<QuicTransport>, InboundEvents)>,
) {
    let names: Vec<String> = (0..k).map(|i| format!("{prefix}-{i}")).collect();
    let addrs: Vec<SocketAddr> = names.iter().map(|_| reserve_addr()).collect();
    let hub_addr = reserve_addr();
    let peers: Vec<(&str, SocketAddr)> = names
        .iter()
        .map(|n| n.as_str())
        .zip(addrs.iter().copied())
        .collect();
    let hub = bind_on(
        xa,
        config("hub", hub_addr, ca.issue("hub").expect("hub"), &peers),
        hub_cap,
    )
    .await;
    let mut spokes = Vec::new();
    for (name, addr) in names.iter().zip(&addrs) {
        let cfg = config(
            name,
            *addr,
            ca.issue(name).expect("spoke cert"),
            &[("hub", hub_addr)],
        );
        spokes.push(bind_on(xb, cfg, spoke_cap).await);
    }
    (names, hub, spokes)
}

async fn connect_times(
    xa: &Arbiter,
    xb: &Arbiter,
    ca: &ClusterCa,
    k: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (names, (hub, mut hub_rx), keep) = hub_and_spokes(xa, xb, ca, "peer", k, 1024, 64).await;
    let names2 = names.clone();
    let ours = on(xa, async move {
        let mut out = Vec::new();
        for name in &names2 {
            let t0 = Instant::now();
            hub.send(name, Bytes::from_static(b"hello")).expect("send");
            loop {
                match hub_rx.recv().await {
                    Some(TransportEvent::PeerUp { peer }) if &peer == name => break,
                    Some(_) => {}
                    None => panic!("closed"),
                }
            }
            out.push(t0.elapsed());
        }
        out
    })
    .await;
    // Raw quinn: handshake only (mutual TLS), same machine, same arbiters.
    let (server, addr) = raw_server(xb, ca).await;
    xb.spawn(async move {
        while let Some(incoming) = server.accept().await {
            actix_rt::spawn(async move {
                if let Ok(conn) = incoming.await {
                    let _ = conn.closed().await;
                }
            });
        }
    });
    let ep = raw_client_on(xa, ca).await;
    let raw = on(xa, async move {
        let mut out = Vec::new();
        for _ in 0..k {
            let t0 = Instant::now();
            let conn = ep
                .connect(addr, "raw-server")
                .expect("connect")
                .await
                .expect("hs");
            out.push(t0.elapsed());
            conn.close(0u32.into(), b"");
        }
        out
    })
    .await;
    drop(keep);
    (ours, raw)
}

async fn memory_per_connection(
    xa: &Arbiter,
    xb: &Arbiter,
    ca: &ClusterCa,
    k: usize,
) -> (u64, u64, u64) {
    let (names, (hub, mut hub_rx), keep) = hub_and_spokes(xa, xb, ca, "idle", k, 4096, 16).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    let names2 = names.clone();
    on(xa, async move {
        for name in &names2 {
            hub.send(name, Bytes::from_static(b"x")).expect("send");
        }
        let mut up = 0;
        while up < names2.len() {
            if let Some(TransportEvent::PeerUp { .. }) = hub_rx.recv().await {
                up += 1;
            }
        }
        (hub, hub_rx)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    drop(keep);
    (before, after, after.saturating_sub(before) / k as u64)
}

fn main() {
    let n: u64 = std::env::var("QUIC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let xa = Arbiter::new();
        let xb = Arbiter::new();
        let ca = ClusterCa::generate().expect("ca");
        println!("QUIC transport benchmark: {FRAME}-byte frames over loopback, mutual TLS, {n} frames per throughput run");

        // (e) first, on a fresh process heap.
        if std::env::var("QUIC_BENCH_ONLY").is_ok_and(|v| v == "transport") {
            let mut pair = transport_pair(&ca, &xa, &xb).await;
            for _ in 0..3 {
                let (t, tc) = transport_throughput(&mut pair, &xa, &xb, n, FRAME).await;
                println!("transport {t:.0} msg/s, {tc:.0} CPU-ns/msg");
            }
            return;
        }
        let (before, after, per) = memory_per_connection(&xa, &xb, &ca, 100).await;
        println!("(e) memory: RSS {before} KiB -> {after} KiB for 100 idle connections: {per} KiB per connection (both ends in this process)");

        let mut pair = transport_pair(&ca, &xa, &xb).await;
        // Warm up: connect and run a short burst.
        transport_throughput(&mut pair, &xa, &xb, 50_000, FRAME).await;
        // QUIC_BENCH_ONLY=transport: only the transport throughput (for profiling).
        let transport_only = std::env::var("QUIC_BENCH_ONLY").is_ok_and(|v| v == "transport");
        let rounds: usize = std::env::var("QUIC_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
        let (mut ours, mut raw, mut ratios, mut ours_cpu, mut raw_cpu) = (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let (r, rc) = if transport_only {
                (1.0, 1.0)
            } else {
                // A fresh raw connection per round, like before.
                RawOneWay::connect(&xa, &xb, &ca, FRAME).await.block(&xa, n).await
            };
            let (t, tc) = transport_throughput(&mut pair, &xa, &xb, n, FRAME).await;
            println!(
                "    round {round}: transport {t:>10.0} msg/s ({tc:>4.0} CPU-ns/msg)   raw quinn {r:>10.0} msg/s ({rc:>4.0} CPU-ns/msg)   ratio {:.2}",
                t / r
            );
            ours.push(t);
            raw.push(r);
            ratios.push(t / r);
            ours_cpu.push(tc);
            raw_cpu.push(rc);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
            v[v.len() / 2]
        };
        let (t, r, q) = (med(&mut ours), med(&mut raw), med(&mut ratios));
        let (tc, rc) = (med(&mut ours_cpu), med(&mut raw_cpu));
        println!("(a) transport one-way throughput: median {t:.0} msg/s, max {:.0} msg/s; {tc:.0} CPU-ns per message (both ends)", ours[ours.len() - 1]);
        println!("(b) raw quinn, same framing, one stream: median {r:.0} msg/s, max {:.0} msg/s; {rc:.0} CPU-ns per message", raw[raw.len() - 1]);
        println!("    ratio transport / raw quinn: median of per-round ratios {q:.2}; CPU-efficiency ratio (raw CPU-ns / transport CPU-ns) {:.2}", rc / tc);

        let iters = 5000;
        let mut ours = transport_rtt(&mut pair, &xa, &xb, iters, FRAME).await;
        let mut raw = raw_rtt(&xa, &xb, &ca, iters, FRAME).await;
        ours.sort();
        raw.sort();
        println!(
            "(c) round trip, one in flight, {iters} samples: transport p50 {:?} p99 {:?}; raw quinn p50 {:?} p99 {:?}",
            percentile(&ours, 0.5),
            percentile(&ours, 0.99),
            percentile(&raw, 0.5),
            percentile(&raw, 0.99)
        );

        let (mut ours, mut raw) = connect_times(&xa, &xb, &ca, 30).await;
        ours.sort();
        raw.sort();
        println!(
            "(d) connect + authenticate a new peer (first send -> PeerUp: handshake + hello), 30 peers: p50 {:?} p99 {:?}; raw quinn mTLS handshake p50 {:?} p99 {:?}",
            percentile(&ours, 0.5),
            percentile(&ours, 0.99),
            percentile(&raw, 0.5),
            percentile(&raw, 0.99)
        );
        xa.stop();
        xb.stop();
    });
}
