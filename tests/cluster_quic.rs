//! Remote spawn and the cluster singleton over real QUIC (two in-process
//! nodes, insecure dev mode, loopback): a spawns a worker on b (kinds from
//! `StartOptions::spawn_kinds`, arguments as msgpack) and asks it; a clash
//! answers `NameTaken`; the singleton runs on the bully leader b and a's
//! proxy reaches it; b leaves and the singleton moves to a.

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::config::Config;
use troupe::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Args {
    greeting: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Greet(String);
remote_message!(Greet, "cluster_quic_test.greet", String);

struct Greeter {
    greeting: String,
    node: String,
}
impl Actor for Greeter {
    type Context = Context<Self>;
}
impl Handler<Greet> for Greeter {
    type Result = String;
    fn handle(&mut self, m: Greet, _: &mut Context<Self>) -> String {
        format!("{} {} from {}", self.greeting, m.0, self.node)
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(name: &str, ports: [u16; 2]) -> Config {
    let names = ["a", "b"];
    let me = names.iter().position(|n| *n == name).unwrap();
    let (peer, peer_port) = (names[1 - me], ports[1 - me]);
    let text = format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n[tls]\ninsecure_dev_mode = true\n\
         [[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{peer_port}\"\n\
         [failure_detector]\nkind = \"phi-accrual\"\n",
        ports[me]
    );
    Config::from_toml(&text, Path::new(".")).unwrap_or_else(|e| panic!("{name}: config: {e}"))
}

async fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn remote_spawn_and_singleton_over_quic() {
    let ports = [free_port(), free_port()];
    let kinds = SpawnKinds::new().kind("greeter", |name: &str, args: Args| {
        let greeting = args.greeting;
        ActorSpec::with_context(name, move |cx| Greeter {
            greeting: greeting.clone(),
            node: cx.node().name().to_string(),
        })
        .handles::<Greet>()
    });
    let options = StartOptions {
        spawn_kinds: kinds,
        ..StartOptions::default()
    };
    let a = start_node_with(config("a", ports), options.clone())
        .await
        .expect("a starts");
    let b = start_node_with(config("b", ports), options)
        .await
        .expect("b starts");
    for r in [&a, &b] {
        wait("members up", Duration::from_secs(15), || {
            let m = r.node.membership();
            m.iter().count() == 1 && m.iter().all(|(_, s)| s == MemberStatus::Up)
        })
        .await;
    }

    // Remote spawn over QUIC.
    let path = a
        .node
        .spawn_remote(
            "b",
            "greeter",
            "greeter-1",
            Args {
                greeting: "hello".into(),
            },
        )
        .await
        .expect("spawned on b");
    let greeter: RemoteRef<Greet> = a.node.actor_ref(path);
    let answer = greeter
        .ask(Greet("a".into()))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer, "hello a from b");
    let err = a
        .node
        .spawn_remote(
            "b",
            "greeter",
            "greeter-1",
            Args {
                greeting: "again".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SpawnError::NameTaken { .. }), "{err}");

    // The singleton: on the bully leader (b), reached from a.
    let members = vec!["a".to_string(), "b".to_string()];
    let mut singletons = Vec::new();
    for r in [&a, &b] {
        let election = start_election(&r.node, ElectionAlgorithm::Bully, &members)
            .await
            .expect("election");
        let singleton = start_singleton(&r.node, &election, "greeter-s", |_term| {
            ActorSpec::with_context("greeter-s", |cx| Greeter {
                greeting: "hi".into(),
                node: cx.node().name().to_string(),
            })
            .handles::<Greet>()
        })
        .await
        .expect("singleton");
        singletons.push(singleton);
    }
    let proxy: SingletonProxy<Greet> = singletons[0].proxy();
    let answer = proxy
        .ask(Greet("a".into()), Duration::from_secs(15))
        .await
        .expect("the proxy reaches the singleton");
    assert_eq!(answer, "hi a from b");
    assert!(singletons[0].running_here().is_none());

    // b leaves: a leads and runs the singleton.
    b.shutdown().await;
    let here = singletons[0].clone();
    wait("singleton moved to a", Duration::from_secs(20), || {
        here.running_here().is_some()
    })
    .await;
    let answer = proxy
        .ask(Greet("a".into()), Duration::from_secs(10))
        .await
        .expect("the proxy reaches the moved singleton");
    assert_eq!(answer, "hi a from a");
    a.shutdown().await;
}
