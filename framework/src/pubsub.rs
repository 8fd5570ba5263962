//! Cluster pub/sub on named topics, built on the [receptionist](crate::receptionist).
//!
//! A [`Topic<M>`] is a receptionist [`ServiceKey<M>`] with the id
//! `pubsub:<name>`. Subscribing registers an actor (which accepts `M`) under
//! that key on its own node; publishing looks the key up in the publishing
//! node's receptionist and tells `M` to every subscriber found, local ones
//! included. There is no broker and no extra actor.
//!
//! # What is guaranteed
//!
//! - **At most once**: each subscriber gets each published message once or
//!   not at all (a plain tell: lost with a lost frame, a crashed node or a
//!   subscriber that stopped; never retried, never duplicated by pub/sub).
//! - **Who gets it**: the subscribers the publisher's receptionist knows when
//!   [`PubSub::publish`] runs. A subscription made on another node is seen
//!   after its push arrives (see [`crate::receptionist`]: eventually
//!   consistent; during a partition, the publisher's side only once the
//!   detector declares the other side `Down`, and before that messages to
//!   the other side are lost).
//! - **Order**: none across publishers. From one publisher to one
//!   subscriber, messages arrive in publish order on QUIC and locally:
//!   the QUIC transport delivers a sender's ordinary frames to a peer in
//!   send order or not at all (frames in flight when a connection breaks
//!   may be lost, leaving a gap, never a reordering), the node's inbound
//!   dispatcher keeps arrival order per actor, and a local tell is an actix
//!   `do_send`. That is FIFO with possible gaps, not reliable FIFO. On the
//!   simulated network with reordering faults there is no order at all.
//!   A message that must get through needs a reliable topic
//!   ([`crate::reliable_pubsub`]: exactly once and in order per publisher
//!   and subscriber, over [`crate::reliable`] channels), not this.

use crate::receptionist::{DiscoveryError, Receptionist, ServiceKey};
use crate::remote::RemoteMessage;
use crate::remote_ref::RemoteRef;

/// A named topic whose messages are `M`.
pub struct Topic<M> {
    name: String,
    key: ServiceKey<M>,
}

impl<M> Clone for Topic<M> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            key: self.key.clone(),
        }
    }
}

impl<M: RemoteMessage> std::fmt::Debug for Topic<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Topic({:?}: {})", self.name, M::NAME)
    }
}

impl<M: RemoteMessage> Topic<M> {
    /// The topic `name` (1-121 characters of `[A-Za-z0-9._:/-]`).
    pub fn new(name: impl Into<String>) -> Result<Self, DiscoveryError> {
        let name = name.into();
        let key = ServiceKey::new(format!("pubsub:{name}"))
            .map_err(|_| DiscoveryError::BadKey(name.clone()))?;
        Ok(Self { name, key })
    }
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The receptionist key its subscribers are registered under.
    pub fn key(&self) -> &ServiceKey<M> {
        &self.key
    }
}

/// What one [`PubSub::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    /// Subscribers the message was handed to the transport (or, locally,
    /// the mailbox) for.
    pub sent: usize,
    /// Subscribers it could not be sent to (node down, queue full,
    /// local actor gone): lost, as at-most-once allows.
    pub failed: usize,
}

/// Pub/sub over a node's receptionist. Cheap to clone.
#[derive(Clone)]
pub struct PubSub {
    receptionist: Receptionist,
}

impl PubSub {
    /// Pub/sub through `receptionist` (started on every node that takes part).
    pub fn new(receptionist: Receptionist) -> Self {
        Self { receptionist }
    }

    /// Subscribe the local actor `actor` (it must accept `M`) to `topic`.
    /// It stays subscribed until it ends or unsubscribes.
    pub fn subscribe<M: RemoteMessage>(
        &self,
        topic: &Topic<M>,
        actor: &str,
    ) -> Result<(), DiscoveryError> {
        self.receptionist.register(&topic.key, actor)
    }

    /// Unsubscribe the local actor `actor`; false if it was not subscribed.
    pub fn unsubscribe<M: RemoteMessage>(
        &self,
        topic: &Topic<M>,
        actor: &str,
    ) -> Result<bool, DiscoveryError> {
        self.receptionist.unregister(&topic.key, actor)
    }

    /// The subscribers this node knows of now.
    pub fn subscribers<M: RemoteMessage>(&self, topic: &Topic<M>) -> Vec<RemoteRef<M>> {
        self.receptionist.find(&topic.key)
    }

    /// Tell `msg` to every subscriber of `topic` this node knows of, at
    /// most once each (see the module docs).
    pub fn publish<M: RemoteMessage + Clone>(&self, topic: &Topic<M>, msg: M) -> Published {
        let mut out = Published::default();
        for sub in self.subscribers(topic) {
            match sub.tell(msg.clone()) {
                Ok(()) => out.sent += 1,
                Err(e) => {
                    out.failed += 1;
                    tracing::debug!(topic = %topic.name, to = %sub.path(), error = %e, "pubsub: not sent");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct News(u32);
    crate::remote_message!(News, "test.news", ());

    #[test]
    fn topics_map_to_typed_keys() {
        let t = Topic::<News>::new("weather").unwrap();
        assert_eq!(t.key().id(), "pubsub:weather");
        assert_eq!(t.key().wire().msg, "test.news");
        assert!(matches!(
            Topic::<News>::new("bad topic"),
            Err(DiscoveryError::BadKey(n)) if n == "bad topic"
        ));
        assert!(Topic::<News>::new("x".repeat(121)).is_ok());
        assert!(Topic::<News>::new("x".repeat(122)).is_err());
    }
}
