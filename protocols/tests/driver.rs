//! The generic protocol driver on the simulated network: sends reach the
//! same protocol on peers with the right sender, timers fire in virtual time,
//! membership events arrive, and commands run against the core.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::{MemberEvent, MemberStatus};
use troupe_framework::sansio::{Outputs, Protocol};
use troupe_protocols::driver::{spawn_driver, DriverSpec, WireMessage};
use troupe_transports::sim::{run_virtual, FaultPlan, SimCluster};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping(u32);
impl WireMessage for Ping {
    const WIRE_NAME: &'static str = "test.beacon.ping";
}

/// Every second, ping every live member; remember who pinged.
#[derive(Default)]
struct Beacon {
    live: BTreeSet<String>,
    heard: BTreeSet<String>,
    ticks: u32,
}

type Out = Outputs<String, Ping, (), String>;

impl Protocol for Beacon {
    type Id = String;
    type Msg = Ping;
    type Timer = ();
    type Event = String;
    fn on_start(&mut self, _now: Duration, out: &mut Out) {
        out.set_timer(Duration::from_secs(1), ());
    }
    fn on_message(&mut self, _now: Duration, from: String, _msg: Ping, out: &mut Out) {
        if self.heard.insert(from.clone()) {
            out.emit(from);
        }
    }
    fn on_timer(&mut self, _now: Duration, _t: (), out: &mut Out) {
        self.ticks += 1;
        for m in &self.live {
            out.send(m.clone(), Ping(self.ticks));
        }
        out.set_timer(Duration::from_secs(1), ());
    }
    fn on_membership(&mut self, _now: Duration, ev: MemberEvent<String>, _out: &mut Out) {
        if ev.status.is_live() {
            self.live.insert(ev.member);
        } else {
            self.live.remove(&ev.member);
        }
    }
}

#[test]
fn driver_carries_out_sends_timers_events_and_commands() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(11, FaultPlan::reliable());
        let names = ["a", "b", "c"];
        let mut handles = Vec::new();
        for n in names {
            let node = cluster.add_node(n).await.unwrap();
            for m in names.iter().filter(|m| **m != n) {
                node.publish_membership(MemberEvent {
                    member: m.to_string(),
                    status: MemberStatus::Up,
                    at: Duration::ZERO,
                });
            }
            handles.push(
                spawn_driver(
                    &node,
                    DriverSpec::new("beacon", |_| Beacon::default()).membership(),
                )
                .await
                .unwrap(),
            );
        }
        let mut events = handles[0].subscribe();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let mut heard = BTreeSet::new();
        while let Ok(from) = events.try_recv() {
            heard.insert(from);
        }
        assert_eq!(heard, BTreeSet::from(["b".to_string(), "c".to_string()]));
        let ticks = handles[0].invoke(|core, _, _| core.ticks).await.unwrap();
        assert_eq!(ticks, 3, "timers did not fire once per virtual second");

        // Membership changes reach the core.
        let a = cluster.node("a").unwrap().clone();
        a.publish_membership(MemberEvent {
            member: "c".into(),
            status: MemberStatus::Down,
            at: a.now(),
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let live = handles[0]
            .invoke(|core, _, _| core.live.clone())
            .await
            .unwrap();
        assert_eq!(live, BTreeSet::from(["b".to_string()]));

        // A removed driver no longer answers commands.
        a.stop_actor("beacon").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            handles[0].invoke(|core, _, _| core.ticks).await.is_err(),
            "removed driver still answers"
        );
    });
}
