//! The HTTP endpoint with `[http] client_certs = true`, served for real by
//! `start_node` and spoken to with rustls over TCP: HTTPS with the node's
//! certificate, a client certificate from the cluster CA required (none,
//! or one from another CA, is refused in the handshake), no plain HTTP on
//! that port, token and certificate both required when both are set, and
//! the configurations refused at start-up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use troupe::config::Config;
use troupe::http::tls::{client_config, ClientTlsFiles};
use troupe::http::StatusReport;
use troupe::runtime::start_node;
use troupe::transports::certs;

const TOKEN: &str = "test-token-0123456789";

/// A directory with a cluster CA (`certs/`: `ca.pem`, `solo.pem|key` for
/// the node, `ops.pem|key` for a client) and another CA (`other/`, with its
/// own `ops.pem|key`).
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "troupe-http-mtls-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        for (sub, names) in [("certs", &["solo", "ops"][..]), ("other", &["ops"][..])] {
            let d = dir.join(sub);
            certs::init(&d).expect("CA");
            for n in names {
                certs::issue(&d, n).expect("issue");
            }
        }
        Self { dir }
    }

    /// The client files: the cluster CA, and `ops` of CA `sub`.
    fn client(&self, sub: &str) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.dir.join("certs/ca.pem"),
            cert: self.dir.join(format!("{sub}/ops.pem")),
            key: self.dir.join(format!("{sub}/ops.key")),
        }
    }

    /// Node `solo`'s config (a peer that never answers) with `http` as its
    /// `[http]` table.
    fn config(&self, http: &str) -> Config {
        Config::from_toml(
            &format!(
                "name = \"solo\"\nlisten = \"127.0.0.1:0\"\n[tls]\nca = \"certs/ca.pem\"\n\
                 cert = \"certs/solo.pem\"\nkey = \"certs/solo.key\"\n\
                 [[peers]]\nname = \"ghost\"\naddr = \"127.0.0.1:9\"\n[http]\n{http}"
            ),
            &self.dir,
        )
        .expect("config")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a request over TLS came to: the raw bytes read (a response, or
/// nothing) and the error that ended it, if any.
#[derive(Debug)]
struct Outcome {
    read: String,
    error: Option<String>,
    alpn: Option<Vec<u8>>,
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        self.read
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }

    fn body(&self) -> serde_json::Value {
        let body = self.read.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    /// Refused in the TLS handshake: no HTTP answer, and a TLS error
    /// that says `says`.
    fn assert_refused(&self, why: &str, says: &str) {
        assert!(
            self.status().is_none() && self.read.is_empty(),
            "{why}: the endpoint answered {:?}",
            self.read
        );
        let error = self.error.as_deref().unwrap_or_default();
        assert!(error.contains(says), "{why}: want {says:?} in {self:?}");
    }
}

/// `GET path` over TLS with `config`, to `addr`, naming the server `name`.
async fn get_tls(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Outcome {
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: solo\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tokio::task::spawn_blocking(move || {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut raw = Vec::new();
        let result = tls
            .write_all(head.as_bytes())
            .and_then(|()| tls.read_to_end(&mut raw));
        Outcome {
            read: String::from_utf8_lossy(&raw).into_owned(),
            error: result.err().map(|e| e.to_string()),
            alpn: tls.conn.alpn_protocol().map(<[u8]>::to_vec),
        }
    })
    .await
    .expect("client thread")
}

/// The certificates of `ca` as trust roots.
fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs::load_cert_chain(ca).expect("ca") {
        roots.add(c).expect("root");
    }
    roots
}

/// A client config that trusts the CA `ca` and presents no certificate.
fn anonymous_client(ca: &Path) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(troupe::transports::quic::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(ca))
        .with_no_client_auth()
}

#[actix_rt::test]
async fn a_client_certificate_of_the_cluster_ca_is_required() {
    let c = Certs::new("required");
    let node = start_node(c.config("listen = \"127.0.0.1:0\"\nclient_certs = true\n"))
        .await
        .expect("node starts");
    let addr = node.http_addr().expect("[http] runs");
    assert_eq!(
        node.http_url().as_deref(),
        Some(format!("https://{addr}").as_str())
    );

    // A certificate of the cluster CA: 200, over HTTP/1.1 by ALPN.
    let good = client_config(&c.client("certs"), Some("solo")).expect("client config");
    let o = get_tls(addr, good.clone(), "solo", "/v1/status", &[]).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    assert_eq!(o.alpn.as_deref(), Some(&b"http/1.1"[..]), "{o:?}");
    let s: StatusReport = serde_json::from_value(o.body()).expect("a StatusReport");
    assert_eq!(s.node, "solo");
    // Addressed by IP, without a pinned name: any certificate of the CA.
    let by_ip = client_config(&c.client("certs"), None).expect("client config");
    let o = get_tls(addr, by_ip, "127.0.0.1", "/v1/status", &[]).await;
    assert_eq!(o.status(), Some(200), "{o:?}");

    // No client certificate: refused in the handshake.
    let o = get_tls(
        addr,
        anonymous_client(&c.client("certs").ca),
        "solo",
        "/v1/status",
        &[],
    )
    .await;
    o.assert_refused("no client certificate", "alert: CertificateRequired");

    // A certificate of another CA: refused too. (The library's client
    // config refuses such files itself, so this one is built by hand: it
    // trusts the cluster CA and presents `other/ops.pem`.)
    let other = c.client("other");
    let foreign =
        rustls::ClientConfig::builder_with_provider(troupe::transports::quic::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots(&other.ca))
            .with_client_auth_cert(
                certs::load_cert_chain(&other.cert).expect("cert"),
                certs::load_private_key(&other.key).expect("key"),
            )
            .expect("client auth");
    let o = get_tls(addr, foreign, "solo", "/v1/status", &[]).await;
    o.assert_refused("a certificate of another CA", "alert: UnknownCA");

    // The node's certificate pinned under another name: the client refuses.
    let wrong = client_config(&c.client("certs"), Some("node-b")).expect("client config");
    let o = get_tls(addr, wrong, "solo", "/v1/status", &[]).await;
    o.assert_refused(
        "the node's certificate under another name",
        "not valid for name \"node-b\"",
    );

    // Plain HTTP to the HTTPS port: no HTTP answer.
    let raw = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        tcp.write_all(b"GET /v1/status HTTP/1.1\r\nHost: solo\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut raw = Vec::new();
        let _ = tcp.read_to_end(&mut raw);
        raw
    })
    .await
    .expect("client thread");
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP answered on the HTTPS port: {:?}",
        String::from_utf8_lossy(&raw)
    );

    // Still serving the good client; the refusals never reached HTTP.
    let o = get_tls(addr, good, "solo", "/v1/status", &[]).await;
    let s: StatusReport = serde_json::from_value(o.body()).expect("a StatusReport");
    assert_eq!(s.http.requests, 3, "{:?}", s.http);
    node.shutdown().await;
}

