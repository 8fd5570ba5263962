//! Cluster certificates for the QUIC transport: a cluster CA and node certificates.
//!
//! Every node of a cluster trusts one certificate authority (the *cluster CA*) and
//! holds a certificate signed by it whose subject alternative name (a DNS name) is
//! the node's name. The QUIC transport uses them for mutual TLS: a peer is accepted
//! only if its certificate chains to the cluster CA *and* names the node it claims to
//! be. Node certificates carry both the `serverAuth` and `clientAuth` extended key
//! usages because every node both dials and accepts.
//!
//! On disk (made with rcgen, ECDSA P-256):
//! - [`init`]`(dir)` writes `ca.pem` (the CA certificate) and `ca.key` (its private key);
//! - [`issue`]`(dir, node)` writes `NODE.pem` (certificate) and `NODE.key` (key),
//!   signed by the CA found in `dir`.
//!
//! Private keys are written with permissions `0600` on unix. Existing files are
//! never overwritten: [`init`] and [`issue`] fail with [`CertError::AlreadyExists`].
//!
//! In memory (tests, demos): [`ClusterCa::generate`] makes a throwaway CA and
//! [`ClusterCa::issue`] node identities ([`NodeTls`]) ready for the transport.
//!
//! Loading: [`load_node_tls`] reads the three PEM files a node needs into rustls
//! types with errors that name the file and what was wrong with it.
//!
//! Re-opening a CA from disk: rcgen (without its x509 parser) cannot parse a
//! certificate, so [`ClusterCa::load`] rebuilds the issuer from the stored key: the
//! CA's distinguished name is [`CA_COMMON_NAME`] plus a unit derived from the key,
//! and the key is first checked to belong to `ca.pem`. Node certificates it issues
//! therefore chain to the original `ca.pem`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Common name of every Troupe cluster CA (its unit is derived from the CA key).
pub const CA_COMMON_NAME: &str = "Troupe cluster CA";
/// File name of the CA certificate inside a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Why a certificate could not be made, written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file that would be written already exists.
    #[error("{0} already exists; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// A PEM file is missing, empty or holds the wrong kind of object.
    #[error("{path}: {what}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// The node name cannot be a certificate DNS name.
    #[error(
        "invalid node name {0:?}: a node name must be a certificate DNS name: labels of 1-63 \
         letters, digits, '-' or '_' separated by '.', no label starting or ending with '-', \
         and a last label that is not all digits (not an IP address)"
    )]
    InvalidNodeName(String),
    /// The CA key does not belong to the CA certificate.
    #[error("CA key {key} does not match CA certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rcgen failed to generate or sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A node's TLS material, ready for the transport: the cluster CA it trusts, its
/// certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct NodeTls {
    /// The cluster CA certificate (the only trust root).
    pub ca: CertificateDer<'static>,
    /// This node's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeTls {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Checks that `node` can be a certificate DNS name (and so a TLS server name).
pub fn validate_node_name(node: &str) -> Result<(), CertError> {
    let ok = !node.is_empty()
        && node.parse::<std::net::IpAddr>().is_err()
        && matches!(ServerName::try_from(node), Ok(ServerName::DnsName(_)));
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidNodeName(node.to_string()))
    }
}

/// The CA's distinguished name: [`CA_COMMON_NAME`] plus an organizational unit
/// derived from the CA key (its key identifier in hex), so two clusters' CAs never
/// share a name (a foreign certificate is then reported as from an *unknown
/// issuer*), and the name can be rebuilt from the key alone.
fn ca_params(key: &KeyPair) -> Result<CertificateParams, CertError> {
    let mut probe = CertificateParams::default();
    probe.distinguished_name = DistinguishedName::new();
    let key_id = probe.self_signed(key)?.key_identifier();
    let unit: String = key_id.iter().map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationalUnitName, unit);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A cluster certificate authority held in memory.
pub struct ClusterCa {
    cert: rcgen::Certificate,
    /// The certificate as originally issued (differs from `cert.der()` after `load`).
    der: CertificateDer<'static>,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a fresh CA (ECDSA P-256 key, self-signed).
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let cert = ca_params(&key)?.self_signed(&key)?;
        let der = cert.der().clone();
        Ok(Self { cert, der, key })
    }

    /// Opens the CA stored in `dir` (`ca.pem`, `ca.key`).
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let der = load_cert_chain(&cert_path)?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::BadPem {
                path: cert_path.clone(),
                what: "no certificate".into(),
            })?;
        let key_pem = read_to_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::BadPem {
            path: key_path.clone(),
            what: format!("not a usable private key: {e}"),
        })?;
        // The certificate's SubjectPublicKeyInfo must contain the key's public key.
        let public = key.public_key_raw();
        if public.is_empty()
            || !der
                .as_ref()
                .windows(public.len())
                .any(|window| window == public)
        {
            return Err(CertError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let cert = ca_params(&key)?.self_signed(&key)?;
        Ok(Self { cert, der, key })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", self.der.as_ref())
    }

    /// The CA private key (PKCS#8 PEM). Keep it secret.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate for `node` (SAN = DNS name `node`, serverAuth+clientAuth),
    /// returning the node's TLS material.
    pub fn issue(&self, node: &str) -> Result<NodeTls, CertError> {
        let (cert_pem, key_pem) = self.issue_pem(node)?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::BadPem {
                path: PathBuf::from("<generated>"),
                what: e.to_string(),
            })?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::BadPem {
                path: PathBuf::from("<generated>"),
                what: e.to_string(),
            })?;
        Ok(NodeTls {
            ca: self.cert_der(),
            chain,
            key,
        })
    }

    /// Issues a certificate for `node` and returns `(certificate PEM, key PEM)`.
    pub fn issue_pem(&self, node: &str) -> Result<(String, String), CertError> {
        validate_node_name(node)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(
            node.to_string()
                .try_into()
                .map_err(|_| CertError::InvalidNodeName(node.to_string()))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Creates a cluster CA in `dir` (created if missing): `ca.pem` and `ca.key` (0600).
pub fn init(dir: &Path) -> Result<ClusterCa, CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        action: "creating directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CertError::AlreadyExists(p.clone()));
        }
    }
    let ca = ClusterCa::generate()?;
    write_file(&key_path, ca.key_pem().as_bytes(), true)?;
    write_file(&cert_path, ca.cert_pem().as_bytes(), false)?;
    Ok(ca)
}

