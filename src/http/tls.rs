//! TLS of the HTTP endpoint with `[http] client_certs = true`: the server's
//! rustls config, and one for its clients (the `troupe` CLI uses it).
//!
//! Server ([`server_config`]): the node's own certificate chain and key
//! (its `[tls] cert` and `key`, the identity it shows its QUIC peers), and
//! client certificates *required*: a client must present a certificate
//! that chains to the cluster CA (every certificate of `[tls] ca`), with
//! the clientAuth usage and valid now ([`WebPkiClientVerifier`] without
//! anonymous clients), or the handshake fails before any HTTP is read.
//! TLS 1.3 and 1.2, the aws-lc-rs provider of the QUIC transport
//! ([`troupe_transports::quic::crypto_provider`]), no early data; actix-web
//! adds the ALPN protocol `http/1.1` (a client offering only `h2` is
//! refused).
//!
//! Client ([`client_config`]): trusts the cluster CA only, presents a
//! certificate of that CA (a node's, or one issued for an operator with
//! `troupe certs issue --node NAME`), offers ALPN `http/1.1`. The server's
//! certificate must chain to the CA and name the node expected: the
//! `server_name` given, else the URL's host when it is a DNS name. Node
//! certificates name the node, not its IP addresses, so for a URL with an
//! IP address and no `server_name`, any certificate of the cluster CA is
//! taken (its first DNS name is checked as the name); pass the node's name
//! to pin it.
//!
//! With TLS 1.3 a client's handshake completes before the server has
//! checked the client's certificate: a refusal shows up as a TLS alert on
//! the client's first read, not at connect time.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use troupe_transports::certs::{load_cert_chain, load_private_key, NodeTls};
use troupe_transports::quic::{crypto_provider, CaServerVerifier, ServerNameRule};

use crate::Error;

/// The ALPN protocol the endpoint speaks over TLS.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The TLS versions of the endpoint and its clients: 1.3, and 1.2 for
/// older clients (rustls offers only forward-secret AEAD suites in 1.2).
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn roots(cas: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca.clone())
            .map_err(|e| format!("the CA certificate is not usable as a trust root: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// The rustls server config of an endpoint with `[http] client_certs`:
/// `tls`'s chain and key, clients required to present a certificate of
/// `tls`'s CA (see the module docs). An error says what rustls refused.
pub fn server_config(tls: &NodeTls) -> Result<rustls::ServerConfig, String> {
    let provider = crypto_provider();
    let cas: Vec<_> = std::iter::once(&tls.ca)
        .chain(&tls.also_trusted)
        .cloned()
        .collect();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&cas)?, provider.clone())
        .build()
        .map_err(|e| format!("building the client-certificate verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| format!("the node's certificate and key: {e}"))?;
    config.max_early_data_size = 0;
    // actix-web puts `http/1.1` first on its own (`bind_rustls_0_23`).
    config.alpn_protocols = Vec::new();
    Ok(config)
}

/// The files a client of an endpoint with `[http] client_certs` needs:
/// PEM files of the cluster CA, of the client's certificate (issued by
/// that CA) and of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The cluster CA certificate(s): the server's certificate must chain
    /// to one of them.
    pub ca: PathBuf,
    /// The client's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The client's private key.
    pub key: PathBuf,
}

/// A rustls client config for an endpoint with `[http] client_certs`: it
/// trusts the CA of `files` only, presents `files`' certificate and
/// checks the server's certificate for `server_name` (see the module docs
/// for what is checked without one).
///
/// The files are checked first, so that a mistake is named here rather
/// than as a refused handshake: each must be readable PEM of its kind, the
/// key must be the certificate's, and the certificate must chain to the CA
/// with the clientAuth usage and be valid now. Errors ([`Error::Tls`])
/// name the file.
pub fn client_config(
    files: &ClientTlsFiles,
    server_name: Option<&str>,
) -> Result<rustls::ClientConfig, Error> {
    let tls_err = |m: String| Error::Tls(m);
    let provider = crypto_provider();
    let cas = load_cert_chain(&files.ca).map_err(|e| tls_err(format!("CA file: {e}")))?;
    let chain =
        load_cert_chain(&files.cert).map_err(|e| tls_err(format!("certificate file: {e}")))?;
    let key = load_private_key(&files.key).map_err(|e| tls_err(format!("key file: {e}")))?;
    let roots = roots(&cas).map_err(|e| tls_err(format!("{}: {e}", files.ca.display())))?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
        |e| {
            tls_err(format!(
                "{} is not the key of the certificate {}: {e}",
                files.key.display(),
                files.cert.display()
            ))
        },
    )?;
    check_client_cert(&chain, &roots, &provider).map_err(|e| {
        tls_err(format!(
            "{} is not a client certificate of the CA in {}: {e}",
            files.cert.display(),
            files.ca.display()
        ))
    })?;
    let expected = match server_name {
        Some(name) => Some(
            ServerName::try_from(name.to_string())
                .map_err(|e| tls_err(format!("server name {name:?}: {e}")))?,
        ),
        None => None,
    };
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| tls_err(format!("building the server-certificate verifier: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| tls_err(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaServerVerifier::new(
            inner,
            // The name given, else the URL's DNS name, else (an IP
            // address) the certificate's own first DNS name.
            match expected {
                Some(name) => ServerNameRule::Exact(name),
                None => ServerNameRule::DialedOrOwn,
            },
        )))
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls_err(format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// `Ok` if `chain` (leaf first) is a client certificate under `roots` now.
fn check_client_cert(
    chain: &[CertificateDer<'static>],
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<(), String> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| "no certificate".to_string())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(e) => describe(&e),
            other => other.to_string(),
        })
}

