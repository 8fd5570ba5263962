//! Discovery, pub/sub and death-watch on a three-node simulated cluster,
//! in virtual time.
//!
//! Every node starts the receptionist and death-watch and runs a `printer`
//! that registers under the service key `printers` and subscribes to the
//! topic `news`. Node a then finds every printer in the cluster, publishes
//! to the topic, watches `c/printer`, and c's printer is stopped: a is
//! told, with the exit reason, and c's printer disappears from `find`.
//! The suite runs the same check (`tests/examples.rs`).
//!
//! ```text
//! cargo run --example discovery
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::framework::death_watch::{DeathReason, DeathWatch};
use troupe::framework::pubsub::{PubSub, Published, Topic};
use troupe::framework::receptionist::{DiscoveryError, Receptionist, ServiceKey};
use troupe::prelude::*;

/// Something to print.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Print(pub String);
remote_message!(Print, "example.print", ());

struct Printer {
    printed: Arc<Mutex<Vec<String>>>,
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<Print> for Printer {
    type Result = ();
    fn handle(&mut self, m: Print, _: &mut Context<Self>) {
        self.printed.lock().unwrap().push(m.0);
    }
}

// README: discovery (begin)
/// On every node: register the local `printer` under the key `printers`
/// and subscribe it to the topic `news`.
fn join(receptionist: &Receptionist) -> Result<(), DiscoveryError> {
    let printers: ServiceKey<Print> = ServiceKey::new("printers")?;
    receptionist.register(&printers, "printer")?;
    PubSub::new(receptionist.clone()).subscribe(&Topic::<Print>::new("news")?, "printer")
}

/// On any node: every printer in the cluster, and one message told to
/// every subscriber of `news` (at most once each).
fn printers_and_news(
    receptionist: &Receptionist,
) -> Result<(Vec<RemoteRef<Print>>, Published), DiscoveryError> {
    let printers = receptionist.find(&ServiceKey::<Print>::new("printers")?);
    let news = Topic::new("news")?;
    let published = PubSub::new(receptionist.clone()).publish(&news, Print("hello".into()));
    Ok((printers, published))
}

/// Resolves when `printer` is gone: stopped (with its exit reason), its
/// node down, left or restarted, or it never existed.
async fn gone(watch: DeathWatch, printer: RemoteRef<Print>) -> DeathReason {
    watch.watch(&printer).await.reason
}
// README: discovery (end)

/// What the run saw.
#[derive(Debug)]
pub struct Report {
    /// The printers a found, before the stop.
    pub found: Vec<String>,
    /// Messages printed by all printers.
    pub printed: usize,
    /// Why the watch on c's printer fired.
    pub reason: DeathReason,
    /// The printers a found after the stop.
    pub found_after: Vec<String>,
}

/// Run the example on the simulator (seed 1).
pub fn run() -> Result<Report, String> {
    run_virtual(|| async {
        let printed = Arc::new(Mutex::new(Vec::new()));
        let mut sim = SimCluster::new(1, FaultPlan::reliable());
        let mut services = Vec::new();
        for name in ["a", "b", "c"] {
            let node = sim.add_node(name).await.map_err(|e| e.to_string())?;
            // Membership for the example: everyone Up (a real node runs a
            // failure detector that publishes these).
            for peer in ["a", "b", "c"].iter().filter(|p| **p != name) {
                node.publish_membership(MemberEvent {
                    member: peer.to_string(),
                    status: MemberStatus::Up,
                    at: node.now(),
                });
            }
            let receptionist = Receptionist::start(&node)
                .await
                .map_err(|e| e.to_string())?;
            let watch = DeathWatch::start(&node).await.map_err(|e| e.to_string())?;
            let p = printed.clone();
            let spec = ActorSpec::new("printer", move || Printer { printed: p.clone() })
                .handles::<Print>();
            node.spawn(spec).await.map_err(|e| e.to_string())?;
            join(&receptionist).map_err(|e| e.to_string())?;
            services.push((node, receptionist, watch));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (a, receptionist, watch) = &services[0];
        let (printers, published) = printers_and_news(receptionist).map_err(|e| e.to_string())?;
        let found = printers.iter().map(|p| p.path().to_string()).collect();
        if published.sent != 3 {
            return Err(format!(
                "published to {} subscribers, not 3",
                published.sent
            ));
        }
        let c_printer = a.lookup::<Print>("c/printer").map_err(|e| e.to_string())?;
        let ended = actix_rt::spawn(gone(watch.clone(), c_printer));
        tokio::time::sleep(Duration::from_millis(100)).await;
        services[2]
            .0
            .stop_actor("printer")
            .await
            .map_err(|e| e.to_string())?;
        let reason = tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .map_err(|_| "the watch did not fire".to_string())?
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let key: ServiceKey<Print> = ServiceKey::new("printers").map_err(|e| e.to_string())?;
        let found_after = receptionist
            .find(&key)
            .iter()
            .map(|p| p.path().to_string())
            .collect();
        let printed = printed.lock().unwrap().len();
        Ok(Report {
            found,
            printed,
            reason,
            found_after,
        })
    })
}

fn main() {
    match run() {
        Ok(r) => {
            println!("a found {:?}", r.found);
            println!("one publish, {} prints", r.printed);
            println!("watch on c/printer: {}", r.reason);
            println!("a found after the stop {:?}", r.found_after);
        }
        Err(e) => {
            eprintln!("discovery example failed: {e}");
            std::process::exit(1);
        }
    }
}
