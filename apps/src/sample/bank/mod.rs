//! The `bank` app: accounts spread over the nodes, transfers between them
//! as distributed transactions (atomic commit, [`troupe::commit`]).
//!
//! ```toml
//! [apps.bank]
//! accounts = 100               # acct-0 ... acct-99 (default 100)
//! initial_balance = 1000       # each account's balance when first created (default 1000)
//! algorithm = "two-phase"      # or "three-phase" (default two-phase)
//! members = ["n1", "n2", "n3"] # optional; default: this node and all its peers
//! prepare_delay_ms = 0         # tests only: a participant's pause between its durable prepare and its vote
//! ```
//!
//! **Partitioning.** The members, sorted by name, are `m[0] .. m[n-1]`;
//! account `acct-i` lives on `m[i % n]`. Every member must run the app
//! with the same `accounts` and `members` (the rule is computed, not
//! negotiated). A node creates its accounts with `initial_balance` the
//! first time it starts; afterwards they come from its durable store.
//!
//! **Routes** on the node's HTTP endpoint (`/v1/<app>/...`; the app's
//! actor is named `bank`, so a node runs at most one bank):
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/bank/transfer` `{"from":"acct-1","to":"acct-2","amount":5}` | 200 `{"tx":"..","outcome":"committed"}`, 409 `{"tx":..,"outcome":"aborted","reason":".."}`, 400 bad request, 503 outcome unknown (`{"error":..,"tx":..}`) |
//! | `GET /v1/bank/accounts` | `{"accounts":{"acct-0":1000,..},"total":100000}`, one read-only transaction |
//! | `GET /v1/bank/in-doubt` | `{"in_doubt":[..],"prepared":[..]}`: the commit instance's transactions in doubt here, and transfers prepared on this shard and not decided |
//! | `GET /v1/bank/applied` | `{"applied":{"<tx>":[{"account":..,"delta":..}],..}}`: every transfer applied on this shard |
//!
//! **A transfer** is coordinated by the node that received the request. It
//! splits into per-node operations (a debit of `from`, a credit of `to`):
//! - both accounts on the coordinator: applied at once, as one atomic
//!   durable write (after the same funds check); no commit protocol, id
//!   `<node>-local-<incarnation>-<n>`;
//! - otherwise a transaction of the commit instance `commit.<app>` whose
//!   participants are the other nodes owning an account, id the
//!   transaction's id (hex, `0x...`). The coordinator hands each participant its
//!   operations ([`Stage`]), then runs the protocol. The core never makes
//!   its coordinator a participant, so when the coordinator owns one of the
//!   accounts it prepares its own part *before* the protocol starts (the
//!   same durable prepare, marked as its own) and applies the outcome
//!   `commit()` returns. If it crashes in between, the app's orphan
//!   resolver (the actor `<app>.orphans` in the app's tree) resolves its
//!   part after the restart from the commit log: decided →
//!   that decision; no record → abort (both algorithms presume abort: no
//!   record means no commit was ever sent); still deciding (three-phase,
//!   pre-committed) → wait. Such a transaction is
//!   [held](troupe::commit::Transaction::hold): the commit log keeps its
//!   decision until this part applied it (`CommitHandle::applied`), so a
//!   log compaction never turns a commit into "no record".
//!
//! A participant's prepare checks funds and reserves the debit durably;
//! commit applies, abort releases; both are idempotent and each shard keeps
//! a durable record of the transfers it applied (see `shard`), so a
//! decision delivered again after a restart is not applied twice.
//!
//! **The consistent read** (`GET /v1/bank/accounts`) is a transaction over
//! every other member whose work is [`Work::Read`]: each shard (the
//! coordinator's own first) waits until no transfer is prepared on it,
//! takes a read lock, and keeps a snapshot; once the read commits, the
//! coordinator collects the snapshots. While a read holds or waits for a
//! shard's lock, a participant asked to prepare a transfer there waits
//! 100 ms at most, then votes no ("busy"); the coordinator's own prepares
//! wait up to two seconds. This is strict
//! two-phase locking: a transfer cannot be prepared on one shard after that
//! shard's snapshot and decided on another before that one's snapshot, so
//! the total is the sum of whole transfers. A read that cannot get its
//! locks within the vote timeout (transfers in doubt, a node down) aborts;
//! it is tried three times, then the route answers 503.
//!
//! Known limits: staged work and read snapshots of a coordinator that
//! crashed before using them stay in memory for a minute (dropped when
//! later work arrives); the applied records grow without bound; a node
//! runs at most one bank app (its teller is the actor `bank`).

mod shard;

pub use shard::{Op, Work};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe::app::{check_members, AppContext, AppKind, AppSpec, ClusterInfo};
use troupe::commit::{CommitHandle, InDoubt, Phase};
use troupe::dashboard::{AppPanel, Panel};
use troupe::http::actix_web::{web, HttpResponse};
use troupe::http::{ApiError, AppRoutes, HttpContext, Json};
use troupe::prelude::*;
use troupe::protocols::commit::{CommitCore, Decision};

use shard::Shard;

/// Actor name of the bank app's teller (one per node).
pub const BANK: &str = "bank";

/// How long a route waits for the teller (a transfer may wait for the
/// commit protocol).
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a coordinator waits for a participant to take its work.
const STAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `[apps.bank]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankSettings {
    /// Number of accounts, `acct-0` ... (default 100).
    #[serde(default = "default_accounts")]
    pub accounts: usize,
    /// Balance of each account when created (default 1000).
    #[serde(default = "default_balance")]
    pub initial_balance: u64,
    /// The commit algorithm (default two-phase).
    #[serde(default = "default_algorithm")]
    pub algorithm: CommitAlgorithm,
    /// Who holds accounts (default: this node and all its peers).
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// For tests and demonstrations: how long a participant waits after its
    /// prepare is durable before it votes yes (default 0). Widens the
    /// window in which a crash finds transfers prepared and undecided.
    /// Keep it well below the vote timeout (500 ms).
    #[serde(default)]
    pub prepare_delay_ms: u64,
}

