//! The facade's error type: what can go wrong assembling a node.

use troupe_framework::NodeError;

/// Why a node could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid, or a file or address it names cannot
    /// be used (`[tls]` files, a `listen` port in use). The message starts
    /// with the key path (`peers[1].addr ...`); once located
    /// ([`crate::config::Config::locate`], as `Config::from_file` and
    /// `start_node` do) it reads `FILE:LINE: KEY...`.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("I/O error on {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The framework refused (bad name, stopped node...).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The QUIC transport could not start (a TLS setup rustls refuses...;
    /// unusable `[tls]` files and a port in use are [`Error::Config`]).
    #[error("transport: {0}")]
    Transport(String),
    /// The HTTP endpoint could not start (address in use...).
    #[error("HTTP endpoint: {0}")]
    Http(String),
    /// TLS files of an HTTPS client that cannot work (a key that is not
    /// the certificate's, a certificate from another CA...), named in the
    /// message ([`crate::http::tls::client_config`]).
    #[error("TLS: {0}")]
    Tls(String),
    /// A protocol reported a failure.
    #[error("protocol: {0}")]
    Protocol(String),
    /// An operation did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A protocol actor is not running.
    #[error(transparent)]
    Driver(#[from] troupe_protocols::driver::DriverError),
}
