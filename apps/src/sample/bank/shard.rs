//! One node's shard of the bank's accounts: balances, debits reserved by
//! prepared transfers, and the record of applied transfers, kept durable in
//! the node's store (namespace `bank-shard.<app>`).
//!
//! Durable keys: `init` (the shard was created), `bal/<account>` (a
//! balance), `prep/<tx>` (a transfer prepared here and not decided yet: its
//! operations, and whether this node coordinates it), `done/<tx>` (a
//! transfer applied here: its operations). Every change is one atomic
//! submission: applying a transfer writes the new balances, its `done`
//! record and the removal of its `prep` record together, so a transfer is
//! applied at most once per shard — a decision handed over again after a
//! restart finds the `done` record and changes nothing.
//!
//! Reservations: preparing a debit checks `balance - reserved >= amount`
//! and adds the amount to `reserved`; commit subtracts it from both;
//! abort releases it. Balances never go negative. Reservations are
//! rebuilt from the `prep` records on start.
//!
//! Read locks (for the consistent read of every balance, see the module
//! above): a read waits until no transfer is prepared on the shard (new
//! prepares wait behind it), then takes a snapshot and holds the lock until
//! its transaction is decided. A participant asked to prepare a transfer
//! while a read holds or waits for the lock waits at most
//! [`PARTICIPANT_WAIT`], then votes no ("busy"): the read may be waiting
//! for that transfer's other half, so a longer wait would only deadlock
//! until a vote timeout. The coordinator's own prepare and local
//! transfers wait ([`WAIT`]); a participant's read waits [`READ_WAIT`]. A
//! wait that runs out votes no. Read locks are kept in memory only: a read is never
//! applied, and a node that restarts has answered no read since.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use troupe::framework::storage::Write;
use troupe::framework::Node;

/// How long a prepare waits for a read lock, or a read for the prepared
/// transfers to be decided, before voting no.
pub const WAIT: Duration = Duration::from_secs(2);
/// How long a participant's transfer prepare waits for a read lock before
/// voting no ("busy").
pub const PARTICIPANT_WAIT: Duration = Duration::from_millis(100);
/// How long a participant's read waits for the prepared transfers to be
/// decided (below the commit vote timeout, 500 ms).
pub const READ_WAIT: Duration = Duration::from_millis(400);
const POLL: Duration = Duration::from_millis(5);
/// How long staged work and untaken read snapshots are kept.
const FORGET: Duration = Duration::from_secs(60);

/// One account's part of a transfer: `delta` is added to its balance
/// (negative: a debit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The account.
    pub account: String,
    /// The change of its balance.
    pub delta: i64,
}

/// The work a coordinator hands a participant before the vote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Work {
    /// Apply these operations (all on the participant's shard).
    Ops(Vec<Op>),
    /// Lock the shard for a read and take a snapshot of its balances.
    Read,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Prepared {
    ops: Vec<Op>,
    coordinator: bool,
}

#[derive(Default)]
struct State {
    balances: BTreeMap<String, u64>,
    reserved: HashMap<String, u64>,
    prepared: BTreeMap<String, Prepared>,
    applied: BTreeMap<String, Vec<Op>>,
    /// Work handed over by coordinators, not prepared yet (memory only),
    /// with when it came.
    staged: HashMap<String, (Work, Instant)>,
    /// Read locks held: the transaction and its snapshot.
    reads: HashMap<String, BTreeMap<String, u64>>,
    /// Reads waiting for the prepared transfers to drain.
    read_waiting: usize,
    /// Snapshots of committed reads, until their coordinator takes them.
    snapshots: HashMap<String, (BTreeMap<String, u64>, Instant)>,
    /// Coordinator-side prepared transfers nobody is waiting for (after a
    /// restart, or when `commit()` failed): resolved by the recovery task.
    orphans: Vec<String>,
}

/// A shard. Cheap to clone; all clones share the state.
#[derive(Clone)]
pub struct Shard {
    node: Node,
    namespace: String,
    state: Arc<Mutex<State>>,
}

