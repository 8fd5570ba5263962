//! Cluster certificates for the QUIC transport: a cluster CA and node certificates.
//!
//! Every node of a cluster trusts one certificate authority (the *cluster CA*) and
//! holds a certificate signed by it whose subject alternative name (a DNS name) is
//! the node's name. The QUIC transport uses them for mutual TLS: a peer is accepted
//! only if its certificate chains to the cluster CA *and* names the node it claims to
//! be. Node certificates carry both the `serverAuth` and `clientAuth` extended key
//! usages because every node both dials and accepts, key usage `digitalSignature`
//! only, and a critical basicConstraints saying it is no CA. Both certificates
//! are strict DER (no explicitly encoded default values), so strict X.509 stacks
//! such as Python's `cryptography` (used by aioquic) accept them; the tests parse
//! them with the same parser. While a cluster moves to a new
//! CA, a node trusts both: every certificate of its `ca.pem` ([`NodeTls::also_trusted`]).
//!
//! On disk (made with rcgen, ECDSA P-256):
//! - [`init`]`(dir)` writes `ca.pem` (the CA certificate) and `ca.key` (its private key);
//! - [`issue`]`(dir, node)` writes `NODE.pem` (certificate) and `NODE.key` (key),
//!   signed by the CA found in `dir`.
//!
//! Private keys are written with permissions `0600` on unix. Existing files are
//! never overwritten: [`init`] and [`issue`] fail with [`CertError::AlreadyExists`];
//! [`issue_with`] with [`IssueOptions::renew`] replaces a node's certificate and key.
//!
//! Validity: a CA is valid for [`DEFAULT_CA_DAYS`] and a node certificate for
//! [`DEFAULT_NODE_DAYS`] unless asked otherwise ([`init_with_days`],
//! [`IssueOptions`]), never past its CA, and starting an hour back (clocks of
//! different hosts differ). The TLS handshake refuses an expired certificate;
//! [`Validity`] reads the dates back so that a node can refuse to start with
//! one and warn ahead of expiry.
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

mod validity;
pub use validity::{format_utc, Validity};

/// Common name of every Troupe cluster CA (its unit is derived from the CA key).
pub const CA_COMMON_NAME: &str = "Troupe cluster CA";
/// File name of the CA certificate inside a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Days a cluster CA is valid unless asked otherwise (about ten years).
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Days a node certificate is valid unless asked otherwise.
pub const DEFAULT_NODE_DAYS: u32 = 365;
/// Longest validity accepted, in days (100 years).
pub const MAX_DAYS: u32 = 36_500;

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
    /// A validity outside 1..=[`MAX_DAYS`] days.
    #[error("invalid validity of {0} days: it must be 1 to {MAX_DAYS}")]
    InvalidDays(u32),
    /// A certificate (or the CA) that has expired.
    #[error("{what} expired on {at}")]
    Expired {
        /// Which certificate.
        what: String,
        /// When (UTC).
        at: String,
    },
}

/// `(not_before, not_after)` for a certificate valid for `days` from now:
/// it starts an hour back (another host's clock may be behind) and ends no
/// later than `cap` (its CA's expiry). Whole seconds, as certificates hold.
fn validity_window(
    days: u32,
    cap: Option<std::time::SystemTime>,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), CertError> {
    if days == 0 || days > MAX_DAYS {
        return Err(CertError::InvalidDays(days));
    }
    let now = std::time::SystemTime::now();
    let start = now - std::time::Duration::from_secs(3600);
    let mut end = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    if let Some(cap) = cap {
        end = end.min(cap);
    }
    let whole = |t: std::time::SystemTime| {
        time::OffsetDateTime::from(t)
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond")
    };
    Ok((whole(start), whole(end)))
}

