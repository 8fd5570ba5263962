//! Troupe transports: QUIC (quinn + rustls, mutual TLS) and cluster certificates.
pub mod certs;
pub mod quic;
