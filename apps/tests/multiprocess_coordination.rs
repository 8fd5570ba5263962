//! Coordination protocols across real processes over QUIC: three `troupe
//! node` processes run a bully election and a Ricart–Agrawala lock worker;
//! an in-process auditor (the controller node) checks that critical sections
//! never overlap and fencing tokens only grow. A holder killed inside its
//! critical section takes its token with it, so the next grant may repeat
//! that token once; the auditor, like any fenced resource, refuses it (this
//! is the documented failure behaviour of the mutex cores), and anything
//! else not above the last token is a violation. The leader is killed with
//! SIGKILL; the others elect the next-highest node in a higher term, and the
//! lock keeps granting.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::{loopback_cluster, NODES};
use troupe::config::Config;
use troupe::framework::{ActorSpec, Node, Sender};
use troupe::runtime::start_node;
use troupe_apps::local_cluster::{status, wait_up};
use troupe_apps::sample::{Enter, Exit};

#[derive(Default, Debug)]
struct AuditLog {
    inside: Option<(String, u64)>,
    /// The node the test killed: it never exits, and an `Enter` it sent just
    /// before dying may still arrive after the kill.
    killed: Option<String>,
    last_token: u64,
    last_holder: String,
    refused: u32,
    entries: BTreeMap<String, u32>,
    violations: Vec<String>,
}

struct Audit(Arc<Mutex<AuditLog>>);
impl Actor for Audit {
    type Context = Context<Self>;
}
impl Handler<Sender<Enter>> for Audit {
    type Result = ();
    fn handle(&mut self, m: Sender<Enter>, _: &mut Context<Self>) {
        let mut a = self.0.lock().unwrap();
        let who = m.from.name.clone();
        let held_by_the_dead = a
            .inside
            .as_ref()
            .is_some_and(|(h, _)| a.killed.as_ref() == Some(h));
        if held_by_the_dead {
            a.inside = None;
        }
        if let Some((other, t)) = &a.inside {
            let v = format!(
                "{who} entered with token {} while {other} holds token {t}",
                m.msg.token
            );
            a.violations.push(v);
        }
        if m.msg.token == a.last_token && a.last_holder == "node-3" && a.refused == 0 {
            a.refused += 1; // the killed holder's token, reused once: refused
        } else if m.msg.token <= a.last_token {
            let v = format!(
                "{who}'s token {} is not above {}",
                m.msg.token, a.last_token
            );
            a.violations.push(v);
        }
        a.last_token = a.last_token.max(m.msg.token);
        a.last_holder = who.clone();
        a.inside = Some((who.clone(), m.msg.token));
        *a.entries.entry(who).or_default() += 1;
    }
}
impl Handler<Sender<Exit>> for Audit {
    type Result = ();
    fn handle(&mut self, m: Sender<Exit>, _: &mut Context<Self>) {
        let mut a = self.0.lock().unwrap();
        let who = m.from.name.clone();
        if a.killed.as_ref() == Some(&who) {
            // Sent just before the kill, arriving after it: the test has
            // already forgotten that holder.
            if a.inside.as_ref().is_some_and(|(h, _)| *h == who) {
                a.inside = None;
            }
            return;
        }
        if a.inside.as_ref() != Some(&(who.clone(), m.msg.token)) {
            let v = format!(
                "{who} exited token {} but the holder was {:?}",
                m.msg.token, a.inside
            );
            a.violations.push(v);
        }
        a.inside = None;
    }
}

async fn leaders(ctl: &Node) -> BTreeMap<String, (u64, Option<String>)> {
    let mut out = BTreeMap::new();
    for n in NODES {
        if let Some(s) = status(ctl, n, Duration::from_millis(500)).await {
            if let Some(l) = s.leader {
                out.insert(n.to_string(), l);
            }
        }
    }
    out
}

async fn wait_leader(ctl: &Node, observers: &[&str], want: &str, deadline: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let ls = leaders(ctl).await;
        let agreed: Vec<u64> = observers
            .iter()
            .filter_map(|o| ls.get(*o))
            .filter(|(_, l)| l.as_deref() == Some(want))
            .map(|(t, _)| *t)
            .collect();
        if agreed.len() == observers.len() && agreed.windows(2).all(|w| w[0] == w[1]) {
            return agreed[0];
        }
        assert!(
            start.elapsed() < deadline,
            "no agreement on leader {want} within {deadline:?}: {ls:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn election_and_lock_across_processes_survive_killing_the_leader() {
    let members = "members = [\"node-1\", \"node-2\", \"node-3\"]";
    let extra = format!(
        "[apps.election]\nalgorithm = \"bully\"\n{members}\n\n\
         [apps.lock]\nresource = \"ledger\"\nalgorithm = \"ricart-agrawala\"\n\
         audit = \"ctl/audit\"\nhold_ms = 20\n{members}\n"
    );
    let mut c = loopback_cluster("coord", "phi-accrual", &extra);
    let dir = c.dir().to_path_buf();
    let log = Arc::new(Mutex::new(AuditLog::default()));
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let mut config = Config::from_file(c.config_path("ctl")).unwrap();
        config.apps = toml::Table::new();
        let ctl = start_node(config).await.unwrap();
        let l = log.clone();
        ctl.node
            .spawn(
                ActorSpec::new("audit", move || Audit(l.clone()))
                    .handles_from::<Enter>()
                    .handles_from::<Exit>(),
            )
            .await
            .unwrap();
        for n in NODES {
            c.spawn(n).unwrap();
        }
        let node = ctl.node.clone();
        for n in NODES {
            wait_up(&node, n, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
        }
        let first_term = wait_leader(&node, &NODES, "node-3", Duration::from_secs(30)).await;

        tokio::time::sleep(Duration::from_secs(3)).await;
        {
            let a = log.lock().unwrap();
            assert!(a.violations.is_empty(), "violations: {:?}", a.violations);
            for n in NODES {
                assert!(
                    a.entries.get(n).copied().unwrap_or(0) >= 2,
                    "{n} starved: {:?}",
                    a.entries
                );
            }
        }

        c.kill("node-3");
        {
            // A killed holder never exits: forget it (the lock cannot be granted
            // to anyone else until node-3 is declared down anyway).
            let mut a = log.lock().unwrap();
            a.killed = Some("node-3".to_string());
            if a.inside.as_ref().is_some_and(|(w, _)| w == "node-3") {
                a.inside = None;
            }
        }
        let new_term = wait_leader(
            &node,
            &["node-1", "node-2"],
            "node-2",
            Duration::from_secs(30),
        )
        .await;
        assert!(
            new_term > first_term,
            "the new leader's term {new_term} is not above {first_term}"
        );

        let before: u32 = log.lock().unwrap().entries.values().sum();
        let start = Instant::now();
        loop {
            let after: u32 = log.lock().unwrap().entries.values().sum();
            if after >= before + 10 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the lock stopped granting after the kill"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let violations = log.lock().unwrap().violations.clone();
        assert!(violations.is_empty(), "violations: {violations:?}");
        ctl.shutdown().await;
    });
    c.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
