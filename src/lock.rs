//! Distributed locks: a typed API over the mutual-exclusion family.
//!
//! ```ignore
//! let lock = start_lock(&node, "ledger", MutexAlgorithm::RicartAgrawala, &members).await?;
//! let guard = lock.acquire().await?;
//! store.write(value, guard.fencing_token());  // the resource rejects stale tokens
//! guard.release().await;                      // or drop it
//! ```
//!
//! Each lock is one instance of the mutual-exclusion family
//! ([`MutexFamily`], started by [`crate::family`]): a driver actor named
//! `mutex.<resource>` on every member, supervised under the node, running
//! the configured algorithm ([`MutexAlgorithm`]). Its durable state (Lamport
//! clock, largest fencing token, sequence numbers) is made durable in the
//! node's store before any message that depends on it is sent, and before a
//! grant is reported here, so a restarted node never reuses a token or a
//! timestamp.
//!
//! Guarantees (stated exactly, per algorithm, in `troupe_protocols::mutex`,
//! and checked after every step of the simulator's chaos scenarios):
//! - two nodes hold the lock at the same time only if the failure detector
//!   falsely suspected a member (a partition, a restart not yet noticed)
//!   while one of them was being granted it (between its request and its
//!   grant; token ring: while its token's generation was created) — for
//!   Ricart–Agrawala and Lamport, only a suspicion between those two nodes
//!   counts; so with an accurate detector, at most one holder;
//! - a grant's fencing token is larger than every earlier grant's, except a
//!   grant made under such a false suspicion, or one whose holder has
//!   crashed since (its token may die with it); a resource that refuses tokens
//!   not larger than the last one it accepted therefore stays safe even
//!   when a partition fools the detector;
//! - a node's own grants carry growing tokens, across its restarts;
//! - on one node, holders are serialized: a second local `acquire` waits for
//!   the first guard to be released;
//! - an `acquire_within` that times out withdraws its request: if the lock
//!   is granted later, it is released at once (and the next local `acquire`
//!   waits for that).

use std::sync::Arc;
use std::time::Duration;

use troupe_framework::Node;
use troupe_protocols::family::Family;
use troupe_protocols::mutex::{MutexAlgorithm, MutexConfig, MutexCore, MutexFamily, MutexView};

use crate::family::{self, Instance};
use crate::Error;

/// A lock on one named resource shared by a group of nodes. Cheap to clone.
#[derive(Clone)]
pub struct DistributedLock {
    instance: Instance<MutexFamily>,
    resource: String,
    local: Arc<tokio::sync::Mutex<()>>,
}

/// Proof of holding the lock. Release it with [`LockGuard::release`] or by
/// dropping it.
pub struct LockGuard {
    lock: DistributedLock,
    token: u64,
    released: bool,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

impl LockGuard {
    /// The fencing token of this grant: larger than every earlier grant's,
    /// with the exceptions the module's guarantees state. Present it to the
    /// protected resource.
    /// Present it to the protected resource.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// Give the lock back and wait until the release is carried out.
    pub async fn release(mut self) {
        self.released = true;
        let _ = self
            .lock
            .instance
            .invoke(|core, now, out| core.release(now, out))
            .await;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            let _ = self
                .lock
                .instance
                .invoke_detached(|core, now, out| core.release(now, out));
        }
    }
}

/// Start the lock on `resource` on this node; `members` are the names of all
/// the nodes sharing it (this one included or not). Every member must start
/// the lock with the same algorithm and members.
pub async fn start_lock(
    node: &Node,
    resource: &str,
    algorithm: MutexAlgorithm,
    members: &[String],
) -> Result<DistributedLock, Error> {
    start_lock_with(node, MutexConfig::new(resource), algorithm, members).await
}

/// [`start_lock`] with explicit timing.
pub async fn start_lock_with(
    node: &Node,
    config: MutexConfig,
    algorithm: MutexAlgorithm,
    members: &[String],
) -> Result<DistributedLock, Error> {
    let resource = config.resource.clone();
    troupe_framework::ids::validate_name(&resource)
        .map_err(|e| Error::Config(format!("lock resource: {e}")))?;
    let instance =
        family::start::<MutexFamily>(node, &resource, algorithm, members, config).await?;
    Ok(DistributedLock::new(instance, resource))
}

/// Every lock running on `node` (actors `mutex.<resource>`), with what
/// this node knows of it (holding with a fencing token, or waiting), by
/// resource.
pub async fn running_locks(node: &Node) -> Vec<(String, MutexView)> {
    let mut out = Vec::new();
    for name in node.registry().names() {
        let Some(resource) = name.strip_prefix("mutex.") else {
            continue;
        };
        let view = troupe_protocols::driver::invoke_named(
            node,
            &name,
            |core: &mut <MutexFamily as Family>::Core, _, _| MutexFamily::view(core),
        )
        .await;
        if let Ok(v) = view {
            out.push((resource.to_string(), v));
        }
    }
    out
}

impl DistributedLock {
    /// A lock over a running mutual-exclusion instance (from
    /// [`family::prepare`], when the lock lives in an app's tree).
    pub fn new(instance: Instance<MutexFamily>, resource: impl Into<String>) -> Self {
        Self {
            instance,
            resource: resource.into(),
            local: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The resource's name.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Wait for the lock (no deadline).
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        self.acquire_within(Duration::MAX).await
    }

    /// Wait for the lock at most `timeout` (waiting for another local holder
    /// included); on timeout the request is withdrawn: released as soon as
    /// it would be granted.
    pub async fn acquire_within(&self, timeout: Duration) -> Result<LockGuard, Error> {
        let deadline = (timeout != Duration::MAX)
            .then(|| tokio::time::Instant::now().checked_add(timeout))
            .flatten();
        let local = match deadline {
            None => self.local.clone().lock_owned().await,
            Some(d) => tokio::time::timeout_at(d, self.local.clone().lock_owned())
                .await
                .map_err(|_| Error::Timeout(timeout))?,
        };
        self.instance
            .invoke(|core, now, out| {
                if core.holding().is_none() {
                    core.request(now, out);
                }
            })
            .await?;
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(tokio::time::Instant::now())
        });
        match self.instance.wait_for(|v| v.holding.is_some(), left).await {
            Ok(v) => Ok(self.guard(v.holding.unwrap_or_default(), local)),
            Err(Error::Timeout(_)) => {
                self.withdraw(local);
                Err(Error::Timeout(timeout))
            }
            Err(e) => Err(e),
        }
    }

    /// Give up a request that timed out: release the lock as soon as it is
    /// granted, keeping other local acquirers out until then.
    fn withdraw(&self, local: tokio::sync::OwnedMutexGuard<()>) {
        let instance = self.instance.clone();
        actix_rt::spawn(async move {
            let _local = local;
            let settled = instance
                .wait_for(|v| v.holding.is_some() || !v.waiting, Duration::MAX)
                .await;
            if matches!(settled, Ok(v) if v.holding.is_some()) {
                let _ = instance
                    .invoke(|core, now, out| core.release(now, out))
                    .await;
            }
        });
    }

    fn guard(&self, token: u64, local: tokio::sync::OwnedMutexGuard<()>) -> LockGuard {
        LockGuard {
            lock: self.clone(),
            token,
            released: false,
            _local: local,
        }
    }

    /// The fencing token if this node holds the lock now.
    pub async fn holding(&self) -> Result<Option<u64>, Error> {
        self.instance.invoke(|core, _, _| core.holding()).await
    }

    /// The protocol instance underneath (its view, events and commands).
    pub fn instance(&self) -> &Instance<MutexFamily> {
        &self.instance
    }
}
