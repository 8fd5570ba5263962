//! rustls configurations for the QUIC transport.
//!
//! Secure mode (the default): TLS 1.3 only, the aws-lc-rs provider ([`provider`]), ALPN
//! [`ALPN`](super::ALPN), 0-RTT off (configs are built by hand, never with quinn's
//! convenience constructors that enable early data), the cluster CA as the only
//! trust root on both sides, and client certificates *required*
//! ([`WebPkiClientVerifier`] without anonymous clients). A dialing node sets the
//! TLS server name to the peer's node name, so rustls itself refuses a server whose
//! certificate does not name the node we meant to reach; after the handshake both
//! sides check the peer certificate again against the expected node name with
//! [`PeerNameChecker`] (for an accepted connection that name is the one the peer
//! claims in its hello).
//!
//! Dialing a *seed* (an address whose node name is not known yet): the
//! server certificate must chain to the cluster CA and be valid for the first
//! DNS name it carries ([`CaServerVerifier`], [`ServerNameRule::Own`]); which node answered is
//! learned from its hello, and [`PeerNameChecker`] then checks that the
//! certificate names exactly that node.
//!
//! Insecure dev mode: a throwaway self-signed certificate, no client
//! certificates, and a server verifier that accepts any certificate (it still checks
//! the handshake signature, so the connection is encrypted, just not
//! authenticated). Names then come only from the hello.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::QuicError;
use crate::certs::NodeTls;

/// The crypto provider of every config: aws-lc-rs
/// ([`rustls::crypto::aws_lc_rs::default_provider`], with the post-quantum
/// hybrid key exchange X25519MLKEM768 preferred), passed explicitly rather
/// than installed as the process default (two providers compiled in would
/// make rustls' `builder()` panic). It replaced
/// `rustls::crypto::ring::default_provider`, deprecated in rustls 0.23.48
/// because *ring* has no post-quantum algorithms.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The QUIC crypto configs of one node plus its name checker.
pub(crate) struct TlsSetup {
    pub server: Arc<QuicServerConfig>,
    pub client: Arc<QuicClientConfig>,
    /// For dialing seeds (see the module docs).
    pub seed_client: Arc<QuicClientConfig>,
    /// `None` in insecure dev mode.
    pub checker: Option<PeerNameChecker>,
}

fn tls_err(context: &str, e: impl std::fmt::Display) -> QuicError {
    QuicError::Tls(format!("{context}: {e}"))
}

/// Builds the secure (mutual TLS) configs from a node's TLS material.
pub(crate) fn secure(tls: &NodeTls, alpn: &[u8]) -> Result<TlsSetup, QuicError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for ca in std::iter::once(&tls.ca).chain(&tls.also_trusted) {
        roots
            .add(ca.clone())
            .map_err(|e| tls_err("cluster CA certificate rejected", e))?;
    }
    let roots = Arc::new(roots);

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| tls_err("building the client-certificate verifier", e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("TLS 1.3 server config", e))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| tls_err("node certificate/key rejected", e))?;
    server.alpn_protocols = vec![alpn.to_vec()];
    server.max_early_data_size = 0;

    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| tls_err("building the server-certificate verifier", e))?;
    let client_with = |verifier: Arc<dyn ServerCertVerifier>| {
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("TLS 1.3 client config", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
            .map_err(|e| tls_err("node certificate/key rejected for client auth", e))?;
        client.alpn_protocols = vec![alpn.to_vec()];
        client.enable_early_data = false;
        QuicClientConfig::try_from(client).map_err(|e| tls_err("QUIC client config", e))
    };
    let client = client_with(server_verifier.clone())?;
    let seed_client = client_with(Arc::new(CaServerVerifier::new(
        server_verifier.clone(),
        ServerNameRule::Own,
    )))?;

    Ok(TlsSetup {
        server: Arc::new(
            QuicServerConfig::try_from(server).map_err(|e| tls_err("QUIC server config", e))?,
        ),
        client: Arc::new(client),
        seed_client: Arc::new(seed_client),
        checker: Some(PeerNameChecker {
            verifier: server_verifier,
        }),
    })
}