fn key(prefix: &str, id: &str) -> String {
    format!("{prefix}/{id}")
}

fn put<T: Serialize>(k: String, v: &T) -> Result<Write, String> {
    Ok(Write::Put {
        key: k,
        value: rmp_serde::to_vec(v).map_err(|e| e.to_string())?,
    })
}

impl Shard {
    /// Load the shard of app `app` on `node`, creating `accounts` with
    /// `initial` each the first time.
    pub async fn load(
        node: &Node,
        app: &str,
        accounts: &[String],
        initial: u64,
    ) -> Result<Shard, String> {
        let namespace = format!("bank-shard.{app}");
        let rec = node
            .store()
            .load(&namespace)
            .map_err(|e| format!("bank shard: {e}"))?;
        let mut st = State::default();
        if rec.get("init").is_none() {
            let mut writes = Vec::new();
            for a in accounts {
                st.balances.insert(a.clone(), initial);
                writes.push(put(key("bal", a), &initial)?);
            }
            writes.push(put("init".into(), &true)?);
            node.store()
                .submit(&namespace, writes)
                .wait()
                .await
                .map_err(|e| format!("bank shard: {e}"))?;
        } else {
            let err = |e: troupe::framework::storage::DurableError| format!("bank shard: {e}");
            let keys: Vec<String> = rec.keys().map(String::from).collect();
            for k in keys {
                if let Some(a) = k.strip_prefix("bal/") {
                    let v: u64 = rec.get_as(&k).map_err(err)?.unwrap_or_default();
                    st.balances.insert(a.to_string(), v);
                } else if let Some(tx) = k.strip_prefix("prep/") {
                    if let Some(p) = rec.get_as::<Prepared>(&k).map_err(err)? {
                        st.prepared.insert(tx.to_string(), p);
                    }
                } else if let Some(tx) = k.strip_prefix("done/") {
                    if let Some(ops) = rec.get_as::<Vec<Op>>(&k).map_err(err)? {
                        st.applied.insert(tx.to_string(), ops);
                    }
                }
            }
            for (tx, p) in &st.prepared {
                reserve(&mut st.reserved, &p.ops);
                if p.coordinator {
                    st.orphans.push(tx.clone());
                }
            }
        }
        Ok(Shard {
            node: node.clone(),
            namespace,
            state: Arc::new(Mutex::new(st)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn submit(&self, writes: Vec<Write>) -> Result<(), String> {
        self.node
            .store()
            .submit(&self.namespace, writes)
            .wait()
            .await
            .map(|_| ())
            .map_err(|e| format!("bank shard store: {e}"))
    }

    /// Keep `work` for `tx` until its prepare.
    pub fn stage(&self, tx: &str, work: Work) {
        let now = Instant::now();
        let mut st = self.lock();
        // Work whose coordinator never ran the vote (it crashed, or gave
        // up) and snapshots nobody took: dropped after a while.
        st.staged
            .retain(|_, (_, at)| now.duration_since(*at) < FORGET);
        st.snapshots
            .retain(|_, (_, at)| now.duration_since(*at) < FORGET);
        st.staged.insert(tx.to_string(), (work, now));
    }

    /// The participant's prepare: take the staged work of `tx` and prepare it.
    pub async fn prepare_staged(&self, tx: &str) -> Result<(), String> {
        let read = matches!(self.lock().staged.get(tx), Some((Work::Read, _)));
        if read {
            return self.read_lock(tx, true).await.map(|_| ());
        }
        // A participant waits only briefly for a read: the read may be
        // waiting for this very transaction's other half to be decided.
        self.wait_for_reads(PARTICIPANT_WAIT).await?;
        let ops = match self.lock().staged.remove(tx) {
            Some((Work::Ops(ops), _)) => ops,
            // A restarted node (the work was in memory) or an abort that
            // came first.
            _ => return Err(format!("transaction {tx} is unknown here (aborted?)")),
        };
        self.prepare_ops(tx, ops, false).await
    }

    async fn wait_for_reads(&self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            {
                let st = self.lock();
                if st.reads.is_empty() && st.read_waiting == 0 {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("busy: a consistent read holds the accounts".into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Prepare `ops` for `tx`: check and reserve the debits, make the
    /// record durable. `coordinator`: this node runs `tx` (its own part).
    pub async fn prepare_ops(
        &self,
        tx: &str,
        ops: Vec<Op>,
        coordinator: bool,
    ) -> Result<(), String> {
        if coordinator {
            self.wait_for_reads(WAIT).await?;
        }
        let write = {
            let mut st = self.lock();
            if st.prepared.contains_key(tx) || st.applied.contains_key(tx) {
                return Ok(());
            }
            check_funds(&st, &ops)?;
            reserve(&mut st.reserved, &ops);
            let p = Prepared { ops, coordinator };
            let write = put(key("prep", tx), &p);
            st.prepared.insert(tx.to_string(), p);
            write
        };
        let done = match write {
            Ok(w) => self.submit(vec![w]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let mut st = self.lock();
            if let Some(p) = st.prepared.remove(tx) {
                unreserve(&mut st.reserved, &p.ops);
            }
            return Err(e);
        }
        Ok(())
    }

    /// `tx` committed: apply it (once), or keep the snapshot of a read.
    pub async fn commit(&self, tx: &str) {
        let writes = {
            let mut st = self.lock();
            if let Some(snapshot) = st.reads.remove(tx) {
                st.snapshots
                    .insert(tx.to_string(), (snapshot, Instant::now()));
                return;
            }
            if st.applied.contains_key(tx) {
                return;
            }
            let Some(p) = st.prepared.remove(tx) else {
                tracing::debug!(
                    tx,
                    "bank: commit of a transaction with nothing prepared here"
                );
                return;
            };
            unreserve(&mut st.reserved, &p.ops);
            apply(&mut st, tx, p.ops)
        };
        if let Err(e) = match writes {
            Ok(w) => self.submit(w).await,
            Err(e) => Err(e),
        } {
            tracing::error!(tx, error = %e, "bank: cannot write a committed transfer");
        }
    }

    /// `tx` aborted: release whatever it holds here.
    pub async fn abort(&self, tx: &str) {
        let held = {
            let mut st = self.lock();
            st.staged.remove(tx);
            st.reads.remove(tx);
            st.orphans.retain(|o| o != tx);
            match st.prepared.remove(tx) {
                Some(p) => {
                    unreserve(&mut st.reserved, &p.ops);
                    true
                }
                None => false,
            }
        };
        if held {
            if let Err(e) = self
                .submit(vec![Write::Delete {
                    key: key("prep", tx),
                }])
                .await
            {
                tracing::error!(tx, error = %e, "bank: cannot write an abort");
            }
        }
    }

    /// Apply `ops` at once, as transfer `id` (both accounts on this shard).
    pub async fn apply_local(&self, id: &str, ops: Vec<Op>) -> Result<(), String> {
        self.wait_for_reads(WAIT).await?;
        let writes = {
            let mut st = self.lock();
            check_funds(&st, &ops)?;
            apply(&mut st, id, ops)?
        };
        self.submit(writes).await
    }

    /// Take a read lock for `tx` once no transfer is prepared here, and
    /// answer the snapshot. `staged`: a participant's read, whose staged
    /// work must still be there (not aborted meanwhile).
    pub async fn read_lock(&self, tx: &str, staged: bool) -> Result<BTreeMap<String, u64>, String> {
        self.lock().read_waiting += 1;
        let deadline = tokio::time::Instant::now() + if staged { READ_WAIT } else { WAIT };
        let got = loop {
            {
                let mut st = self.lock();
                if st.prepared.is_empty() {
                    if staged && st.staged.remove(tx).is_none() {
                        break Err(format!("read {tx} is unknown here (aborted?)"));
                    }
                    let snapshot = st.balances.clone();
                    st.reads.insert(tx.to_string(), snapshot.clone());
                    break Ok(snapshot);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break Err("busy: transfers are being decided".into());
            }
            tokio::time::sleep(POLL).await;
        };
        self.lock().read_waiting -= 1;
        got
    }

    /// Release the coordinator's own read lock of `tx`.
    pub fn release_read(&self, tx: &str) {
        self.lock().reads.remove(tx);
    }

    /// The snapshot of committed read `tx`, once.
    pub fn take_snapshot(&self, tx: &str) -> Option<BTreeMap<String, u64>> {
        self.lock().snapshots.remove(tx).map(|(s, _)| s)
    }

    /// Transfers prepared here and not decided yet.
    pub fn prepared(&self) -> Vec<String> {
        self.lock().prepared.keys().cloned().collect()
    }

    /// Participant-side prepared transfers (recovered from the store).
    pub fn prepared_as_participant(&self) -> Vec<String> {
        let st = self.lock();
        st.prepared
            .iter()
            .filter(|(_, p)| !p.coordinator)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Hand this coordinator-side transfer to the recovery task.
    pub fn orphan(&self, tx: &str) {
        let mut st = self.lock();
        if st.prepared.contains_key(tx) && !st.orphans.iter().any(|o| o == tx) {
            st.orphans.push(tx.to_string());
        }
    }

    /// Coordinator-side transfers waiting for the recovery task.
    pub fn orphans(&self) -> Vec<String> {
        self.lock().orphans.clone()
    }

    /// Forget an orphan (it was resolved).
    pub fn resolved(&self, tx: &str) {
        self.lock().orphans.retain(|o| o != tx);
    }

    /// Every transfer applied here, by id.
    pub fn applied(&self) -> BTreeMap<String, Vec<Op>> {
        self.lock().applied.clone()
    }
}

fn check_funds(st: &State, ops: &[Op]) -> Result<(), String> {
    for op in ops {
        let Some(balance) = st.balances.get(&op.account) else {
            return Err(format!("no account {} here", op.account));
        };
        if op.delta < 0 {
            let held = st.reserved.get(&op.account).copied().unwrap_or_default();
            let available = balance.saturating_sub(held);
            if available < op.delta.unsigned_abs() {
                return Err(format!(
                    "insufficient funds in {}: {available} available, {} asked",
                    op.account,
                    op.delta.unsigned_abs()
                ));
            }
        } else if balance.checked_add(op.delta as u64).is_none() {
            return Err(format!("{} would overflow", op.account));
        }
    }
    Ok(())
}

fn reserve(reserved: &mut HashMap<String, u64>, ops: &[Op]) {
    for op in ops.iter().filter(|o| o.delta < 0) {
        *reserved.entry(op.account.clone()).or_default() += op.delta.unsigned_abs();
    }
}

fn unreserve(reserved: &mut HashMap<String, u64>, ops: &[Op]) {
    for op in ops.iter().filter(|o| o.delta < 0) {
        if let Some(r) = reserved.get_mut(&op.account) {
            *r = r.saturating_sub(op.delta.unsigned_abs());
        }
    }
}

/// Apply `ops` in memory and answer the writes that make it durable: the
/// balances, the `done` record, the removal of the `prep` record.
fn apply(st: &mut State, tx: &str, ops: Vec<Op>) -> Result<Vec<Write>, String> {
    let mut writes = Vec::new();
    for op in &ops {
        let b = st.balances.entry(op.account.clone()).or_default();
        *b = if op.delta < 0 {
            b.saturating_sub(op.delta.unsigned_abs())
        } else {
            b.saturating_add(op.delta as u64)
        };
        writes.push(put(key("bal", &op.account), &*b)?);
    }
    writes.push(put(key("done", tx), &ops)?);
    writes.push(Write::Delete {
        key: key("prep", tx),
    });
    st.applied.insert(tx.to_string(), ops);
    st.orphans.retain(|o| o != tx);
    Ok(writes)
}
