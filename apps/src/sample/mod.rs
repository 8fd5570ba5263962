//! The sample applications a `troupe node` can run: kinds of apps
//! ([`troupe::app`]), each a small supervised tree, started from
//! `[apps.NAME]` tables of the node's config:
//!
//! ```toml
//! # `status` and `counter` run unless their table says `enabled = false`.
//!
//! [apps.election]               # leader election ("bully", "ring", "next-in-line")
//! algorithm = "bully"
//! members = ["n1", "n2", "n3"]  # optional; default: this node and all its peers
//!
//! [apps.lock]                   # a worker that takes a distributed lock in a loop
//! resource = "ledger"
//! algorithm = "ricart-agrawala" # "centralized", "ricart-agrawala", "token-ring", "lamport"
//! audit = "ctl/audit"           # optional: an actor asked at every entry and exit (see Enter)
//! hold_ms = 20                  # optional: length of each critical section (default 20)
//! members = ["n1", "n2", "n3"]  # optional, as for the election
//!
//! [apps.bank]                   # accounts over the nodes, transfers by atomic commit (see `bank`)
//! accounts = 100
//!
//! [apps.chat]                   # rooms of messages and replies by causal broadcast (see `chat`)
//! algorithm = "causal"          # optional (default causal)
//!
//! [apps.kv]                     # a replicated key-value store on Raft (see `kv`)
//! read_mode = "read-index"      # optional (default read-index; or "lease")
//!
//! [apps.crash]                  # a tree whose leaves panic on request, to watch supervision
//! kind = "crashtest"
//! leaves = 3
//! [apps.crash.supervision]      # any app: its root supervisor's policy
//! strategy = "rest-for-one"
//! ```
//!
//! | kind | tree (below `apps/NAME`) | messages |
//! |---|---|---|
//! | `status` | `status` | [`GetStatus`], [`GetTree`] |
//! | `counter` | `counter` | [`Add`], [`Get`], [`Forward`], [`AddInOrder`], [`GetOrder`] |
//! | `election` | `election` (protocol), `leader` (logs and answers the leader) | [`GetLeadership`] |
//! | `lock` | `mutex.RESOURCE` (protocol), `NAME.worker` (acquire / release loop) | tells [`Enter`], [`Exit`] to `audit` |
//! | `bank` | `commit.NAME` (protocol), `bank` (the teller: routes, transfers) | [`Transfer`], [`ReadAccounts`], [`Stage`], [`TakeSnapshot`], [`GetInDoubt`], [`GetApplied`] |
//! | `chat` | `broadcast.NAME` (protocol), `chat` (the room keeper: routes, history) | [`Post`], [`ReadRoom`] |
//! | `kv` | `raft.NAME` (protocol), `kv` (the gateway: routes, forwarding to the leader) | [`KvRequest`], [`GetKvStatus`] |
//! | `crashtest` | `NAME.first`, `inner` (`NAME.leaf-1`...), `NAME.last` | [`Crash`] |
//!
//! Their messages are public so that other programs (the demo, the tests, a
//! dashboard) can talk to them from their own node.

mod bank;
mod chat;
mod counter;
mod crashtest;
mod election;
mod kv;
mod lock;
mod status;

pub use bank::{
    bank_routes, owner, BankInDoubt, BankKind, BankSettings, GetApplied, GetInDoubt, Op,
    ReadAccounts, Stage, TakeSnapshot, Transfer, TransferOutcome, Work, BANK,
};
pub use chat::{
    chat_routes, message_key, ChatEntry, ChatKind, ChatLine, ChatSettings, Post, PostError,
    ReadRoom, CHAT,
};
pub use counter::{
    counter_app, Add, AddInOrder, CounterKind, Forward, Get, GetOrder, StreamOrder, COUNTER,
};
pub use crashtest::{Crash, CrashHow, CrashtestKind, CrashtestSettings};
pub use election::{ElectionKind, ElectionSettings, GetLeadership, LEADER};
pub use kv::{
    cluster_json, idempotency_key, kv_routes, parse_session, respond, CasBody, Consistency,
    GetKvStatus, GetQuery, KvAction, KvAnswer, KvKind, KvRequest, KvSettings, PutBody,
    IDEMPOTENCY_KEY, KV, MAX_KEY_BYTES,
};
pub use lock::{Enter, Exit, LockKind, LockSettings};
pub use status::{status_app, GetStatus, GetTree, NodeStatus, StatusKind, STATUS};