/// Client certificates and a token: a request needs both.
#[actix_rt::test]
async fn with_a_token_too_both_are_required() {
    let c = Certs::new("both");
    let node = start_node(c.config(&format!(
        "listen = \"127.0.0.1:0\"\nclient_certs = true\ntoken = \"{TOKEN}\"\n"
    )))
    .await
    .expect("node starts");
    let addr = node.http_addr().expect("[http] runs");
    let good = client_config(&c.client("certs"), Some("solo")).expect("client config");
    let o = get_tls(addr, good.clone(), "solo", "/v1/status", &[]).await;
    assert_eq!(o.status(), Some(401), "certificate without token: {o:?}");
    let bearer = format!("Bearer {TOKEN}");
    let o = get_tls(
        addr,
        good,
        "solo",
        "/v1/status",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    let o = get_tls(
        addr,
        anonymous_client(&c.client("certs").ca),
        "solo",
        "/v1/status",
        &[("Authorization", &bearer)],
    )
    .await;
    o.assert_refused("token without certificate", "alert: CertificateRequired");
    node.shutdown().await;
}

/// Not loopback: accepted with client certificates alone (and served).
#[actix_rt::test]
async fn a_non_loopback_endpoint_with_client_certificates_only_starts() {
    let c = Certs::new("wide");
    let node = start_node(c.config("listen = \"0.0.0.0:0\"\nclient_certs = true\n"))
        .await
        .expect("client certificates are enough off loopback");
    let port = node.http_addr().expect("[http] runs").port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let good = client_config(&c.client("certs"), Some("solo")).expect("client config");
    let o = get_tls(addr, good, "solo", "/v1/status", &[]).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    let o = get_tls(
        addr,
        anonymous_client(&c.client("certs").ca),
        "solo",
        "/v1/status",
        &[],
    )
    .await;
    o.assert_refused("no client certificate", "alert: CertificateRequired");
    node.shutdown().await;
}

#[test]
fn a_non_loopback_endpoint_without_token_or_client_certificates_is_refused() {
    let c = Certs::new("open");
    let text = "name = \"solo\"\nlisten = \"127.0.0.1:0\"\n[tls]\nca = \"certs/ca.pem\"\n\
                cert = \"certs/solo.pem\"\nkey = \"certs/solo.key\"\n\
                [http]\nlisten = \"0.0.0.0:8443\"\n";
    let path = c.dir.join("solo.toml");
    std::fs::write(&path, text).expect("write");
    let err = Config::from_file(&path).expect_err("refused").to_string();
    let at = format!("{}:8: http.listen", path.display());
    for want in [
        at.as_str(),
        "not a loopback address",
        "set [http] token",
        "client_certs = true",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn client_certificates_are_refused_in_insecure_dev_mode_naming_the_line() {
    let dir = Certs::new("insecure");
    let path = dir.dir.join("solo.toml");
    std::fs::write(
        &path,
        "name = \"solo\"\n[tls]\ninsecure_dev_mode = true\n\n[http]\n\
         listen = \"127.0.0.1:0\"\nclient_certs = true\n",
    )
    .expect("write");
    let err = Config::from_file(&path).expect_err("refused").to_string();
    let at = format!("{}:7: http.client_certs", path.display());
    for want in [at.as_str(), "insecure_dev_mode", "[tls] ca, cert and key"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

/// The start-up check of `start_node` too, for a config built in code.
#[actix_rt::test]
async fn start_node_refuses_client_certificates_in_insecure_dev_mode() {
    let mut config = Config::from_toml(
        "name = \"solo\"\nlisten = \"127.0.0.1:0\"\n[tls]\ninsecure_dev_mode = true\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
        Path::new("."),
    )
    .expect("config");
    if let Some(http) = config.http.as_mut() {
        http.client_certs = true;
    }
    let err = start_node(config).await.err().map(|e| e.to_string());
    let err = err.expect("refused");
    assert!(
        err.contains("http.client_certs") && err.contains("insecure_dev_mode"),
        "{err}"
    );
}
