//! The replicated state machine: what an application gives Raft, and the
//! client sessions Raft keeps beside it.
//!
//! An application supplies a [`StateMachine`]: a deterministic `apply` of
//! its commands, and serde for snapshots (the whole machine is the
//! snapshot). Every server applies the committed entries in log order, so
//! every server's machine goes through the same states (state-machine
//! safety).
//!
//! [`Replicated`] wraps the machine with the **client sessions** of the Raft
//! dissertation (section 6.3): a command proposed with a session
//! `(client, seq)` is applied at most once — a retried command whose `seq`
//! is the client's last applied one gets the reply it got the first time,
//! without being applied again; an older `seq` is refused (its reply is no
//! longer kept). Sessions are part of the replicated state: they are in
//! every snapshot, and their eviction (the least recently used beyond a
//! bound) is decided by the log, so every server evicts the same ones.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::log::Session;

/// An application's deterministic state machine.
pub trait StateMachine:
    Default + Clone + Debug + Serialize + DeserializeOwned + Send + 'static
{
    /// A command that changes the state.
    type Command: Serialize + DeserializeOwned + Clone + Debug + Send + 'static;
    /// What applying a command answers.
    type Reply: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + 'static;
    /// Apply `command`, the entry at log `index`. Must be deterministic: the
    /// same state, index and command give the same new state and reply.
    fn apply(&mut self, index: u64, command: Self::Command) -> Self::Reply;
}

/// Why a committed command produced no reply of the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// The entry's bytes do not decode as the machine's command (a client
    /// of another version); nothing was applied.
    #[error("the command does not decode: {0}")]
    Undecodable(String),
    /// The session's sequence number is older than its last applied one:
    /// the command may have been applied before, and its reply is not kept.
    #[error("client {client:?} sequence {seq} is older than its last applied {last}")]
    StaleSequence {
        /// The client.
        client: String,
        /// The sequence number asked for.
        seq: u64,
        /// The client's last applied sequence number.
        last: u64,
    },
}

/// What applying a committed command gave.
pub type Applied<R> = Result<R, CommandError>;

/// One client's session: its last applied command and that command's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SessionRecord<R> {
    seq: u64,
    reply: R,
    /// Log index of the last command applied for this client (for eviction).
    index: u64,
}

/// The machine with its client sessions (see the module docs): the state
/// every server replicates, and the content of every snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "S: StateMachine")]
pub struct Replicated<S: StateMachine> {
    machine: S,
    sessions: BTreeMap<String, SessionRecord<S::Reply>>,
    /// Sessions kept at most (the least recently used go first).
    max_sessions: usize,
}

impl<S: StateMachine> Replicated<S> {
    /// A fresh machine keeping at most `max_sessions` sessions.
    pub fn new(max_sessions: usize) -> Self {
        Self {
            machine: S::default(),
            sessions: BTreeMap::new(),
            max_sessions: max_sessions.max(1),
        }
    }

    /// The application's machine.
    pub fn machine(&self) -> &S {
        &self.machine
    }

    /// The number of client sessions kept.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Apply the command `bytes` at `index`, under `session` if any.
    pub fn apply(
        &mut self,
        index: u64,
        session: Option<&Session>,
        bytes: &[u8],
    ) -> Applied<S::Reply> {
        if let Some(s) = session {
            if let Some(rec) = self.sessions.get(&s.client) {
                if s.seq == rec.seq {
                    return Ok(rec.reply.clone());
                }
                if s.seq < rec.seq {
                    return Err(CommandError::StaleSequence {
                        client: s.client.clone(),
                        seq: s.seq,
                        last: rec.seq,
                    });
                }
            }
        }
        let command: S::Command =
            rmp_serde::from_slice(bytes).map_err(|e| CommandError::Undecodable(e.to_string()))?;
        let reply = self.machine.apply(index, command);
        if let Some(s) = session {
            self.sessions.insert(
                s.client.clone(),
                SessionRecord {
                    seq: s.seq,
                    reply: reply.clone(),
                    index,
                },
            );
            if self.sessions.len() > self.max_sessions {
                let oldest = self
                    .sessions
                    .iter()
                    .min_by_key(|(c, r)| (r.index, (*c).clone()))
                    .map(|(c, _)| c.clone());
                if let Some(c) = oldest {
                    self.sessions.remove(&c);
                }
            }
        }
        Ok(reply)
    }

    /// The snapshot of the whole replicated state.
    pub fn snapshot(&self) -> Vec<u8> {
        // A machine whose serde fails cannot be snapshotted; an empty
        // snapshot would lose state, so this is a programming error.
        rmp_serde::to_vec_named(self).expect("the state machine serializes")
    }

    /// The state a snapshot holds.
    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Sum(i64);

    impl StateMachine for Sum {
        type Command = i64;
        type Reply = i64;
        fn apply(&mut self, _index: u64, command: i64) -> i64 {
            self.0 += command;
            self.0
        }
    }

    fn cmd(n: i64) -> Vec<u8> {
        rmp_serde::to_vec(&n).unwrap()
    }

    fn session(client: &str, seq: u64) -> Session {
        Session {
            client: client.into(),
            seq,
        }
    }

    #[test]
    fn a_retried_command_applies_once_and_gets_its_first_reply() {
        let mut r = Replicated::<Sum>::new(10);
        assert_eq!(r.apply(1, Some(&session("a", 1)), &cmd(5)), Ok(5));
        assert_eq!(r.apply(2, Some(&session("a", 1)), &cmd(5)), Ok(5));
        assert_eq!(r.machine().0, 5);
        assert_eq!(r.apply(3, Some(&session("a", 2)), &cmd(1)), Ok(6));
        assert!(matches!(
            r.apply(4, Some(&session("a", 1)), &cmd(5)),
            Err(CommandError::StaleSequence { last: 2, .. })
        ));
        assert_eq!(r.apply(5, None, &cmd(1)), Ok(7));
        assert!(matches!(
            r.apply(6, None, b"\xc1"),
            Err(CommandError::Undecodable(_))
        ));
        assert_eq!(r.machine().0, 7);
    }

    #[test]
    fn sessions_survive_a_snapshot_and_the_oldest_is_evicted() {
        let mut r = Replicated::<Sum>::new(2);
        r.apply(1, Some(&session("a", 1)), &cmd(1)).unwrap();
        r.apply(2, Some(&session("b", 1)), &cmd(1)).unwrap();
        r.apply(3, Some(&session("c", 1)), &cmd(1)).unwrap();
        assert_eq!(r.sessions(), 2);
        let mut back = Replicated::<Sum>::restore(&r.snapshot()).unwrap();
        // "b" is still known: its retry is not applied again.
        assert_eq!(back.apply(4, Some(&session("b", 1)), &cmd(1)), Ok(2));
        // "a" was evicted: its retry applies again (the documented bound).
        assert_eq!(back.apply(5, Some(&session("a", 1)), &cmd(1)), Ok(4));
        assert!(Replicated::<Sum>::restore(b"junk").is_err());
    }
}