use troupe::app::{start_app, App, AppContext, AppRegistry};
use troupe::failure_detector::FailureDetectorHandle;
use troupe::framework::Node;

/// The registry of the sample kinds (`status`, `counter`, `election`,
/// `lock`, `bank`, `chat`, `kv`, `crashtest`), with `status` and `counter` started by default:
/// what `troupe node` reads its `[apps]` tables with. An embedding program
/// can add its own kinds to it.
pub fn registry() -> AppRegistry {
    let mut r = AppRegistry::new();
    r.register(StatusKind)
        .register(BankKind)
        .register(ChatKind)
        .register(KvKind)
        .register(CounterKind)
        .register(ElectionKind)
        .register(LockKind)
        .register(CrashtestKind)
        .start_by_default(StatusKind::KIND)
        .start_by_default(CounterKind::KIND);
    r
}

/// Start the status app alone on `node` (what an in-process controller node
/// runs, so that it answers like the others).
pub async fn start_status(
    node: &Node,
    fd: Option<FailureDetectorHandle>,
) -> Result<App, troupe::Error> {
    let ctx = AppContext::new(node, StatusKind::KIND).with_failure_detector(fd);
    start_app(node, status_app(&ctx)).await
}

/// Ask this node's actor `actor` (an app's) for `m` within `timeout`; the
/// error says which actor is missing or did not answer. For the apps'
/// routes (as a 503) and dashboard panels.
pub(crate) async fn ask_local<M: troupe::framework::RemoteMessage>(
    node: &troupe::framework::Node,
    actor: &str,
    m: M,
    timeout: std::time::Duration,
) -> Result<M::Reply, String> {
    let r = node
        .lookup::<M>(&format!("{}/{actor}", node.name()))
        .map_err(|e| format!("no {actor} actor on this node: {e}"))?;
    r.ask(m)
        .timeout(timeout)
        .await
        .map_err(|e| format!("the {actor} actor does not answer: {e}"))
}