/// Builds the insecure dev-mode configs: a throwaway self-signed certificate for
/// `node` (unless `tls` is given), no client authentication, any server accepted.
pub(crate) fn insecure(
    node: &str,
    tls: Option<&NodeTls>,
    alpn: &[u8],
) -> Result<TlsSetup, QuicError> {
    let provider = provider();
    let (chain, key) = match tls {
        Some(t) => (t.chain.clone(), t.key.clone_key()),
        None => {
            let self_signed = rcgen::generate_simple_self_signed(vec![node.to_string()])
                .map_err(|e| tls_err("self-signed certificate", e))?;
            let key =
                rustls_pki_types::PrivateKeyDer::Pkcs8(self_signed.key_pair.serialize_der().into());
            (vec![self_signed.cert.der().clone()], key)
        }
    };
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("TLS 1.3 server config", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("self-signed certificate rejected", e))?;
    server.alpn_protocols = vec![alpn.to_vec()];
    server.max_early_data_size = 0;

    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("TLS 1.3 client config", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
        .with_no_client_auth();
    client.alpn_protocols = vec![alpn.to_vec()];
    client.enable_early_data = false;
    let client =
        Arc::new(QuicClientConfig::try_from(client).map_err(|e| tls_err("QUIC client config", e))?);
    Ok(TlsSetup {
        server: Arc::new(
            QuicServerConfig::try_from(server).map_err(|e| tls_err("QUIC server config", e))?,
        ),
        seed_client: client.clone(),
        client,
        checker: None,
    })
}

/// Checks that a peer's certificate chain is valid under the cluster CA *and*
/// names a given node (SAN DNS name), whichever side of the handshake it came from.
///
/// Node certificates carry both serverAuth and clientAuth usages, so the webpki
/// server-certificate check (chain + validity + name) applies to a client's
/// certificate too.
#[derive(Clone)]
pub(crate) struct PeerNameChecker {
    verifier: Arc<WebPkiServerVerifier>,
}

impl PeerNameChecker {
    /// `Ok(())` iff `conn`'s peer certificate is valid for node `expected`.
    pub fn check(&self, conn: &quinn::Connection, expected: &str) -> Result<(), String> {
        let identity = conn
            .peer_identity()
            .ok_or_else(|| "peer presented no certificate".to_string())?;
        let chain = identity
            .downcast::<Vec<CertificateDer<'static>>>()
            .map_err(|_| "peer identity is not a certificate chain".to_string())?;
        self.check_chain(&chain, expected)
    }

    /// `Ok(())` iff `chain` (leaf first) is valid under the cluster CA for node
    /// `expected`.
    pub fn check_chain(
        &self,
        chain: &[CertificateDer<'static>],
        expected: &str,
    ) -> Result<(), String> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| "peer presented an empty certificate chain".to_string())?;
        let name = ServerName::try_from(expected.to_string())
            .map_err(|e| format!("{expected:?} is not a valid node name: {e}"))?;
        self.verifier
            .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
            .map_err(|e| format!("certificate does not prove identity {expected:?}: {e}"))?;
        // TLS compares DNS names without case, node names are compared
        // exactly: without this, node-a's certificate would also pass for a
        // node named NODE-A. Checked after the full verification above, as a
        // stricter policy on top of it (which also refuses wildcard names).
        let cert = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("peer certificate does not parse: {e}"))?;
        let named: Vec<&str> = cert.valid_dns_names().collect();
        if named.contains(&expected) {
            Ok(())
        } else {
            Err(format!(
                "certificate names {named:?}, not exactly {expected:?} (node names are case-sensitive)"
            ))
        }
    }
}

/// Checks that `tls` can be node `node`'s identity in secure mode: the key
/// belongs to the certificate, and the certificate chains to the cluster CA
/// and names `node`. Without this, such a mistake shows up only as refused
/// connections in the peers' logs.
pub(crate) fn check_identity(tls: &NodeTls, node: &str) -> Result<(), String> {
    let setup = secure(tls, super::ALPN).map_err(|e| match e {
        QuicError::Tls(m) => m,
        other => other.to_string(),
    })?;
    let checker = setup
        .checker
        .ok_or_else(|| "no certificate checker in secure mode".to_string())?;
    checker.check_chain(&tls.chain, node)
}

/// `Ok(())` if `tls.key` is the key of the leaf certificate of `tls.chain`
/// (or rustls cannot tell), else the error rustls would give at setup.
pub(crate) fn keys_match(tls: &NodeTls) -> Result<(), rustls::Error> {
    rustls::sign::CertifiedKey::from_der(tls.chain.clone(), tls.key.clone_key(), &provider())
        .map(|_| ())
}

/// Which name a server's certificate must carry, besides chaining to the
/// cluster CA ([`CaServerVerifier`]).
#[derive(Debug, Clone)]
pub enum ServerNameRule {
    /// Exactly this one.
    Exact(ServerName<'static>),
    /// The name dialed when it is a DNS name; when it is an IP address, the
    /// certificate's own first DNS name (any certificate of the CA).
    DialedOrOwn,
    /// The certificate's own first DNS name, whatever was dialed (a seed,
    /// whose node name is learned from its hello and checked then by the
    /// transport against the certificate).
    Own,
}

/// A server-certificate verifier: the chain must lead to the cluster CA and
/// the certificate be valid for the name its [`ServerNameRule`] picks. Used
/// for dialing seeds and by the HTTPS clients of a node's endpoint.
#[derive(Debug)]
pub struct CaServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    rule: ServerNameRule,
}

impl CaServerVerifier {
    /// `inner` (a WebPKI verifier over the cluster CA) with `rule`.
    pub fn new(inner: Arc<WebPkiServerVerifier>, rule: ServerNameRule) -> Self {
        Self { inner, rule }
    }
}

impl ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match (&self.rule, server_name) {
            (ServerNameRule::Exact(expected), _) => expected.clone(),
            (ServerNameRule::DialedOrOwn, ServerName::DnsName(_)) => server_name.to_owned(),
            _ => {
                let cert = webpki::EndEntityCert::try_from(end_entity)
                    .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
                let name = cert.valid_dns_names().next().ok_or_else(|| {
                    rustls::Error::General("the server's certificate names no node".into())
                })?;
                ServerName::try_from(name.to_string())
                    .map_err(|e| rustls::Error::General(format!("server certificate name: {e}")))?
            }
        };
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Insecure dev mode only: accepts any server certificate (the handshake
/// signature is still verified, so the session is encrypted, not authenticated).
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
