//! Distributed mutual exclusion: a lock on one named resource across a group.
//!
//! Each algorithm is a sans-IO core (see `troupe_framework::sansio`) in its own
//! module: [`Centralized`] (a coordinator with a FIFO queue),
//! [`RicartAgrawala`] (Lamport-stamped requests, deferred replies),
//! [`TokenRing`] (a token circulating over the live ring, regenerated with a
//! new generation when lost) and [`LamportMutex`] (replicated request queue,
//! acks and releases). [`MutexAlgorithm`] names them for configuration files
//! and [`AnyMutex`] runs the one a configuration names.
//!
//! One core guards one resource; a driver that multiplexes several resources
//! over one connection routes messages by resource name itself.
//!
//! ## Common API
//! Commands: `request(now, out)` asks for the lock (a no-op while already
//! requesting or holding), `release(now, out)` gives it back (a no-op unless
//! holding). Events: [`MutexEvent::Granted`] with a *fencing token*, and
//! [`MutexEvent::Released`].
//!
//! ## Fencing tokens
//! Every core keeps the largest token it has seen and the cores piggyback it on
//! their messages (requests, replies, acks, grants, the token itself, the
//! state transfer during failover); a grant takes `max seen + 1` and stores it
//! durably. So with an accurate failure detector each grant's token is larger
//! than every earlier grant's. When the detector is wrong (a partition) two
//! nodes can believe they hold the lock; a resource that remembers the largest
//! token it accepted and refuses smaller or equal ones stays safe anyway. A
//! holder that crashes takes its token with it until it restarts (the token is
//! in its durable state), so the first grant after such a crash may be refused
//! by the resource once; every later grant that hears from the restarted node
//! is larger again.

pub mod any;
pub mod centralized;
pub mod lamport;
pub mod ricart_agrawala;
pub mod token_ring;

pub use any::{AnyMutex, AnyMutexMsg};
pub use centralized::Centralized;
pub use lamport::LamportMutex;
pub use ricart_agrawala::RicartAgrawala;
pub use token_ring::TokenRing;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::{DurableError, Outputs, Protocol, Recovered, SnapshotCore};

crate::algorithms! {
    /// The mutual-exclusion algorithms, by the names configuration files use.
    pub enum MutexAlgorithm {
        /// A coordinator (the highest live member) with a FIFO queue: [`Centralized`].
        Centralized = "centralized",
        /// Ricart and Agrawala's broadcast algorithm: [`RicartAgrawala`].
        RicartAgrawala = "ricart-agrawala",
        /// A token on a logical ring: [`TokenRing`].
        TokenRing = "token-ring",
        /// Lamport's replicated-queue algorithm: [`LamportMutex`].
        Lamport = "lamport",
    }
}

pub use crate::family::UnknownAlgorithm;

/// What a mutex core tells its local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MutexEvent {
    /// This node now holds the lock; present `fencing_token` to the resource.
    Granted {
        /// The resource's name.
        resource: String,
        /// Larger than every earlier grant's token (see the module docs).
        fencing_token: u64,
    },
    /// This node gave the lock back.
    Released {
        /// The resource's name.
        resource: String,
        /// The token of the grant that ended.
        fencing_token: u64,
    },
}

/// Settings shared by every mutex core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutexConfig {
    /// The resource's name (reported in events).
    pub resource: String,
    /// How often unanswered messages are sent again (requests, token
    /// regeneration rounds...). Lost messages are only recovered this way.
    pub retry: Duration,
    /// Token ring only: how long the lowest live member waits without seeing
    /// the token before regenerating it.
    pub token_timeout: Duration,
}

impl MutexConfig {
    /// Defaults for `resource`: retry every 250 ms, token timeout 1 s.
    pub fn new(resource: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            retry: Duration::from_millis(250),
            token_timeout: Duration::from_secs(1),
        }
    }
}

/// What every mutex core keeps on stable storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutexDurable {
    /// Lamport clock (Ricart–Agrawala, Lamport) so restarted requests stay ordered.
    pub clock: u64,
    /// Largest fencing token seen or granted.
    pub max_token: u64,
    /// Request sequence number (centralized) or largest token generation (token ring).
    pub seq: u64,
    /// Token ring: the largest hop count seen in generation `seq`.
    pub hop: u64,
}

/// The command side every mutex core offers (what an actor wrapper calls).
pub trait MutexCore: Protocol<Event = MutexEvent> {
    /// Ask for the lock. No-op while already requesting or holding.
    fn request(
        &mut self,
        now: Duration,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    );
    /// Give the lock back. No-op unless holding.
    fn release(
        &mut self,
        now: Duration,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    );
    /// The fencing token of the grant this node holds, if it holds the lock.
    fn holding(&self) -> Option<u64>;
    /// True while a request is outstanding (not yet granted).
    fn is_waiting(&self) -> bool;
    /// The order key of the outstanding or held request, when the algorithm
    /// defines one (`(Lamport time, _)`), for checking grant order.
    fn request_stamp(&self) -> Option<u64> {
        None
    }
    /// Token ring: the newest token generation this node knows of (`None`
    /// for algorithms without generations).
    fn epoch(&self) -> Option<u64> {
        None
    }
    /// Token ring: the generation of the token this node holds the lock with.
    fn held_epoch(&self) -> Option<u64> {
        None
    }
}

/// What a lock's handles watch: whether this node holds the lock (with the
/// grant's fencing token) or waits for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutexView {
    /// The fencing token of the grant this node holds.
    pub holding: Option<u64>,
    /// True while a request is outstanding.
    pub waiting: bool,
}

/// The mutual-exclusion family: one lock per resource, actor
/// `mutex.<resource>` on every member.
#[derive(Debug)]
pub enum MutexFamily {}

impl crate::family::Family for MutexFamily {
    type Algorithm = MutexAlgorithm;
    type Config = MutexConfig;
    type Core = AnyMutex<String>;
    type View = MutexView;

    fn actor_name(resource: &str) -> String {
        format!("mutex.{resource}")
    }
    fn build(
        algorithm: MutexAlgorithm,
        me: String,
        members: Vec<String>,
        config: &MutexConfig,
        recovered: &Recovered,
    ) -> Result<AnyMutex<String>, DurableError> {
        let state = AnyMutex::<String>::recover(recovered)?;
        Ok(AnyMutex::new(algorithm, me, members, config.clone(), state))
    }
    fn view(core: &AnyMutex<String>) -> MutexView {
        MutexView {
            holding: core.holding(),
            waiting: core.is_waiting(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for a in MutexAlgorithm::ALL {
            assert_eq!(a.name().parse::<MutexAlgorithm>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
            let bytes = rmp_serde::to_vec(&a).unwrap();
            let back: MutexAlgorithm = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, a);
        }
        assert!("paxos".parse::<MutexAlgorithm>().is_err());
    }
}