fn default_accounts() -> usize {
    100
}
fn default_balance() -> u64 {
    1000
}
fn default_algorithm() -> CommitAlgorithm {
    CommitAlgorithm::TwoPhase
}

impl Default for BankSettings {
    fn default() -> Self {
        Self {
            accounts: default_accounts(),
            initial_balance: default_balance(),
            algorithm: default_algorithm(),
            members: None,
            prepare_delay_ms: 0,
        }
    }
}

/// A transaction's id as the bank writes it: hex, `0x...`, as `troupe
/// commit in-doubt` prints it.
pub fn tx_key(tx: TxId) -> String {
    format!("{tx:#x}")
}

fn parse_tx(s: &str) -> Option<TxId> {
    TxId::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// The node owning account `account` among `members` (sorted), by the rule
/// of the module docs; `None` for a name that is not an account.
pub fn owner<'a>(account: &str, accounts: usize, members: &'a [String]) -> Option<&'a str> {
    let i: usize = account.strip_prefix("acct-")?.parse().ok()?;
    if i >= accounts || members.is_empty() || account != format!("acct-{i}") {
        return None;
    }
    members.get(i % members.len()).map(String::as_str)
}

/// Transfer `amount` from `from` to `to` (asked of this node's teller).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transfer {
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// How much.
    pub amount: u64,
}
remote_message!(Transfer, "troupe.bank.transfer", TransferOutcome);

/// How a transfer ended, as its coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferOutcome {
    /// Applied on every shard it touches.
    Committed {
        /// Its id.
        tx: String,
    },
    /// Applied nowhere.
    Aborted {
        /// Its id.
        tx: String,
        /// Why.
        reason: String,
    },
    /// Refused before it started (an unknown account, a zero amount...).
    Rejected(String),
    /// Not known: the coordinator's commit driver stopped.
    Unknown {
        /// Its id, if one was drawn.
        tx: Option<String>,
        /// What happened.
        error: String,
    },
}