/// A node's TLS material, ready for the transport: the cluster CA it trusts, its
/// certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct NodeTls {
    /// The cluster CA certificate (a trust root).
    pub ca: CertificateDer<'static>,
    /// Further CA certificates trusted alongside `ca`: the others of a
    /// `ca.pem` holding several, while a cluster moves to a new CA node by
    /// node (empty otherwise).
    pub also_trusted: Vec<CertificateDer<'static>>,
    /// This node's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeTls {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            also_trusted: self.also_trusted.clone(),
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

/// OID of the X.509 basicConstraints extension (RFC 5280, 4.2.1.9).
const BASIC_CONSTRAINTS_OID: &[u64] = &[2, 5, 29, 19];

/// basicConstraints for an end-entity certificate: critical, and an empty
/// `SEQUENCE` (DER `30 00`): `cA` takes its default, FALSE, by being absent.
fn not_a_ca() -> rcgen::CustomExtension {
    let mut ext = rcgen::CustomExtension::from_oid_content(BASIC_CONSTRAINTS_OID, vec![0x30, 0x00]);
    ext.set_criticality(true);
    ext
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
    /// Generates a fresh CA (ECDSA P-256 key, self-signed), valid for
    /// [`DEFAULT_CA_DAYS`].
    pub fn generate() -> Result<Self, CertError> {
        Self::generate_valid_for(DEFAULT_CA_DAYS)
    }

    /// Generates a fresh CA valid for `days` (1 to [`MAX_DAYS`]) from now.
    pub fn generate_valid_for(days: u32) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(&key)?;
        let (not_before, not_after) = validity_window(days, None)?;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        Ok(Self { cert, der, key })
    }

    /// When the CA certificate is valid (`None` if its dates cannot be read).
    pub fn validity(&self) -> Option<Validity> {
        Validity::of_der(self.der.as_ref())
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
            also_trusted: Vec::new(),
            chain,
            key,
        })
    }

    /// Issues a certificate for `node`, valid for [`DEFAULT_NODE_DAYS`], and
    /// returns `(certificate PEM, key PEM)`.
    pub fn issue_pem(&self, node: &str) -> Result<(String, String), CertError> {
        self.issue_pem_valid_for(node, DEFAULT_NODE_DAYS)
    }

    /// Like [`issue_pem`](Self::issue_pem), valid for `days` (1 to
    /// [`MAX_DAYS`]) from now, but never past the CA's own expiry.
    pub fn issue_pem_valid_for(
        &self,
        node: &str,
        days: u32,
    ) -> Result<(String, String), CertError> {
        validate_node_name(node)?;
        let ca_end = self.validity().map(|v| v.not_after);
        if let Some(end) = ca_end {
            if end <= std::time::SystemTime::now() {
                return Err(CertError::Expired {
                    what: "the cluster CA".into(),
                    at: format_utc(end),
                });
            }
        }
        let (not_before, not_after) = validity_window(days, ca_end)?;
        self.issue_pem_between(node, not_before, not_after)
    }

    /// A certificate for `node` valid from `not_before` to `not_after`,
    /// whatever those are (tests make expired ones with it).
    pub(crate) fn issue_pem_between(
        &self,
        node: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<(String, String), CertError> {
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
        // "Not a CA", encoded as DER requires. rcgen's `IsCa::ExplicitNoCa`
        // writes `cA BOOLEAN FALSE`, the default value, which DER forbids:
        // strict parsers (Python's `cryptography`, so aioquic) then refuse
        // the whole certificate ("EncodedDefault"). `IsCa::NoCa` writes no
        // basicConstraints at all; the extension below says the same as the
        // old one, correctly: an empty SEQUENCE (cA absent = FALSE, no path
        // length), critical, as web PKI end-entity certificates carry it.
        params.is_ca = IsCa::NoCa;
        params.custom_extensions = vec![not_a_ca()];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Creates a cluster CA in `dir` (created if missing): `ca.pem` and `ca.key`
/// (0600), valid for [`DEFAULT_CA_DAYS`].
pub fn init(dir: &Path) -> Result<ClusterCa, CertError> {
    init_with_days(dir, DEFAULT_CA_DAYS)
}

/// Like [`init`], with a CA valid for `days` (1 to [`MAX_DAYS`]).
pub fn init_with_days(dir: &Path, days: u32) -> Result<ClusterCa, CertError> {
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
    let ca = ClusterCa::generate_valid_for(days)?;
    write_file(&key_path, ca.key_pem().as_bytes(), true)?;
    write_file(&cert_path, ca.cert_pem().as_bytes(), false)?;
    Ok(ca)
}

/// How [`issue_with`] issues a node certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueOptions {
    /// Days the certificate is valid (1 to [`MAX_DAYS`]); never past the CA.
    pub days: u32,
    /// Replace an existing `NODE.pem` and `NODE.key` (a renewal: a new key
    /// too) instead of refusing to overwrite them.
    pub renew: bool,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            days: DEFAULT_NODE_DAYS,
            renew: false,
        }
    }
}