/// Issues `NODE.pem` and `NODE.key` (0600) in `dir`, signed by the CA stored there.
/// Returns the paths `(certificate, key)`.
pub fn issue(dir: &Path, node: &str) -> Result<(PathBuf, PathBuf), CertError> {
    validate_node_name(node)?;
    let ca = ClusterCa::load(dir)?;
    let cert_path = dir.join(format!("{node}.pem"));
    let key_path = dir.join(format!("{node}.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CertError::AlreadyExists(p.clone()));
        }
    }
    let (cert_pem, key_pem) = ca.issue_pem(node)?;
    write_file(&key_path, key_pem.as_bytes(), true)?;
    write_file(&cert_path, cert_pem.as_bytes(), false)?;
    Ok((cert_path, key_path))
}

/// Loads a node's TLS material from PEM files: the cluster CA certificate, the
/// node's certificate chain and its private key.
pub fn load_node_tls(ca: &Path, cert: &Path, key: &Path) -> Result<NodeTls, CertError> {
    let ca_der = load_cert_chain(ca)?
        .into_iter()
        .next()
        .ok_or_else(|| CertError::BadPem {
            path: ca.to_path_buf(),
            what: "no certificate".into(),
        })?;
    Ok(NodeTls {
        ca: ca_der,
        chain: load_cert_chain(cert)?,
        key: load_private_key(key)?,
    })
}

/// Loads every certificate of a PEM file (at least one is required).
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let text = read_to_string(path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadPem {
            path: path.to_path_buf(),
            what: format!("malformed PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertError::BadPem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block found (is this a certificate PEM file?)".into(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let text = read_to_string(path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| CertError::BadPem {
        path: path.to_path_buf(),
        what: format!("no usable PRIVATE KEY block ({e}); is this a key PEM file?"),
    })
}

fn read_to_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let io_err = |source| CertError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::AlreadyExists(path.to_path_buf())
        } else {
            io_err(e)
        }
    })?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "troupe-certs-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        dir
    }

    #[test]
    fn pem_round_trip_of_generated_ca() {
        let ca = ClusterCa::generate().expect("ca");
        let parsed = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("parse");
        assert_eq!(parsed.as_ref(), ca.cert_der().as_ref());
    }

    #[test]
    fn init_issue_load_on_disk() {
        let dir = temp_dir("disk");
        init(&dir).expect("init");
        assert!(matches!(init(&dir), Err(CertError::AlreadyExists(_))));
        let (cert, key) = issue(&dir, "node-a").expect("issue");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for k in [&key, &dir.join(CA_KEY_FILE)] {
                let mode = fs::metadata(k).expect("meta").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", k.display());
            }
        }
        let tls = load_node_tls(&dir.join(CA_CERT_FILE), &cert, &key).expect("load");
        assert_eq!(tls.chain.len(), 1);
        // The reloaded CA's original certificate is what the node trusts.
        let ca = ClusterCa::load(&dir).expect("load ca");
        assert_eq!(ca.cert_der().as_ref(), tls.ca.as_ref());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn clear_errors_for_missing_and_wrong_files() {
        let dir = temp_dir("bad");
        init(&dir).expect("init");
        let missing = load_cert_chain(&dir.join("nope.pem")).expect_err("missing");
        assert!(matches!(missing, CertError::Io { .. }), "{missing}");
        assert!(missing.to_string().contains("nope.pem"));
        // A key file is not a certificate file, and vice versa.
        let wrong = load_cert_chain(&dir.join(CA_KEY_FILE)).expect_err("wrong kind");
        assert!(matches!(wrong, CertError::BadPem { .. }), "{wrong}");
        let wrong = load_private_key(&dir.join(CA_CERT_FILE)).expect_err("wrong kind");
        assert!(matches!(wrong, CertError::BadPem { .. }), "{wrong}");
        assert!(matches!(
            issue(&dir, "not a name"),
            Err(CertError::InvalidNodeName(_))
        ));
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn mismatched_ca_key_is_detected() {
        let dir = temp_dir("mismatch");
        init(&dir).expect("init");
        let other = ClusterCa::generate().expect("other");
        fs::remove_file(dir.join(CA_KEY_FILE)).expect("rm");
        write_file(&dir.join(CA_KEY_FILE), other.key_pem().as_bytes(), true).expect("write");
        assert!(matches!(
            ClusterCa::load(&dir),
            Err(CertError::KeyMismatch { .. })
        ));
        fs::remove_dir_all(&dir).ok();
    }
}