/// Read every balance in one read-only transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadAccounts;
remote_message!(
    ReadAccounts,
    "troupe.bank.accounts",
    Result<BTreeMap<String, u64>, String>
);

/// Hand a participant its work for transaction `tx` (coordinator to participant).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    /// The transaction.
    pub tx: TxId,
    /// Its work on the participant's shard.
    pub work: Work,
}
remote_message!(Stage, "troupe.bank.stage", Result<(), String>);

/// The snapshot of committed read `tx` (coordinator to participant), once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TakeSnapshot(pub TxId);
remote_message!(
    TakeSnapshot,
    "troupe.bank.snapshot",
    Option<BTreeMap<String, u64>>
);

/// What is unresolved on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetInDoubt;
remote_message!(GetInDoubt, "troupe.bank.in-doubt", Result<BankInDoubt, String>);

/// The answer to [`GetInDoubt`] (`GET /v1/bank/in-doubt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankInDoubt {
    /// The commit instance's transactions in doubt on this node.
    pub in_doubt: Vec<InDoubt>,
    /// Transfers prepared on this shard and not decided yet.
    pub prepared: Vec<String>,
}

/// Every transfer applied on this node's shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetApplied;
remote_message!(GetApplied, "troupe.bank.applied", BTreeMap<String, Vec<Op>>);

/// The bank on one node: its shard, its commit instance, the partition.
pub struct Bank {
    node: Node,
    shard: Shard,
    commit: CommitHandle,
    members: Vec<String>,
    accounts: usize,
    local_ids: AtomicU64,
}

/// The resource manager: the shard as a participant (and the test delay
/// of [`BankSettings::prepare_delay_ms`]).
struct BankRm(Shard, Duration);

impl ResourceManager for BankRm {
    async fn prepare(&self, tx: TxId) -> Result<(), String> {
        self.0.prepare_staged(&tx_key(tx)).await?;
        if !self.1.is_zero() {
            tokio::time::sleep(self.1).await;
        }
        Ok(())
    }
    async fn commit(&self, tx: TxId) {
        self.0.commit(&tx_key(tx)).await
    }
    async fn abort(&self, tx: TxId) {
        self.0.abort(&tx_key(tx)).await
    }
}

impl Bank {
    /// Load the shard, start the commit instance, start recovery.
    async fn start(
        node: &Node,
        app: &str,
        s: BankSettings,
        members: Vec<String>,
    ) -> Result<Arc<Bank>, troupe::Error> {
        let mut members = members;
        members.sort();
        members.dedup();
        let mine: Vec<String> = (0..s.accounts)
            .map(|i| format!("acct-{i}"))
            .filter(|a| owner(a, s.accounts, &members) == Some(node.name()))
            .collect();
        let shard = Shard::load(node, app, &mine, s.initial_balance)
            .await
            .map_err(troupe::Error::Config)?;
        let commit = start_commit(
            node,
            app,
            s.algorithm,
            &members,
            BankRm(shard.clone(), Duration::from_millis(s.prepare_delay_ms)),
        )
        .await?;
        let bank = Arc::new(Bank {
            node: node.clone(),
            shard,
            commit,
            members,
            accounts: s.accounts,
            local_ids: AtomicU64::new(0),
        });
        bank.recover_participants().await;
        Ok(bank)
    }

    async fn status(&self, tx: TxId) -> Result<Option<Phase>, troupe::Error> {
        self.commit
            .instance()
            .invoke(move |c, _, _| c.status(tx).map(|s| s.phase))
            .await
    }