/// Issues `NODE.pem` and `NODE.key` (0600) in `dir`, signed by the CA stored there,
/// valid for [`DEFAULT_NODE_DAYS`]. Returns the paths `(certificate, key)`.
pub fn issue(dir: &Path, node: &str) -> Result<(PathBuf, PathBuf), CertError> {
    issue_with(dir, node, IssueOptions::default())
}

/// Like [`issue`], with a chosen validity, or renewing (replacing) an existing
/// certificate and key. A renewed node certificate is accepted by every peer at
/// once (same CA); the node uses it from its next start.
pub fn issue_with(
    dir: &Path,
    node: &str,
    options: IssueOptions,
) -> Result<(PathBuf, PathBuf), CertError> {
    validate_node_name(node)?;
    let ca = ClusterCa::load(dir)?;
    let cert_path = dir.join(format!("{node}.pem"));
    let key_path = dir.join(format!("{node}.key"));
    if !options.renew {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(CertError::AlreadyExists(p.clone()));
            }
        }
    }
    let (cert_pem, key_pem) = ca.issue_pem_valid_for(node, options.days)?;
    if options.renew {
        // Both new files are written before either old one is replaced: a
        // renewal that fails on the way leaves the old pair as it was,
        // never a new key beside the old certificate.
        let key_tmp = stage_file(&key_path, key_pem.as_bytes(), true)?;
        let cert_tmp = match stage_file(&cert_path, cert_pem.as_bytes(), false) {
            Ok(tmp) => tmp,
            Err(e) => {
                let _ = fs::remove_file(&key_tmp);
                return Err(e);
            }
        };
        rename_over(&key_tmp, &key_path)?;
        if let Err(e) = rename_over(&cert_tmp, &cert_path) {
            // The new key is in place but not its certificate: say so, rather
            // than leave a pair the node will refuse without a word why.
            let _ = fs::remove_file(&cert_tmp);
            return Err(CertError::Io {
                action:
                    "renewing (the key was replaced but not the certificate: run the renewal again)",
                path: cert_path,
                source: match e {
                    CertError::Io { source, .. } => source,
                    other => std::io::Error::other(other.to_string()),
                },
            });
        }
        // The renames are durable once the directory is (best effort: not
        // every platform lets a directory be opened for syncing).
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    } else {
        write_file(&key_path, key_pem.as_bytes(), true)?;
        write_file(&cert_path, cert_pem.as_bytes(), false)?;
    }
    Ok((cert_path, key_path))
}

