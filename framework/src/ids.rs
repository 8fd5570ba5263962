//! Names of things: nodes ([`NodeId`]) and actors on nodes ([`ActorPath`]).
//!
//! A node is addressed by its *name* (stable across restarts, what configs and
//! certificates use); a [`NodeId`] adds an *incarnation* so that a restarted
//! node is told apart from its previous life. An actor is addressed by
//! `node/actor-name`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A node: its stable name plus the incarnation of this run.
///
/// Ordered by `(name, incarnation)`, so protocols that pick "the highest id"
/// rank nodes by name first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's stable name (also the subject name in its certificate).
    pub name: String,
    /// Fresh for every start of the node process.
    pub incarnation: Uuid,
}

impl NodeId {
    /// A node id with a fresh random incarnation (a real process start).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            incarnation: Uuid::new_v4(),
        }
    }
    /// A node id with a chosen incarnation (simulations pick it from their seed).
    pub fn with_incarnation(name: impl Into<String>, incarnation: u128) -> Self {
        Self {
            name: name.into(),
            incarnation: Uuid::from_u128(incarnation),
        }
    }
    /// True if `other` is the same node name (possibly another incarnation).
    pub fn same_node(&self, other: &NodeId) -> bool {
        self.name == other.name
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inc = self.incarnation.simple().to_string();
        write!(f, "{}#{}", self.name, &inc[..8])
    }
}

/// Error parsing an [`ActorPath`] or a node or actor name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The text is not of the form `node/actor`.
    #[error("actor path {0:?} is not of the form \"node/actor\"")]
    NotAPath(String),
    /// A name is empty, too long, or has a character outside `[A-Za-z0-9._-]`.
    #[error("name {0:?} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'")]
    BadName(String),
}

/// Check a node or actor name: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NameError::BadName(name.to_string()))
    }
}

/// Where a named actor lives: `node/actor`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorPath {
    /// The node's name.
    pub node: String,
    /// The actor's name on that node.
    pub actor: String,
}

impl ActorPath {
    /// Build a path from a node name and an actor name, checking both.
    pub fn new(node: impl Into<String>, actor: impl Into<String>) -> Result<Self, NameError> {
        let (node, actor) = (node.into(), actor.into());
        validate_name(&node)?;
        validate_name(&actor)?;
        Ok(Self { node, actor })
    }
}

impl fmt::Display for ActorPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.actor)
    }
}

impl FromStr for ActorPath {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (node, actor) = s
            .split_once('/')
            .ok_or_else(|| NameError::NotAPath(s.to_string()))?;
        ActorPath::new(node, actor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_paths() {
        let p: ActorPath = "node-a/ledger".parse().unwrap();
        assert_eq!(p.node, "node-a");
        assert_eq!(p.actor, "ledger");
        assert_eq!(p.to_string(), "node-a/ledger");
    }

    #[test]
    fn rejects_bad_paths() {
        assert!("nodeonly".parse::<ActorPath>().is_err());
        assert!("a/b/c".parse::<ActorPath>().is_err());
        assert!("/x".parse::<ActorPath>().is_err());
        assert!("a/".parse::<ActorPath>().is_err());
        assert!("a b/x".parse::<ActorPath>().is_err());
    }

    #[test]
    fn node_ids_order_by_name_first() {
        let a = NodeId::with_incarnation("a", 9);
        let b = NodeId::with_incarnation("b", 1);
        assert!(a < b);
        assert!(a.same_node(&NodeId::with_incarnation("a", 2)));
        assert_ne!(a, NodeId::with_incarnation("a", 2));
    }
}
