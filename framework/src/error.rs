//! Errors of the framework crate, one enum per concern.
//!
//! Every error that crosses the API says what happened in words a user can
//! act on; none of them is produced by a panic.

use std::time::Duration;

use crate::codec::{CodecError, RemoteError};
use crate::ids::NameError;
use crate::transport::TransportError;

/// Why an `ask` did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No reply within the deadline. The request may or may not have run
    /// (at most once, thanks to deduplication): treat it as *unknown*.
    #[error("no reply within {0:?} (the request may or may not have been executed)")]
    Timeout(Duration),
    /// The request could not be handed to the network at all.
    #[error("target unreachable: {0}")]
    Unreachable(#[from] TransportError),
    /// The remote node answered with an error.
    #[error("remote error: {0}")]
    Remote(#[from] RemoteError),
    /// The message or the reply did not encode/decode.
    #[error("codec error: {0}")]
    Codec(#[from] CodecError),
    /// The local node is shutting down or gone.
    #[error("the local node is stopped")]
    NodeStopped,
}

/// Why a `tell` could not be sent. A successful `tell` is not a delivery
/// guarantee: it means the message was handed to the local actor or queued
/// for the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TellError {
    /// The network refused the frame (unknown peer, queue full, too large...).
    #[error("cannot send: {0}")]
    Transport(#[from] TransportError),
    /// The message did not encode.
    #[error("codec error: {0}")]
    Codec(#[from] CodecError),
    /// The local target does not exist or has no handler for this message.
    #[error("local delivery failed: {0}")]
    Local(#[from] RemoteError),
    /// The local target's mailbox is full: back-pressure, try later.
    #[error("the local actor's mailbox is full")]
    MailboxFull,
}

/// Why a node operation (spawning, configuring, starting) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// A name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An actor with this name is already registered on this node.
    #[error("an actor named {0:?} already exists on this node")]
    NameTaken(String),
    /// A supervisor already has a child with this name (names of a
    /// supervisor's children are unique, so that tree paths are).
    #[error("a child named {0:?} already exists under this supervisor")]
    ChildExists(String),
    /// No running supervisor at this path of the supervision tree (it is
    /// restarting, stopped, or was never started).
    #[error("no running supervisor at {0:?}")]
    NoSupervisor(String),
    /// The node is stopped.
    #[error("the node is stopped")]
    Stopped,
    /// The configuration is invalid; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}
