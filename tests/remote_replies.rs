//! How remote asks are answered when the answer is not ready at once: a
//! handler that answers later (its future finishes), an actor that stops
//! before it answers (the asker hears so at once instead of timing out),
//! and the node's bound on asks handed to actors and not answered yet
//! (`runtime.max_inflight_deliveries`): past it the node stops taking
//! frames until answers go out; an ask waiting for inbox room counts once.
//! And the asks that end in `AskError::Codec`: a request too large for a
//! frame (never sent), a reply that does not decode as the asker's reply
//! type.

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use troupe::framework::codec::{CodecError, RemoteError};
use troupe::prelude::*;

/// Answered after a (virtual) delay, by a future.
#[derive(Debug, Serialize, Deserialize)]
struct Later(u64);
remote_message!(Later, "test.later", u64);

/// `Later` as an asker built against another version of it sees it: the
/// same name and request, another reply type.
#[derive(Debug, Serialize, Deserialize)]
struct LaterAsText(u64);
remote_message!(LaterAsText, "test.later", String);

/// A request of any size (nobody handles it: it never leaves).
#[derive(Debug, Serialize, Deserialize)]
struct Big(Vec<u8>);
remote_message!(Big, "test.big", u64);

/// Never answered: the actor stops instead.
#[derive(Debug, Serialize, Deserialize)]
struct Quit;
remote_message!(Quit, "test.quit", u64);

/// Answered once the test releases the gate.
#[derive(Debug, Serialize, Deserialize)]
struct Held(u64);
remote_message!(Held, "test.held", u64);

/// A tell the actor records.
#[derive(Debug, Serialize, Deserialize)]
struct Ping;
remote_message!(Ping, "test.ping", ());

struct Worker {
    gate: watch::Receiver<bool>,
    pings: Arc<Mutex<u32>>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Later> for Worker {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, m: Later, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            m.0 * 2
        })
    }
}

impl Handler<Quit> for Worker {
    type Result = ResponseActFuture<Self, u64>;
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) -> Self::Result {
        // The answer would come from the actor's own future, which stops
        // with it.
        ctx.stop();
        Box::pin(actix::fut::wrap_future(futures::future::pending()))
    }
}

impl Handler<Held> for Worker {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, m: Held, _: &mut Context<Self>) -> Self::Result {
        let mut gate = self.gate.clone();
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            m.0
        })
    }
}

impl Handler<Ping> for Worker {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {
        *self.pings.lock().unwrap() += 1;
    }
}

/// Nodes `a` and `b` on a reliable simulated network, `b` with at most
/// `limit` deliveries in flight and a `Worker` named `w`.
async fn cluster(limit: usize) -> (SimCluster, Node, Node, watch::Sender<bool>, Arc<Mutex<u32>>) {
    let mut cluster = SimCluster::new(7, FaultPlan::reliable());
    let a = cluster.add_node("a").await.unwrap();
    let mut config = NodeConfig::named("b");
    config.runtime.max_inflight_deliveries = limit;
    let b = cluster.add_node_with(config).await.unwrap();
    let (open, gate) = watch::channel(false);
    let pings = Arc::new(Mutex::new(0));
    let p = pings.clone();
    let spec = ActorSpec::new("w", move || Worker {
        gate: gate.clone(),
        pings: p.clone(),
    })
    .handles::<Later>()
    .handles::<Quit>()
    .handles::<Held>()
    .handles::<Ping>();
    b.spawn(spec).await.unwrap();
    (cluster, a, b, open, pings)
}

/// Sends `msgs` as asks (60 s timeouts, all in flight at once), a `Ping`
/// tell 100 ms later, and waits 2 s more; the replies, in order, come from
/// the returned task.
async fn asks_then_a_ping<M>(
    to: &RemoteRef<M>,
    msgs: impl Iterator<Item = M>,
    ping: &RemoteRef<Ping>,
) -> tokio::task::JoinHandle<Vec<Result<u64, AskError>>>
where
    M: RemoteMessage<Reply = u64> + actix::Message<Result = u64>,
{
    let asks: Vec<_> = msgs
        .map(|m| to.ask(m).timeout(Duration::from_secs(60)).into_future())
        .collect();
    let asks = tokio::spawn(futures::future::join_all(asks));
    tokio::time::sleep(Duration::from_millis(100)).await;
    ping.tell(Ping).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    asks
}

#[test]
fn a_handler_that_answers_later_answers_the_remote_ask() {
    run_virtual(|| async {
        let (_cluster, a, _b, _open, _) = cluster(4096).await;
        let w = a.lookup::<Later>("b/w").unwrap();
        let replies =
            futures::future::join_all((0..5).map(|i| w.ask(Later(i)).into_future())).await;
        let replies: Vec<u64> = replies.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(replies, vec![0, 2, 4, 6, 8]);
    });
}

#[test]
fn an_actor_that_stops_before_it_answers_fails_the_ask_at_once() {
    run_virtual(|| async {
        let (_cluster, a, _b, _open, _) = cluster(4096).await;
        let w = a.lookup::<Quit>("b/w").unwrap();
        let asked = tokio::time::Instant::now();
        let r = w.ask(Quit).timeout(Duration::from_secs(30)).await;
        assert!(
            matches!(r, Err(AskError::Remote(RemoteError::ActorStopped))),
            "expected ActorStopped, got {r:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "the asker waited {:?}: it was not told",
            asked.elapsed()
        );
    });
}