    /// After a restart: a participant-side prepare the commit core has no
    /// `Ready` for never voted yes (the vote leaves only once `Ready` is
    /// durable): release it. The others wait for their decision, which the
    /// commit worker hands over.
    async fn recover_participants(&self) {
        for tx in self.shard.prepared_as_participant() {
            let Some(id) = parse_tx(&tx) else { continue };
            match self.status(id).await {
                Ok(None) | Ok(Some(Phase::Voting)) => self.shard.abort(&tx).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(tx, error = %e, "bank: cannot read the commit core"),
            }
        }
    }

    /// Resolve the coordinator's own part of transfers nobody waits for
    /// (run by the app's [`OrphanResolver`] actor, so it stops and restarts
    /// with the app).
    async fn resolve_orphans_forever(self: Arc<Self>) {
        loop {
            for tx in self.shard.orphans() {
                let Some(id) = parse_tx(&tx) else {
                    self.shard.resolved(&tx);
                    continue;
                };
                match self.status(id).await {
                    Ok(Some(Phase::Decided(Decision::Commit))) => {
                        self.shard.commit(&tx).await;
                        self.commit.applied(id);
                    }
                    Ok(Some(Phase::Decided(Decision::Abort))) | Ok(None) => {
                        self.shard.abort(&tx).await;
                        self.commit.applied(id);
                    }
                    Ok(Some(_)) => {}
                    Err(e) => tracing::warn!(tx, error = %e, "bank: cannot read the commit core"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn owner(&self, account: &str) -> Option<&str> {
        owner(account, self.accounts, &self.members)
    }

    async fn stage(&self, node: &str, tx: TxId, work: Work) -> Result<(), String> {
        let teller = self
            .node
            .lookup::<Stage>(&format!("{node}/{BANK}"))
            .map_err(|e| e.to_string())?;
        teller
            .ask(Stage { tx, work })
            .timeout(STAGE_TIMEOUT)
            .await
            .map_err(|e| format!("{node} did not take its part: {e}"))?
            .map_err(|e| format!("{node} refused its part: {e}"))
    }

    /// Run one transfer (see the module docs).
    pub async fn transfer(&self, t: Transfer) -> TransferOutcome {
        if t.amount == 0 || t.amount > i64::MAX as u64 {
            return TransferOutcome::Rejected(format!("amount must be between 1 and {}", i64::MAX));
        }
        if t.from == t.to {
            return TransferOutcome::Rejected("from and to are the same account".into());
        }
        let (Some(from), Some(to)) = (self.owner(&t.from), self.owner(&t.to)) else {
            let bad = if self.owner(&t.from).is_none() {
                &t.from
            } else {
                &t.to
            };
            return TransferOutcome::Rejected(format!(
                "no account {bad:?} (accounts are acct-0 .. acct-{})",
                self.accounts.saturating_sub(1)
            ));
        };
        let amount = t.amount as i64;
        let mut parts: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
        parts.entry(from).or_default().push(Op {
            account: t.from.clone(),
            delta: -amount,
        });
        parts.entry(to).or_default().push(Op {
            account: t.to.clone(),
            delta: amount,
        });
        let me = self.node.name();
        let mine = parts.remove(me);
        if parts.is_empty() {
            let id = format!(
                "{me}-local-{}-{}",
                self.node.id().incarnation.simple(),
                self.local_ids.fetch_add(1, Ordering::Relaxed)
            );
            let ops = mine.unwrap_or_default();
            return match self.shard.apply_local(&id, ops).await {
                Ok(()) => TransferOutcome::Committed { tx: id },
                Err(reason) => TransferOutcome::Aborted { tx: id, reason },
            };
        }
        let others: Vec<String> = parts.keys().map(|n| n.to_string()).collect();
        let mut txn = match self.commit.begin(&others) {
            Ok(t) => t,
            Err(e) => {
                return TransferOutcome::Unknown {
                    tx: None,
                    error: e.to_string(),
                }
            }
        };
        let id = txn.id();
        let tx = tx_key(id);
        let local = mine.is_some();
        if local {
            // The decision stays in the commit log until this node's own
            // part applied it (the orphan resolver reads it after a crash).
            txn.hold();
        }
        if let Some(ops) = mine {
            if let Err(reason) = self.shard.prepare_ops(&tx, ops, true).await {
                return TransferOutcome::Aborted { tx, reason };
            }
        }
        for (node, ops) in parts {
            if let Err(reason) = self.stage(node, id, Work::Ops(ops)).await {
                // Never begun: no participant votes on it.
                self.shard.abort(&tx).await;
                return TransferOutcome::Aborted { tx, reason };
            }
        }
        match txn.commit().await {
            Ok(Outcome::Committed) => {
                if local {
                    self.shard.commit(&tx).await;
                    self.commit.applied(id);
                }
                TransferOutcome::Committed { tx }
            }
            Ok(Outcome::Aborted(reason)) => {
                if local {
                    self.shard.abort(&tx).await;
                    self.commit.applied(id);
                }
                TransferOutcome::Aborted {
                    tx,
                    reason: reason.to_string(),
                }
            }
            Err(e) => {
                self.shard.orphan(&tx);
                TransferOutcome::Unknown {
                    tx: Some(tx),
                    error: e.to_string(),
                }
            }
        }
    }

    /// One consistent read of every balance (see the module docs).
    pub async fn read_accounts(&self) -> Result<BTreeMap<String, u64>, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match self.read_once().await {
                Ok(b) => return Ok(b),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn read_once(&self) -> Result<BTreeMap<String, u64>, String> {
        let me = self.node.name();
        let others: Vec<String> = self.members.iter().filter(|m| *m != me).cloned().collect();
        if others.is_empty() {
            let key = format!(
                "{me}-read-{}",
                self.local_ids.fetch_add(1, Ordering::Relaxed)
            );
            let snapshot = self.shard.read_lock(&key, false).await;
            self.shard.release_read(&key);
            return snapshot;
        }
        let txn = self.commit.begin(&others).map_err(|e| e.to_string())?;
        let id = txn.id();
        let tx = tx_key(id);
        let mut all = self.shard.read_lock(&tx, false).await?;
        let result = async {
            for n in &others {
                self.stage(n, id, Work::Read).await?;
            }
            match txn.commit().await.map_err(|e| e.to_string())? {
                Outcome::Committed => Ok(()),
                Outcome::Aborted(r) => Err(format!("the read aborted: {r}")),
            }
        }
        .await;
        self.shard.release_read(&tx);
        result?;
        for n in &others {
            let teller = self
                .node
                .lookup::<TakeSnapshot>(&format!("{n}/{BANK}"))
                .map_err(|e| e.to_string())?;
            // The decision may reach the participant a moment after the
            // coordinator: ask again briefly.
            let mut got = None;
            for _ in 0..50 {
                got = teller
                    .ask(TakeSnapshot(id))
                    .timeout(STAGE_TIMEOUT)
                    .await
                    .map_err(|e| format!("{n}: {e}"))?;
                if got.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            all.extend(got.ok_or_else(|| format!("{n} has no snapshot of read {tx}"))?);
        }
        Ok(all)
    }

    /// What is unresolved here.
    pub async fn in_doubt(&self) -> Result<BankInDoubt, String> {
        Ok(BankInDoubt {
            in_doubt: self.commit.in_doubt().await.map_err(|e| e.to_string())?,
            prepared: self.shard.prepared(),
        })
    }
}

/// The actor answering the routes and the other nodes' coordinators.
struct Teller {
    bank: Arc<Bank>,
}

impl Actor for Teller {
    type Context = Context<Self>;
}

impl Handler<Transfer> for Teller {
    type Result = ResponseFuture<TransferOutcome>;
    fn handle(&mut self, m: Transfer, _: &mut Context<Self>) -> Self::Result {
        let bank = self.bank.clone();
        Box::pin(async move { bank.transfer(m).await })
    }
}

impl Handler<ReadAccounts> for Teller {
    type Result = ResponseFuture<Result<BTreeMap<String, u64>, String>>;
    fn handle(&mut self, _: ReadAccounts, _: &mut Context<Self>) -> Self::Result {
        let bank = self.bank.clone();
        Box::pin(async move { bank.read_accounts().await })
    }
}

impl Handler<Stage> for Teller {
    type Result = Result<(), String>;
    fn handle(&mut self, m: Stage, _: &mut Context<Self>) -> Self::Result {
        if let Work::Ops(ops) = &m.work {
            let me = self.bank.node.name();
            if let Some(op) = ops.iter().find(|o| self.bank.owner(&o.account) != Some(me)) {
                return Err(format!("{} is not on {me}", op.account));
            }
        }
        self.bank.shard.stage(&tx_key(m.tx), m.work);
        Ok(())
    }
}

impl Handler<TakeSnapshot> for Teller {
    type Result = MessageResult<TakeSnapshot>;
    fn handle(&mut self, m: TakeSnapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.bank.shard.take_snapshot(&tx_key(m.0)))
    }
}

impl Handler<GetInDoubt> for Teller {
    type Result = ResponseFuture<Result<BankInDoubt, String>>;
    fn handle(&mut self, _: GetInDoubt, _: &mut Context<Self>) -> Self::Result {
        let bank = self.bank.clone();
        Box::pin(async move { bank.in_doubt().await })
    }
}

impl Handler<GetApplied> for Teller {
    type Result = MessageResult<GetApplied>;
    fn handle(&mut self, _: GetApplied, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.bank.shard.applied())
    }
}

/// The `bank` app kind.
pub struct BankKind;

impl BankKind {
    /// Its name in `kind = "..."`.
    pub const KIND: &'static str = "bank";
}

impl AppKind for BankKind {
    type Settings = BankSettings;
    fn kind(&self) -> &'static str {
        Self::KIND
    }
    fn check(&self, s: &BankSettings, cluster: &ClusterInfo) -> Result<(), String> {
        if s.accounts == 0 {
            return Err("accounts: must be at least 1".into());
        }
        check_members(s.members.as_deref().unwrap_or_default(), cluster)
    }
    fn build(&self, ctx: &AppContext, s: BankSettings) -> Result<AppSpec, troupe::Error> {
        let members = s.members.clone().unwrap_or_else(|| ctx.members());
        let name = ctx.name().to_string();
        Ok(AppSpec::new(ctx.name())
            .strategy(Strategy::RestForOne)
            .start(move |app| async move {
                let bank = Bank::start(app.node(), &name, s, members).await?;
                let b = bank.clone();
                app.spawn(ActorSpec::new(format!("{name}.orphans"), move || {
                    OrphanResolver { bank: b.clone() }
                }))
                .await?;
                app.spawn(
                    ActorSpec::new(BANK, move || Teller { bank: bank.clone() })
                        .handles::<Transfer>()
                        .handles::<ReadAccounts>()
                        .handles::<Stage>()
                        .handles::<TakeSnapshot>()
                        .handles::<GetInDoubt>()
                        .handles::<GetApplied>(),
                )
                .await
            }))
    }
    fn routes(&self, _: &BankSettings) -> Option<AppRoutes> {
        Some(bank_routes())
    }
    fn panel(&self, _: &BankSettings) -> Option<AppPanel> {
        Some(Arc::new(|node: Node| Box::pin(bank_panel(node))))
    }
}

/// The bank's dashboard panel: the transactions in doubt on this node and
/// the transfers prepared on its shard and not decided yet.
async fn bank_panel(node: Node) -> Result<Panel, String> {
    let r =
        crate::sample::ask_local(&node, BANK, GetInDoubt, crate::sample::PANEL_TIMEOUT).await??;
    let rows = r
        .in_doubt
        .iter()
        .map(|d| {
            vec![
                d.tx.to_string(),
                d.instance.clone(),
                if d.coordinator {
                    "coordinator"
                } else {
                    "participant"
                }
                .to_string(),
                format!("{:?}", d.phase),
                if d.active {
                    "resolving"
                } else {
                    "waiting for the others"
                }
                .to_string(),
            ]
        })
        .collect();
    Ok(Panel::new("bank: atomic commit")
        .field("in doubt", r.in_doubt.len())
        .field("prepared, undecided", r.prepared.len())
        .table(&["tx", "instance", "role", "phase", "state"], rows))
}

/// The bank app's child that resolves orphaned coordinator parts: the
/// loop runs as this actor's future, so it lives in the app's tree, stops
/// with the app and is restarted with it (a restarted app starts a new
/// one; none is left running beside it).
struct OrphanResolver {
    bank: Arc<Bank>,
}

impl Actor for OrphanResolver {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(self.bank.clone().resolve_orphans_forever().into_actor(self));
    }
}

/// The body of `POST /v1/<app>/transfer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// How much.
    pub amount: u64,
}

/// The bank's routes (see the module docs).
pub fn bank_routes() -> AppRoutes {
    Arc::new(|cfg: &mut web::ServiceConfig| {
        cfg.service(web::resource("/transfer").post(transfer_route))
            .service(web::resource("/accounts").get(accounts_route))
            .service(web::resource("/in-doubt").get(in_doubt_route))
            .service(web::resource("/applied").get(applied_route));
    })
}

async fn ask_teller<M: RemoteMessage>(node: &Node, m: M) -> Result<M::Reply, ApiError> {
    crate::sample::ask_local(node, BANK, m, ROUTE_TIMEOUT)
        .await
        .map_err(ApiError::unavailable)
}

async fn transfer_route(
    ctx: web::Data<HttpContext>,
    body: Json<TransferBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.0;
    let t = Transfer {
        from: b.from,
        to: b.to,
        amount: b.amount,
    };
    Ok(match ask_teller(ctx.node(), t).await? {
        TransferOutcome::Committed { tx } => {
            HttpResponse::Ok().json(json!({ "tx": tx, "outcome": "committed" }))
        }
        TransferOutcome::Aborted { tx, reason } => HttpResponse::Conflict()
            .json(json!({ "tx": tx, "outcome": "aborted", "reason": reason })),
        TransferOutcome::Rejected(e) => return Err(ApiError::bad_request(e)),
        TransferOutcome::Unknown { tx, error } => {
            return Err(ApiError::unavailable(error).with("tx", json!(tx)))
        }
    })
}

async fn accounts_route(ctx: web::Data<HttpContext>) -> Result<web::Json<Value>, ApiError> {
    let accounts = ask_teller(ctx.node(), ReadAccounts)
        .await?
        .map_err(|e| ApiError::unavailable(format!("no consistent read: {e}")))?;
    let total: u64 = accounts.values().sum();
    Ok(web::Json(json!({ "accounts": accounts, "total": total })))
}

async fn in_doubt_route(ctx: web::Data<HttpContext>) -> Result<web::Json<Value>, ApiError> {
    let r = ask_teller(ctx.node(), GetInDoubt)
        .await?
        .map_err(ApiError::unavailable)?;
    Ok(web::Json(json!(r)))
}

async fn applied_route(ctx: web::Data<HttpContext>) -> Result<web::Json<Value>, ApiError> {
    let applied = ask_teller(ctx.node(), GetApplied).await?;
    Ok(web::Json(json!({ "applied": applied })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_go_round_robin_over_the_sorted_members() {
        let m: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(owner("acct-0", 100, &m), Some("a"));
        assert_eq!(owner("acct-4", 100, &m), Some("b"));
        assert_eq!(owner("acct-98", 100, &m), Some("c"));
        assert_eq!(owner("acct-100", 100, &m), None);
        assert_eq!(owner("acct-07", 100, &m), None);
        assert_eq!(owner("bob", 100, &m), None);
    }
}
