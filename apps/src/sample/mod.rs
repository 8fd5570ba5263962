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
//! | `crashtest` | `NAME.first`, `inner` (`NAME.leaf-1`...), `NAME.last` | [`Crash`] |
//!
//! Their messages are public so that other programs (the demo, the tests, a
//! dashboard) can talk to them from their own node.

mod bank;
mod chat;
mod counter;
mod crashtest;
mod election;
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
pub use lock::{Enter, Exit, LockKind, LockSettings};
pub use status::{status_app, GetStatus, GetTree, NodeStatus, StatusKind, STATUS};

use troupe::app::{start_app, App, AppContext, AppRegistry};
use troupe::failure_detector::FailureDetectorHandle;
use troupe::framework::Node;

/// The registry of the sample kinds (`status`, `counter`, `election`,
/// `lock`, `bank`, `chat`, `crashtest`), with `status` and `counter` started by default:
/// what `troupe node` reads its `[apps]` tables with. An embedding program
/// can add its own kinds to it.
pub fn registry() -> AppRegistry {
    let mut r = AppRegistry::new();
    r.register(StatusKind)
        .register(BankKind)
        .register(ChatKind)
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
                "apps.x.kind: unknown app kind \"elect\" (known kinds: bank, chat, counter, crashtest, election, lock, status)",
            ),
        ] {
            let err = plan(text).expect_err(text).to_string();
            assert!(err.contains(want), "for {text:?}: {err}\n  does not contain: {want}");
        }
    }
}
