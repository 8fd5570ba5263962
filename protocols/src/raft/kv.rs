//! A key-value state machine for Raft: strings to strings, with revisions
//! and compare-and-set.
//!
//! Every change records the index of the log entry that made it as the
//! key's *revision*, so revisions grow with the log and two replicas that
//! applied the same entries hold the same revisions. A read names the
//! revision of the value it returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::machine::StateMachine;

/// A change to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Set `key` to `value` if its current value is `expected` (`None`:
    /// the key is absent).
    Cas {
        /// The key.
        key: String,
        /// The value it must have.
        expected: Option<String>,
        /// The new value.
        value: String,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// What a change answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// Done; the key's new revision (for a delete: the deleting entry's).
    Done {
        /// The revision.
        revision: u64,
    },
    /// A compare-and-set found another value (`None`: absent); nothing
    /// changed.
    Mismatch {
        /// The current value.
        current: Option<String>,
    },
}

/// A value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value.
    pub value: String,
    /// The index of the entry that wrote it.
    pub revision: u64,
}

/// The key-value store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    entries: BTreeMap<String, Versioned>,
}

impl KvStore {
    /// The value of `key` and its revision.
    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.entries.get(key)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl KvStore {
    /// Set `key` to `value` by the entry at `index`.
    fn set(&mut self, index: u64, key: String, value: String) -> KvReply {
        let revision = index;
        self.entries.insert(key, Versioned { value, revision });
        KvReply::Done { revision }
    }
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Reply = KvReply;

    fn apply(&mut self, index: u64, command: KvCommand) -> KvReply {
        match command {
            KvCommand::Put { key, value } => self.set(index, key, value),
            KvCommand::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.entries.get(&key).map(|v| v.value.clone());
                if current != expected {
                    return KvReply::Mismatch { current };
                }
                self.set(index, key, value)
            }
            KvCommand::Delete { key } => {
                self.entries.remove(&key);
                KvReply::Done { revision: index }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_cas_delete() {
        let mut kv = KvStore::default();
        let put = |k: &str, v: &str| KvCommand::Put {
            key: k.into(),
            value: v.into(),
        };
        assert_eq!(kv.apply(1, put("a", "1")), KvReply::Done { revision: 1 });
        let cas = |e: Option<&str>, v: &str| KvCommand::Cas {
            key: "a".into(),
            expected: e.map(String::from),
            value: v.into(),
        };
        assert_eq!(
            kv.apply(2, cas(None, "2")),
            KvReply::Mismatch {
                current: Some("1".into())
            }
        );
        assert_eq!(
            kv.apply(3, cas(Some("1"), "2")),
            KvReply::Done { revision: 3 }
        );
        assert_eq!(kv.get("a").map(|v| v.value.as_str()), Some("2"));
        kv.apply(4, KvCommand::Delete { key: "a".into() });
        assert!(kv.get("a").is_none() && kv.is_empty());
        assert_eq!(kv.apply(5, cas(None, "x")), KvReply::Done { revision: 5 });
    }
}
