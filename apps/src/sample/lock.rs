//! The `lock` app: a worker that takes a distributed lock in a loop.
//!
//! Its tree, rest-for-one: the protocol actor `mutex.RESOURCE` (started by
//! [`start_lock`]), then `NAME.worker`, an actor whose loop acquires the
//! lock, holds it for `hold_ms` (telling the `audit` actor, if any, on
//! entry and exit), releases it and waits `hold_ms`. The loop runs inside
//! the worker's context: if the worker fails or panics, its supervisor
//! restarts it, and a held lock is released as the guard drops.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use troupe::app::{check_members, AppContext, AppKind, AppSpec, ClusterInfo};
use troupe::framework::ActorPath;
use troupe::prelude::*;

/// A lock worker reports entering its critical section (asked, so that the
/// auditor sees entries and exits in causal order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enter {
    /// The resource.
    pub resource: String,
    /// The fencing token of the grant.
    pub token: u64,
}
remote_message!(Enter, "troupe.lock.enter", ());

/// A lock worker reports leaving its critical section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exit {
    /// The resource.
    pub resource: String,
    /// The fencing token of the grant.
    pub token: u64,
}
remote_message!(Exit, "troupe.lock.exit", ());

/// The `[apps.lock]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSettings {
    /// The resource's name.
    pub resource: String,
    /// The mutual-exclusion algorithm.
    pub algorithm: MutexAlgorithm,
    /// An actor path asked at every entry and exit, e.g. `"ctl/audit"`.
    #[serde(default)]
    pub audit: Option<String>,
    /// Length of each critical section in ms (default 20).
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
    /// Who shares the lock (default: this node and all its peers).
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

fn default_hold_ms() -> u64 {
    20
}

type Audit = (RemoteRef<Enter>, RemoteRef<Exit>);

/// Takes the lock in a loop (see the module docs).
struct LockWorker {
    lock: DistributedLock,
    audit: Option<Audit>,
    hold: Duration,
}

impl Actor for LockWorker {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let (lock, audit, hold) = (self.lock.clone(), self.audit.clone(), self.hold);
        ctx.spawn(work(lock, audit, hold).into_actor(self));
    }
}

async fn work(lock: DistributedLock, audit: Option<Audit>, hold: Duration) {
    let ask = Duration::from_secs(2);
    loop {
        let Ok(guard) = lock.acquire_within(Duration::from_secs(10)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let token = guard.fencing_token();
        let resource = lock.resource().to_string();
        if let Some((enter, _)) = &audit {
            let entered = Enter {
                resource: resource.clone(),
                token,
            };
            let _ = enter.ask(entered).timeout(ask).await;
        }
        tokio::time::sleep(hold).await;
        if let Some((_, exit)) = &audit {
            let _ = exit.ask(Exit { resource, token }).timeout(ask).await;
        }
        guard.release().await;
        tokio::time::sleep(hold).await;
    }
}

/// The `lock` app kind.
pub struct LockKind;

impl LockKind {
    /// Its name in `kind = "..."`.
    pub const KIND: &'static str = "lock";
}

impl AppKind for LockKind {
    type Settings = LockSettings;
    fn kind(&self) -> &'static str {
        Self::KIND
    }
    fn check(&self, s: &LockSettings, cluster: &ClusterInfo) -> Result<(), String> {
        troupe::framework::ids::validate_name(&s.resource).map_err(|e| format!("resource: {e}"))?;
        if let Some(audit) = &s.audit {
            audit
                .parse::<ActorPath>()
                .map_err(|e| format!("audit: {e}"))?;
        }
        check_members(s.members.as_deref().unwrap_or_default(), cluster)
    }
    fn build(&self, ctx: &AppContext, s: LockSettings) -> Result<AppSpec, troupe::Error> {
        let members = s.members.clone().unwrap_or_else(|| ctx.members());
        let node = ctx.node();
        let audit = match &s.audit {
            Some(path) => {
                let bad = |e| troupe::Error::Config(format!("apps.{}.audit: {e}", ctx.name()));
                Some((
                    node.lookup::<Enter>(path).map_err(bad)?,
                    node.lookup::<Exit>(path).map_err(bad)?,
                ))
            }
            None => None,
        };
        let worker = format!("{}.worker", ctx.name());
        let hold = Duration::from_millis(s.hold_ms);
        Ok(AppSpec::new(ctx.name())
            .strategy(Strategy::RestForOne)
            .start(move |app| async move {
                let lock = start_lock(app.node(), &s.resource, s.algorithm, &members).await?;
                app.spawn(ActorSpec::new(worker, move || LockWorker {
                    lock: lock.clone(),
                    audit: audit.clone(),
                    hold,
                }))
                .await
            }))
    }
}