/// What is wrong with a certificate, in words (rustls says `UnknownIssuer`).
pub fn describe(e: &rustls::CertificateError) -> String {
    match e {
        rustls::CertificateError::UnknownIssuer => {
            "UnknownIssuer: it is not signed by that CA".to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use troupe_transports::certs::ClusterCa;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn client_files_are_checked_and_named() {
        let dir = std::env::temp_dir().join(format!("troupe-http-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = ClusterCa::generate().expect("ca");
        let other = ClusterCa::generate().expect("other ca");
        let ca_pem = write(&dir, "ca.pem", &ca.cert_pem());
        let (cert, key) = ca.issue_pem("ops").expect("issue");
        let (other_cert, other_key) = other.issue_pem("ops").expect("issue");
        let files = ClientTlsFiles {
            ca: ca_pem.clone(),
            cert: write(&dir, "ops.pem", &cert),
            key: write(&dir, "ops.key", &key),
        };
        client_config(&files, None).expect("good files");
        client_config(&files, Some("node-a")).expect("good files, pinned name");

        let refused = |files: &ClientTlsFiles, words: &[&str]| {
            let err = client_config(files, None).expect_err("refused").to_string();
            for w in words {
                assert!(err.contains(w), "{w:?} missing from: {err}");
            }
        };
        let foreign = ClientTlsFiles {
            cert: write(&dir, "foreign.pem", &other_cert),
            key: write(&dir, "foreign.key", &other_key),
            ..files.clone()
        };
        refused(
            &foreign,
            &["foreign.pem", "not a client certificate", "ca.pem"],
        );
        let mismatched = ClientTlsFiles {
            key: foreign.key.clone(),
            ..files.clone()
        };
        refused(
            &mismatched,
            &["foreign.key", "is not the key of", "ops.pem"],
        );
        let missing = ClientTlsFiles {
            key: dir.join("nowhere.key"),
            ..files.clone()
        };
        refused(&missing, &["key file", "nowhere.key"]);
        let swapped = ClientTlsFiles {
            key: files.cert.clone(),
            ..files.clone()
        };
        refused(&swapped, &["key file", "ops.pem", "PRIVATE KEY"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