/// How long a dashboard panel waits for its app's actor.
pub(crate) const PANEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use troupe::app::ClusterInfo;

    fn plan(text: &str) -> Result<Vec<String>, troupe::Error> {
        let cluster = ClusterInfo {
            node: "node-a".into(),
            peers: vec!["node-b".into(), "node-c".into()],
        };
        let table: toml::Table = text.parse().expect("toml");
        registry()
            .plan(&table, &cluster)
            .map(|p| p.names().into_iter().map(String::from).collect())
    }

    #[test]
    fn status_and_counter_run_by_default_and_the_rest_when_asked() {
        assert_eq!(plan("").unwrap(), vec!["status", "counter"]);
        assert_eq!(
            plan("[election]\nalgorithm = \"bully\"\n[counter]\nenabled = false").unwrap(),
            vec!["status", "election"]
        );
        assert_eq!(
            plan(
                "[lock]\nresource = \"r\"\nalgorithm = \"lamport\"\n[crash]\nkind = \"crashtest\""
            )
            .unwrap(),
            vec!["status", "counter", "crash", "lock"]
        );
        assert_eq!(
            plan("[bank]\naccounts = 10\ninitial_balance = 5\nalgorithm = \"three-phase\"")
                .unwrap(),
            vec!["status", "counter", "bank"]
        );
        assert_eq!(
            plan("[chat]\nalgorithm = \"plumtree\"").unwrap(),
            vec!["status", "counter", "chat"]
        );
        assert_eq!(
            plan("[kv]\nread_mode = \"lease\"\nheartbeat_ms = 20\nsnapshot_after = 100").unwrap(),
            vec!["status", "counter", "kv"]
        );
    }

    #[test]
    fn sample_settings_are_checked_naming_the_key() {
        for (text, want) in [
            (
                "[election]\nalgorithm = \"bully\"\nmembers = [\"node-a\", \"node d\"]",
                "apps.election.members[1]: \"node d\" is neither this node nor one of its [[peers]]",
            ),
            ("[election]\nalgorithm = \"paxos\"", "apps.election.algorithm: unknown variant `paxos`"),
            ("[election]\nalgoritm = \"bully\"", "apps.election.algoritm: unknown field"),
            (
                "[lock]\nresource = \"r\"\nalgorithm = \"lamport\"\nhold = 3",
                "apps.lock.hold: unknown field `hold`",
            ),
            (
                "[lock]\nresource = \"a b\"\nalgorithm = \"lamport\"",
                "apps.lock.resource: ",
            ),
            (
                "[lock]\nresource = \"r\"\nalgorithm = \"lamport\"\naudit = \"nowhere\"",
                "apps.lock.audit: ",
            ),
            ("[status]\nverbose = true", "apps.status.verbose: unknown field"),
            ("[counter]\nstart = 3", "apps.counter.start: unknown field"),
            ("[bank]\naccounts = 0", "apps.bank.accounts: must be at least 1"),
            ("[bank]\nalgorithm = \"paxos\"", "apps.bank.algorithm: unknown variant `paxos`"),
            ("[bank]\nbalance = 5", "apps.bank.balance: unknown field"),
            ("[chat]\nalgorithm = \"paxos\"", "apps.chat.algorithm: unknown variant `paxos`"),
            ("[chat]\nrooms = 3", "apps.chat.rooms: unknown field"),
            ("[kv]\nread_mode = \"quorum\"", "apps.kv.read_mode: unknown variant `quorum`"),
            ("[kv]\nelection_timeout = 3", "apps.kv.election_timeout: unknown field"),
            ("[kv]\nheartbeat_ms = \"fast\"", "apps.kv.heartbeat_ms: invalid type"),
            ("[kv]\nheartbeat_ms = 0", "apps.kv.heartbeat_ms: must be at least 1"),
            ("[kv]\nsnapshot_after = 0", "apps.kv.snapshot_after: must be at least 1"),
            ("[kv]\nrequest_timeout_ms = 0", "apps.kv.request_timeout_ms: must be at least 1"),
            (
                "[kv]\nelection_min_ms = 500\nelection_max_ms = 500",
                "apps.kv.election_max_ms: must be greater than election_min_ms (500)",
            ),
            (
                "[kv]\nheartbeat_ms = 300",
                "apps.kv.heartbeat_ms: must be less than election_min_ms (300)",
            ),
            (
                "[kv]\nmembers = [\"node-b\", \"node-c\"]",
                "apps.kv.members: must include this node, \"node-a\"",
            ),
            (
                "[kv]\nmembers = [\"node-a\", \"node-q\"]",
                "apps.kv.members[1]: \"node-q\" is neither this node nor one of its [[peers]]",
            ),
            (
                "[bank]\nmembers = [\"node-a\", \"node-x\"]",
                "apps.bank.members[1]: \"node-x\" is neither this node nor one of its [[peers]]",
            ),
            ("[crash]\nkind = \"crashtest\"\nleaves = 0", "apps.crash.leaves: "),
            (
                "[crash]\nkind = \"crashtest\"\n[crash.inner]\nstrategy = \"all\"",
                "apps.crash.inner.strategy: unknown variant `all`",
            ),
            (
                "[x]\nkind = \"elect\"",
                "apps.x.kind: unknown app kind \"elect\" (known kinds: bank, chat, counter, crashtest, election, kv, lock, status)",
            ),
        ] {
            let err = plan(text).expect_err(text).to_string();
            assert!(err.contains(want), "for {text:?}: {err}\n  does not contain: {want}");
        }
    }
}
