//! A reliable channel on a hostile simulated network, in virtual time.
//!
//! Node `a` streams 1000 orders to a `shop` actor on node `b` through a
//! reliable channel (`troupe::framework::reliable`) while the network loses
//! 20 % of frames, duplicates 10 % and reorders them, and cuts `a` from `b`
//! for two seconds. The shop checks every order it handles: exactly the
//! next number, no gap, no duplicate. The example fails if one was missed
//! or seen twice (`tests/reliable_delivery.rs` runs it).
//!
//! ```text
//! cargo run --example reliable_orders           # seed 1
//! cargo run --example reliable_orders -- 42     # another seed
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::prelude::*;

// README: reliable delivery (begin)
use troupe::framework::reliable::{ReliableReceiver, ReliableSender};

#[derive(Debug, Serialize, Deserialize)]
struct Order(u64);
remote_message!(Order, "shop.order", ());

/// The consumer: an ordinary actor that handles `Order`.
struct Shop {
    handled: Arc<Mutex<Vec<u64>>>,
}
impl Actor for Shop {
    type Context = Context<Self>;
}
impl Handler<Order> for Shop {
    type Result = ();
    fn handle(&mut self, order: Order, _: &mut Context<Self>) {
        self.handled.lock().unwrap().push(order.0);
    }
}

async fn stream_orders(a: &Node, b: &Node, handled: &Arc<Mutex<Vec<u64>>>) -> Result<(), String> {
    let h = handled.clone();
    let shop = ActorSpec::new("shop", move || Shop { handled: h.clone() }).handles::<Order>();
    b.spawn(shop).await.map_err(|e| e.to_string())?;
    // Node b: channel "orders" delivers to the local actor "shop".
    ReliableReceiver::start::<Order>(b, "orders", "shop")
        .await
        .map_err(|e| e.to_string())?;
    // Node a: the producer. `send` waits while the consumer's window is full.
    let orders = ReliableSender::<Order>::connect(a, "b/orders")
        .await
        .map_err(|e| e.to_string())?;
    for i in 1..=1000 {
        orders.send(Order(i)).await.map_err(|e| e.to_string())?;
    }
    orders.flush().await.map_err(|e| e.to_string()) // all handled by the shop
}
// README: reliable delivery (end)

/// Run the scenario on `seed`: `Ok(how many orders were resent)` when the
/// shop saw 1..=1000 exactly once each, in order.
pub fn run(seed: u64) -> Result<u64, String> {
    run_virtual(move || async move {
        let mut cluster = SimCluster::new(seed, FaultPlan::uniform(LinkFaults::lossy(0.2, 0.1)));
        let a = cluster.add_node("a").await.map_err(|e| e.to_string())?;
        let b = cluster.add_node("b").await.map_err(|e| e.to_string())?;
        let handled = Arc::new(Mutex::new(Vec::new()));
        let (a2, b2, h2) = (a.clone(), b.clone(), handled.clone());
        let stream = actix_rt::spawn(async move { stream_orders(&a2, &b2, &h2).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.net().partition(&["a"], &["b"]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.net().heal();
        tokio::time::timeout(Duration::from_secs(300), stream)
            .await
            .map_err(|_| "the stream did not finish".to_string())?
            .map_err(|e| e.to_string())??;
        let handled = handled.lock().unwrap().clone();
        if handled != (1..=1000).collect::<Vec<_>>() {
            return Err(format!(
                "the shop saw {} orders, not 1..=1000 in order",
                handled.len()
            ));
        }
        Ok(cluster.net().stats().lost)
    })
}

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    match run(seed) {
        Ok(lost) => println!(
            "seed {seed}: 1000 orders handled exactly once, in order, although the network lost {lost} frames"
        ),
        Err(e) => {
            eprintln!("seed {seed}: {e}");
            std::process::exit(1);
        }
    }
}
