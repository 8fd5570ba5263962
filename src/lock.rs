//! Distributed locks: a typed API over the mutual-exclusion cores.
//!
//! ```ignore
//! let lock = start_lock(&node, "ledger", MutexAlgorithm::RicartAgrawala, &members).await?;
//! let guard = lock.acquire().await?;
//! store.write(value, guard.fencing_token());  // the resource rejects stale tokens
//! guard.release().await;                      // or drop it
//! ```
//!
//! Each lock is one [`Driver`](troupe_protocols::driver::Driver) actor named
//! `mutex.<resource>` on every member node, supervised under the node,
//! running the configured algorithm ([`MutexAlgorithm`]). Its durable state
//! (Lamport clock, largest fencing token, sequence numbers) is written to the
//! node's storage before any message that depends on it is sent, so a
//! restarted node never reuses a token or a timestamp.
//!
//! Guarantees (see each algorithm's module for its failure behaviour):
//! - at most one holder at a time while the failure detector is accurate;
//! - every grant's fencing token is larger than every earlier grant's, so a
//!   resource that refuses tokens not larger than the last one it accepted
//!   stays safe even when a partition fools the detector;
//! - on one node, holders are serialized: a second local `acquire` waits for
//!   the first guard to be released.

use std::sync::Arc;
use std::time::Duration;

use troupe_framework::Node;
use troupe_protocols::driver::{spawn_driver, DriverHandle, DriverSpec};
use troupe_protocols::mutex::{
    AnyMutex, MutexAlgorithm, MutexConfig, MutexCore, MutexDurable, MutexEvent,
};
use troupe_protocols::testkit::SimProtocol;

use crate::Error;

type Core = AnyMutex<String>;

/// A lock on one named resource shared by a group of nodes. Cheap to clone.
#[derive(Clone)]
pub struct DistributedLock {
    driver: DriverHandle<Core>,
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
    /// The fencing token of this grant: larger than every earlier grant's.
    /// Present it to the protected resource.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// Give the lock back and wait until the core has taken the release.
    pub async fn release(mut self) {
        self.released = true;
        let _ = self
            .lock
            .driver
            .invoke(|core, now, out| core.release(now, out))
            .await;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            let _ = self
                .lock
                .driver
                .invoke_detached(|core, now, out| core.release(now, out));
        }
    }
}

/// The storage key of a lock's durable state.
fn storage_key(resource: &str) -> String {
    format!("mutex.{resource}")
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
    let mut all: Vec<String> = members.to_vec();
    all.push(node.name().to_string());
    all.sort();
    all.dedup();
    let key = storage_key(&resource);
    let make_key = key.clone();
    let make = move |n: &Node| {
        let durable = match n.storage().get(&make_key) {
            Ok(Some(bytes)) => match rmp_serde::from_slice::<MutexDurable>(&bytes) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(key = %make_key, error = %e, "stored lock state does not decode; starting fresh");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::error!(key = %make_key, error = %e, "cannot read lock state; starting fresh");
                None
            }
        };
        AnyMutex::new(
            algorithm,
            n.name().to_string(),
            all.clone(),
            config.clone(),
            durable,
        )
    };
    let spec = DriverSpec::new(key.clone(), make)
        .membership()
        .persist(key, |core: &Core| {
            rmp_serde::to_vec(&core.durable()).unwrap_or_default()
        });
    let driver = spawn_driver(node, spec).await?;
    Ok(DistributedLock {
        driver,
        resource,
        local: Arc::new(tokio::sync::Mutex::new(())),
    })
}

impl DistributedLock {
    /// The resource's name.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Wait for the lock (no deadline).
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        self.acquire_within(Duration::MAX).await
    }

    /// Wait for the lock at most `timeout`; on timeout the request is
    /// withdrawn (released as soon as it would be granted).
    pub async fn acquire_within(&self, timeout: Duration) -> Result<LockGuard, Error> {
        let local = self.local.clone().lock_owned().await;
        let mut events = self.driver.subscribe();
        let held = self
            .driver
            .invoke(|core, now, out| {
                let held = core.holding();
                if held.is_none() {
                    core.request(now, out);
                }
                held
            })
            .await?;
        if let Some(token) = held {
            return Ok(self.guard(token, local));
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(MutexEvent::Granted { fencing_token, .. }) => return Ok(fencing_token),
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(t) = self.driver.invoke(|core, _, _| core.holding()).await? {
                            return Ok(t);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(Error::Protocol(format!("lock {:?} stopped", self.resource)))
                    }
                }
            }
        };
        let token = if timeout == Duration::MAX {
            wait.await?
        } else {
            match tokio::time::timeout(timeout, wait).await {
                Ok(r) => r?,
                Err(_) => {
                    // Withdraw: release now if granted meanwhile, or as soon as it is.
                    let _ = self
                        .driver
                        .invoke(|core, now, out| core.release(now, out))
                        .await;
                    return Err(Error::Timeout(timeout));
                }
            }
        };
        Ok(self.guard(token, local))
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
        Ok(self.driver.invoke(|core, _, _| core.holding()).await?)
    }
}
