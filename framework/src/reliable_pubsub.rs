//! Reliable pub/sub: topics whose messages reach each subscriber exactly
//! once and in publish order, built on the [receptionist](crate::receptionist)
//! for who subscribes and on [reliable channels](crate::reliable) for
//! delivery (the opt-in next to [`crate::pubsub`]'s at-most-once topics).
//!
//! A subscriber [`subscribe_reliable`]s an actor that accepts `M`: a
//! [`ReliableReceiver`] is started on its node for it (channel `ps-<hash of
//! topic and actor>`), and that receiver is registered under the key
//! `pubsub-reliable:<topic>`. A [`ReliablePublisher`] finds the receivers
//! through its node's receptionist at each [`ReliablePublisher::publish`],
//! opens one reliable channel (a [`ReliableSender`]) to each new one, closes
//! those of subscribers that went away, and sends the message through every
//! channel (waiting while a subscriber's window is full: back-pressure).
//!
//! # What is guaranteed
//!
//! - **Exactly once, in order, per publisher and subscriber**, for the
//!   messages published after the publisher's receptionist knew the
//!   subscriber and while both the publisher and the subscriber's receiver
//!   live: the reliable channel's guarantee (loss, duplication, reordering,
//!   connection loss and healed partitions repaired; see
//!   [`crate::reliable`], which also says what a crash of either end
//!   does: across a receiver restart, at least once, never a gap).
//! - **Who gets it**: the subscribers the publisher's receptionist knows at
//!   publish time (eventually consistent, [`crate::receptionist`]); a
//!   subscriber discovered later gets the messages published from then on,
//!   no replay of earlier ones.
//! - **No order across publishers** (each publisher is its own stream).
//! - A subscriber that cannot be reached when a channel is opened to it is
//!   counted as `failed` for that publish and tried again at the next.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use crate::ids::ActorPath;
use crate::pubsub::{Published, Topic};
use crate::receptionist::{DiscoveryError, Receptionist, ServiceKey};
use crate::reliable::wire::Open;
use crate::reliable::{receiver_name, ReliableError, ReliableReceiver, ReliableSender};
use crate::remote::RemoteMessage;

/// Why a reliable subscription or publication failed.
#[derive(Debug, thiserror::Error)]
pub enum ReliablePubSubError {
    /// The receptionist refused (bad topic, no such actor...).
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The reliable channel refused (the actor does not accept `M`...).
    #[error(transparent)]
    Reliable(#[from] ReliableError),
}

/// The receptionist key the receivers of reliable topic `topic` register under.
fn key_of(topic: &str) -> Result<ServiceKey<Open>, DiscoveryError> {
    ServiceKey::new(format!("pubsub-reliable:{topic}"))
        .map_err(|_| DiscoveryError::BadKey(topic.to_string()))
}

/// The channel that feeds `actor` from `topic`: short and made of channel
/// characters whatever the topic's name (`ps-` and 16 hex digits).
fn channel_of(topic: &str, actor: &str) -> String {
    // FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    topic.hash(&mut h);
    actor.hash(&mut h);
    format!("ps-{:016x}", h.finish())
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Subscribe the local actor `actor` (running, accepting `M`) to the
/// reliable topic `topic`: starts its receiver on this node and registers
/// it. Keep the returned receiver to stop the subscription
/// ([`ReliableReceiver::stop`]; the registration goes with it).
pub async fn subscribe_reliable<M: RemoteMessage>(
    receptionist: &Receptionist,
    topic: &Topic<M>,
    actor: &str,
) -> Result<ReliableReceiver, ReliablePubSubError> {
    let key = key_of(topic.name())?;
    let channel = channel_of(topic.name(), actor);
    let receiver = ReliableReceiver::start::<M>(receptionist.node(), &channel, actor).await?;
    receptionist.register(&key, &receiver_name(&channel))?;
    Ok(receiver)
}

/// Publishes to a reliable topic from one node (see the module docs). One
/// publisher is one stream: keep it for as long as the stream goes on.
pub struct ReliablePublisher<M: RemoteMessage> {
    receptionist: Receptionist,
    topic: Topic<M>,
    key: ServiceKey<Open>,
    channels: tokio::sync::Mutex<BTreeMap<ActorPath, ReliableSender<M>>>,
}

impl<M: RemoteMessage + Clone> ReliablePublisher<M> {
    /// A publisher to `topic` from the node of `receptionist`.
    pub fn new(receptionist: Receptionist, topic: Topic<M>) -> Result<Self, ReliablePubSubError> {
        let key = key_of(topic.name())?;
        Ok(Self {
            receptionist,
            topic,
            key,
            channels: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The receivers (one per subscriber) this node knows of now.
    pub fn subscribers(&self) -> BTreeSet<ActorPath> {
        self.receptionist.find_paths(&self.key)
    }

    /// Send `msg` to every subscriber this node knows of, through its
    /// reliable channel (opened at the first publish that sees it; waits
    /// while its window is full). `failed` counts the subscribers whose
    /// channel could not be opened or was closed.
    pub async fn publish(&self, msg: M) -> Published {
        let now = self.subscribers();
        let mut channels = self.channels.lock().await;
        // Subscribers gone: their senders close as they are dropped.
        channels.retain(|p, _| now.contains(p));
        let mut out = Published::default();
        let node = self.receptionist.node().clone();
        for p in &now {
            if channels.contains_key(p) {
                continue;
            }
            let Some(channel) = p.actor.strip_prefix("reliable.") else {
                out.failed += 1;
                continue;
            };
            match ReliableSender::<M>::connect(&node, &format!("{}/{channel}", p.node)).await {
                Ok(s) => {
                    channels.insert(p.clone(), s);
                }
                Err(e) => {
                    out.failed += 1;
                    tracing::debug!(topic = %self.topic.name(), to = %p, error = %e, "reliable pubsub: no channel yet");
                }
            }
        }
        for (p, s) in channels.iter() {
            match s.send(msg.clone()).await {
                Ok(_) => out.sent += 1,
                Err(e) => {
                    out.failed += 1;
                    tracing::debug!(topic = %self.topic.name(), to = %p, error = %e, "reliable pubsub: not sent");
                }
            }
        }
        out
    }

    /// Wait until every channel's messages are acknowledged.
    pub async fn flush(&self) -> Result<(), ReliableError> {
        for s in self.channels.lock().await.values() {
            s.flush().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_short_stable_and_distinct() {
        let a = channel_of("news", "s");
        assert_eq!(a, channel_of("news", "s"));
        assert_ne!(a, channel_of("news", "t"));
        assert_ne!(a, channel_of("new", "ss"));
        assert_eq!(a.len(), 19);
        assert!(crate::ids::validate_name(&a).is_ok());
        assert!(key_of("a/b:c").is_ok());
        assert!(key_of("bad topic").is_err());
    }
}