/// Loads a node's TLS material from PEM files: the cluster CA certificate (every
/// certificate in `ca` is trusted: more than one while the cluster changes
/// CA), the node's certificate chain and its private key.
pub fn load_node_tls(ca: &Path, cert: &Path, key: &Path) -> Result<NodeTls, CertError> {
    let mut cas = load_cert_chain(ca)?.into_iter();
    let first = cas.next().ok_or_else(|| CertError::BadPem {
        path: ca.to_path_buf(),
        what: "no certificate".into(),
    })?;
    Ok(NodeTls {
        ca: first,
        also_trusted: cas.collect(),
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

/// Writes the future contents of `path` into a new file beside it
/// (`PATH.new`), to be renamed over it with [`rename_over`] (a reader then
/// sees the old contents or the new, never a mix). Returns that file.
fn stage_file(path: &Path, contents: &[u8], secret: bool) -> Result<PathBuf, CertError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    // A leftover from an interrupted renewal is ours to replace.
    let _ = fs::remove_file(&tmp);
    write_file(&tmp, contents, secret)?;
    Ok(tmp)
}

/// Renames the staged file `tmp` over `path`.
fn rename_over(tmp: &Path, path: &Path) -> Result<(), CertError> {
    fs::rename(tmp, path).map_err(|source| CertError::Io {
        action: "replacing",
        path: path.to_path_buf(),
        source,
    })
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

    /// The validity of the first certificate in `pem`.
    fn dates(pem: &str) -> Validity {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        Validity::of_der(der.as_ref()).expect("dates readable")
    }

    /// `t` is within a minute of `want`.
    fn near(t: std::time::SystemTime, want: std::time::SystemTime) -> bool {
        let d = t
            .duration_since(want)
            .or_else(|_| want.duration_since(t))
            .expect("either order");
        d < std::time::Duration::from_secs(60)
    }

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

    #[test]
    fn certificates_are_valid_for_the_days_asked_from_an_hour_back() {
        let now = std::time::SystemTime::now();
        let ca = ClusterCa::generate().expect("ca");
        let v = ca.validity().expect("ca dates");
        assert!(near(v.not_before, now - HOUR), "{v:?}");
        assert!(near(v.not_after, now + DAY * DEFAULT_CA_DAYS), "{v:?}");
        let (pem, _) = ca.issue_pem("node-a").expect("issue");
        let v = dates(&pem);
        assert!(near(v.not_before, now - HOUR), "{v:?}");
        assert!(near(v.not_after, now + DAY * DEFAULT_NODE_DAYS), "{v:?}");
        let (pem, _) = ca.issue_pem_valid_for("node-a", 10).expect("issue");
        assert!(near(dates(&pem).not_after, now + DAY * 10));
    }

    #[test]
    fn a_node_certificate_never_outlives_its_ca() {
        let ca = ClusterCa::generate_valid_for(5).expect("ca");
        let (pem, _) = ca.issue_pem_valid_for("node-a", 365).expect("issue");
        assert_eq!(
            dates(&pem).not_after,
            ca.validity().expect("dates").not_after
        );
    }

    #[test]
    fn a_validity_out_of_range_is_refused() {
        assert!(matches!(
            ClusterCa::generate_valid_for(0),
            Err(CertError::InvalidDays(0))
        ));
        let ca = ClusterCa::generate().expect("ca");
        for days in [0, MAX_DAYS + 1] {
            let err = ca.issue_pem_valid_for("node-a", days).unwrap_err();
            assert!(
                matches!(err, CertError::InvalidDays(d) if d == days),
                "{err}"
            );
        }
    }

    #[test]
    fn renew_replaces_the_certificate_and_key_and_only_then() {
        let dir = temp_dir("renew");
        init(&dir).expect("init");
        let (cert, key) = issue(&dir, "node-a").expect("issue");
        let old_key = fs::read(&key).expect("key");
        let again = issue_with(&dir, "node-a", IssueOptions::default());
        assert!(matches!(again, Err(CertError::AlreadyExists(_))));
        assert_eq!(fs::read(&key).expect("key"), old_key, "refused, untouched");
        let renew = IssueOptions {
            days: 30,
            renew: true,
        };
        let (cert2, key2) = issue_with(&dir, "node-a", renew).expect("renew");
        assert_eq!((&cert2, &key2), (&cert, &key));
        assert_ne!(fs::read(&key).expect("key"), old_key, "a new key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // The renewed pair belongs together and chains to the CA.
        let tls = load_node_tls(&dir.join(CA_CERT_FILE), &cert, &key).expect("load");
        let v = Validity::of_der(tls.chain[0].as_ref()).expect("dates");
        assert!(near(v.not_after, std::time::SystemTime::now() + DAY * 30));
        assert!(!dir.join("node-a.pem.new").exists());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_failed_renewal_leaves_the_old_pair_usable() {
        let dir = temp_dir("renew-fails");
        init(&dir).expect("init");
        let (cert, key) = issue(&dir, "node-a").expect("issue");
        let (old_cert, old_key) = (fs::read(&cert).expect("cert"), fs::read(&key).expect("key"));
        // Something in the way of the new certificate (a directory where
        // its temporary file goes): the renewal must fail as a whole.
        fs::create_dir(dir.join("node-a.pem.new")).expect("obstacle");
        let renew = IssueOptions {
            days: 30,
            renew: true,
        };
        assert!(issue_with(&dir, "node-a", renew).is_err());
        assert_eq!(fs::read(&key).expect("key"), old_key, "key replaced alone");
        assert_eq!(fs::read(&cert).expect("cert"), old_cert);
        load_node_tls(&dir.join(CA_CERT_FILE), &cert, &key).expect("old pair loads");
        assert!(!dir.join("node-a.key.new").exists(), "a stray key copy");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_renewal_that_replaces_only_the_key_says_so() {
        let dir = temp_dir("half-renew");
        init(&dir).expect("init");
        // A certificate path that cannot be replaced by a file.
        fs::create_dir_all(dir.join("node-a.pem").join("x")).expect("dir");
        let renew = IssueOptions {
            days: 30,
            renew: true,
        };
        let err = issue_with(&dir, "node-a", renew).unwrap_err().to_string();
        assert!(
            err.contains("key was replaced but not the certificate") && err.contains("node-a.pem"),
            "{err}"
        );
        assert!(
            !dir.join("node-a.pem.new").exists(),
            "staged file left behind"
        );
        fs::remove_dir_all(&dir).ok();
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

    /// An X.509 certificate as Python's `cryptography` parses it (its
    /// `cryptography-x509` crate, on rust-asn1): strict DER, DEFAULT values
    /// included, down to each extension.
    // Every field is parsed (its encoding checked), not every one read; the
    // derived parsers return rust-asn1's (large) error type.
    #[allow(dead_code, clippy::result_large_err)]
    mod strict {
        #[derive(asn1::Asn1Read)]
        pub struct Certificate<'a> {
            pub tbs: TbsCertificate<'a>,
            pub signature_algorithm: asn1::Tlv<'a>,
            pub signature: asn1::BitString<'a>,
        }

        #[derive(asn1::Asn1Read)]
        pub struct TbsCertificate<'a> {
            #[explicit(0)]
            #[default(0)]
            pub version: u8,
            pub serial: asn1::BigInt<'a>,
            pub signature_algorithm: asn1::Tlv<'a>,
            pub issuer: asn1::Tlv<'a>,
            pub validity: asn1::Tlv<'a>,
            pub subject: asn1::Tlv<'a>,
            pub spki: asn1::Tlv<'a>,
            #[implicit(1)]
            pub issuer_unique_id: Option<asn1::BitString<'a>>,
            #[implicit(2)]
            pub subject_unique_id: Option<asn1::BitString<'a>>,
            #[explicit(3)]
            pub extensions: Option<asn1::SequenceOf<'a, Extension<'a>>>,
        }

        #[derive(asn1::Asn1Read)]
        pub struct Extension<'a> {
            pub id: asn1::ObjectIdentifier,
            #[default(false)]
            pub critical: bool,
            pub value: &'a [u8],
        }

        #[derive(asn1::Asn1Read, Debug)]
        pub struct BasicConstraints {
            #[default(false)]
            pub ca: bool,
            pub path_length: Option<u64>,
        }
    }

    /// Parses `der` as strictly as Python's `cryptography` does, every
    /// extension's contents included, and returns its extensions
    /// (OID, critical, contents).
    fn parse_strictly(der: &[u8], what: &str) -> Vec<(String, bool, Vec<u8>)> {
        let refused =
            |e: asn1::ParseError| -> ! { panic!("a strict DER parser refuses the {what}: {e:?}") };
        let cert =
            asn1::parse_single::<strict::Certificate<'_>>(der).unwrap_or_else(|e| refused(e));
        assert_eq!(cert.tbs.version, 2, "an X.509 v3 {what}");
        let mut out = Vec::new();
        for ext in cert.tbs.extensions.into_iter().flatten() {
            let id = ext.id.to_string();
            let contents = ext.value.to_vec();
            match id.as_str() {
                "2.5.29.19" => drop(
                    asn1::parse_single::<strict::BasicConstraints>(&contents)
                        .unwrap_or_else(|e| refused(e)),
                ),
                "2.5.29.15" => drop(
                    asn1::parse_single::<asn1::BitString<'_>>(&contents)
                        .unwrap_or_else(|e| refused(e)),
                ),
                "2.5.29.37" => drop(
                    asn1::parse_single::<asn1::SequenceOf<'_, asn1::ObjectIdentifier>>(&contents)
                        .unwrap_or_else(|e| refused(e)),
                ),
                _ => drop(
                    asn1::parse_single::<asn1::Tlv<'_>>(&contents).unwrap_or_else(|e| refused(e)),
                ),
            }
            out.push((id, ext.critical, contents));
        }
        out
    }

    /// Strict DER parsers (Python's `cryptography`, so aioquic) refuse a
    /// certificate that encodes a DEFAULT value, such as basicConstraints
    /// `cA BOOLEAN FALSE` ("EncodedDefault"); so does this test, with the
    /// same parser. It then checks what a node certificate must say.
    #[test]
    fn issued_certificates_are_strict_der_and_say_what_a_node_is() {
        let ca = ClusterCa::generate().expect("ca");
        let ca_exts = parse_strictly(ca.cert_der().as_ref(), "CA certificate");
        let (pem, _) = ca.issue_pem("node-a").expect("issue");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        let exts = parse_strictly(der.as_ref(), "node certificate");
        let get = |exts: &[(String, bool, Vec<u8>)], oid: &str| {
            exts.iter()
                .find(|(id, _, _)| id == oid)
                .map(|(_, critical, v)| (*critical, v.clone()))
                .unwrap_or_else(|| panic!("no extension {oid}"))
        };
        // Not a CA: basicConstraints critical, cA absent (FALSE), no path length.
        let (critical, bc) = get(&exts, "2.5.29.19");
        let bc = asn1::parse_single::<strict::BasicConstraints>(&bc).expect("bc");
        assert!(critical && !bc.ca && bc.path_length.is_none(), "{bc:?}");
        // Signs handshakes only (digitalSignature, bit 0), as a server and a client.
        let (critical, ku) = get(&exts, "2.5.29.15");
        let ku = asn1::parse_single::<asn1::BitString<'_>>(&ku).expect("ku");
        let bits: Vec<usize> = (0..16).filter(|i| ku.has_bit_set(*i)).collect();
        assert!(critical && bits == [0], "key usage bits {bits:?}");
        let (_, eku) = get(&exts, "2.5.29.37");
        let eku = asn1::parse_single::<asn1::SequenceOf<'_, asn1::ObjectIdentifier>>(&eku)
            .expect("eku")
            .map(|oid| oid.to_string())
            .collect::<Vec<_>>();
        assert_eq!(
            eku,
            ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
            "serverAuth, clientAuth"
        );
        // Named by the node name only, and naming its issuer's key.
        let leaf = webpki::EndEntityCert::try_from(&der).expect("webpki");
        assert_eq!(leaf.valid_dns_names().collect::<Vec<_>>(), ["node-a"]);
        get(&exts, "2.5.29.35");
        // The CA says it is one.
        let (critical, bc) = get(&ca_exts, "2.5.29.19");
        let bc = asn1::parse_single::<strict::BasicConstraints>(&bc).expect("CA bc");
        assert!(critical && bc.ca, "{bc:?}");
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