#[test]
fn unanswered_asks_count_against_the_in_flight_limit() {
    run_virtual(|| async {
        let limit = 4;
        let (_cluster, a, b, open, pings) = cluster(limit).await;
        let held = a.lookup::<Held>("b/w").unwrap();
        let ping = a.lookup::<Ping>("b/w").unwrap();
        let asks = asks_then_a_ping(&held, (0..10).map(Held), &ping).await;
        // Four asks are running; the node took no frame since, so neither
        // the other asks nor the tell behind them has reached the actor.
        assert_eq!(*pings.lock().unwrap(), 0, "the tell overtook the limit");
        open.send(true).unwrap();
        let replies = asks.await.unwrap();
        let replies: Vec<u64> = replies.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(replies, (0..10).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*pings.lock().unwrap(), 1);
        assert_eq!(b.stats().undeliverable, 0);
    });
}

/// Answered at once, but the actor then waits (in `ctx.wait`) for the gate:
/// what comes after it stays in the actor's inbox.
#[derive(Debug, Serialize, Deserialize)]
struct Stall(u64);
remote_message!(Stall, "test.stall", u64);

struct Staller {
    gate: watch::Receiver<bool>,
}

impl Actor for Staller {
    type Context = Context<Self>;
}

impl Handler<Stall> for Staller {
    type Result = u64;
    fn handle(&mut self, m: Stall, ctx: &mut Context<Self>) -> u64 {
        let mut gate = self.gate.clone();
        ctx.wait(
            async move {
                let _ = gate.wait_for(|open| *open).await;
            }
            .into_actor(self),
        );
        m.0
    }
}

/// An ask that finds its actor's inbox full waits for room (or is parked
/// behind one that does): it counts once against the in-flight limit, as a
/// delivery, not also as an ask being answered. With limit 6 and five asks
/// to a stalled actor whose inbox holds one (one answered, one in the
/// inbox, one waiting for room, two parked), the node has 4 in flight and
/// still takes the tell behind them; counted twice (7) it would not.
#[test]
fn an_ask_waiting_for_inbox_room_counts_once() {
    run_virtual(|| async {
        let (_cluster, a, b, open, pings) = cluster(6).await;
        let (release, gate) = watch::channel(false);
        b.spawn(
            ActorSpec::new("s", move || Staller { gate: gate.clone() })
                .handles::<Stall>()
                .mailbox(1),
        )
        .await
        .unwrap();
        let stall = a.lookup::<Stall>("b/s").unwrap();
        let ping = a.lookup::<Ping>("b/w").unwrap();
        let asks = asks_then_a_ping(&stall, (0..5).map(Stall), &ping).await;
        assert_eq!(
            *pings.lock().unwrap(),
            1,
            "the tell behind asks waiting for room was not taken"
        );
        release.send(true).unwrap();
        drop(open);
        let replies = asks.await.unwrap();
        let replies: Vec<u64> = replies.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(replies, (0..5).collect::<Vec<_>>());
        assert_eq!(b.stats().undeliverable, 0);
    });
}

/// The simulated network carries control frames apart, as QUIC does: a node
/// that has stopped taking ordinary frames at its in-flight limit still
/// takes a control tell (say, a heartbeat), while an ordinary tell sent
/// before it waits.
#[test]
fn a_node_at_its_limit_still_takes_control_tells_on_the_simulated_network() {
    run_virtual(|| async {
        let (_cluster, a, _b, open, pings) = cluster(4).await;
        let held = a.lookup::<Held>("b/w").unwrap();
        let ping = a.lookup::<Ping>("b/w").unwrap();
        let asks = asks_then_a_ping(&held, (0..10).map(Held), &ping).await;
        assert_eq!(
            *pings.lock().unwrap(),
            0,
            "the ordinary tell overtook the limit"
        );
        ping.clone().control().tell(Ping).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            *pings.lock().unwrap(),
            1,
            "the control tell was not taken at the limit"
        );
        open.send(true).unwrap();
        let replies: Vec<u64> = asks
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(replies, (0..10).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*pings.lock().unwrap(), 2);
    });
}

#[test]
fn a_reply_that_does_not_decode_fails_the_ask_with_a_codec_error() {
    run_virtual(|| async {
        let (_cluster, a, _b, _open, _) = cluster(4096).await;
        let w = a.lookup::<LaterAsText>("b/w").unwrap();
        let asked = tokio::time::Instant::now();
        let r = w.ask(LaterAsText(3)).timeout(Duration::from_secs(30)).await;
        assert!(
            matches!(r, Err(AskError::Codec(CodecError::Malformed(_)))),
            "expected a codec error, got {r:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "the asker waited {:?} for a reply it had",
            asked.elapsed()
        );
        // The request itself was fine: the right reply type reads the
        // answer.
        let ok = a.lookup::<Later>("b/w").unwrap().ask(Later(3)).await;
        assert_eq!(ok, Ok(6));
    });
}

#[test]
fn a_request_too_large_for_a_frame_fails_with_a_codec_error_unsent() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(9, FaultPlan::reliable());
        let mut config = NodeConfig::named("a");
        config.runtime.max_frame_bytes = 1024;
        let a = cluster.add_node_with(config).await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let (_open, gate) = watch::channel(false);
        let spec = ActorSpec::new("w", move || Worker {
            gate: gate.clone(),
            pings: Arc::default(),
        });
        b.spawn(spec.handles::<Later>()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sent = cluster.net().stats().sent;
        let big = a.lookup::<Big>("b/w").unwrap();
        let r = big
            .ask(Big(vec![7; 2048]))
            .timeout(Duration::from_secs(30))
            .await;
        assert!(
            matches!(
                r,
                Err(AskError::Codec(CodecError::TooLarge { max: 1024, .. }))
            ),
            "expected a codec error, got {r:?}"
        );
        assert_eq!(cluster.net().stats().sent, sent, "a frame left");
        // Nothing of it stayed behind: the next ask goes and comes back.
        let ok = a.lookup::<Later>("b/w").unwrap().ask(Later(4)).await;
        assert_eq!(ok, Ok(8));
    });
}
