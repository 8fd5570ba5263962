//! A small blocking client of a node's HTTP endpoint (`troupe::http`), for
//! `troupe status`, `troupe tree` and `troupe cluster`.
//!
//! Plain `http://` URLs, and `https://` ones for an endpoint with `[http]
//! client_certs = true`: the client then presents a certificate of the
//! cluster CA and checks the node's certificate against that CA
//! ([`ClientTls`]; the rustls config and its checks are the library's,
//! [`troupe::http::tls::client_config`]).
//!
//! Every failure is a [`CliError`] that names the URL and says what to
//! check: the node does not answer (is it running, with `[http]`?), it
//! refused the token (`--token`) or the client certificate (`--cert`), its
//! certificate is not from `--ca`, or it answered an error (its `error`
//! text is quoted).
//!
//! HTTPS goes through a TLS connector of this module plugged into ureq
//! ([`ureq::unversioned::transport`]), not ureq's own rustls feature: that
//! one checks the server's certificate against the URL's host, and a node's
//! certificate names the node, not its IP address. This one uses the
//! library's verifier and the QUIC transport's aws-lc-rs provider (no second
//! crypto provider).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde::de::DeserializeOwned;
use serde_json::Value;
use troupe::http::tls::ClientTlsFiles;
use troupe::http::StatusReport;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

use crate::cli::CliError;

/// What a client of an `https://` endpoint (`[http] client_certs = true`)
/// presents and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The cluster CA, the client's certificate (issued by that CA) and key.
    pub files: ClientTlsFiles,
    /// The name the node's certificate must carry. Default: the URL's host
    /// when it is a name; with an IP address, any certificate of the CA.
    pub server_name: Option<String>,
}

/// A node's endpoint, by its base URL (`http://127.0.0.1:8080`).
#[derive(Clone)]
pub struct NodeClient {
    base: String,
    token: Option<String>,
    tls: Option<ClientTls>,
    agent: ureq::Agent,
}

/// What the node answered: its status code and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body, parsed as JSON (`Value::Null` if it was not JSON).
    pub body: Value,
    /// The `Retry-After` header in seconds, if the node sent one.
    pub retry_after: Option<u64>,
}

impl NodeClient {
    /// A client of the node at `url` (`http://host:port`, a trailing `/`
    /// allowed), sending `token` as a bearer token if given, giving up on a
    /// request after `timeout`.
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Result<Self, CliError> {
        Self::with_tls(url, token, None, timeout)
    }

    /// [`NodeClient::new`], also for `https://host:port` with `tls` (which
    /// an `https://` URL requires and an `http://` one refuses). The TLS
    /// files are read and checked here: an error names the file.
    pub fn with_tls(
        url: &str,
        token: Option<String>,
        tls: Option<ClientTls>,
        timeout: Duration,
    ) -> Result<Self, CliError> {
        let base = url.trim_end_matches('/').to_string();
        let (https, rest) = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => {
                return Err(CliError::Other(format!(
                    "--node {url:?}: expected the node's HTTP endpoint as http://HOST:PORT \
                     (its [http] listen address), or https://HOST:PORT with [http] client_certs"
                )))
            }
        };
        if rest.is_empty() || rest.contains('/') {
            return Err(CliError::Other(format!(
                "--node {url:?}: expected http://HOST:PORT or https://HOST:PORT, without a path"
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout));
        let agent = match (https, &tls) {
            (false, None) => ureq::Agent::new_with_config(config.build()),
            (false, Some(_)) => {
                return Err(CliError::Other(format!(
                    "--node {url:?} is plain HTTP: --ca, --cert and --key are for an https:// \
                     endpoint (a node with [http] client_certs = true)"
                )))
            }
            (true, None) => {
                return Err(CliError::Other(format!(
                    "--node {url:?}: an https:// endpoint ([http] client_certs = true) wants a \
                     client certificate from the cluster CA: pass --ca, --cert and --key"
                )))
            }
            (true, Some(tls)) => {
                let rustls =
                    troupe::http::tls::client_config(&tls.files, tls.server_name.as_deref())?;
                let connector = ().chain(TcpConnector::default()).chain(ClusterTls {
                    config: Arc::new(rustls),
                });
                // No proxy: the connector speaks to the node directly.
                ureq::Agent::with_parts(
                    config.proxy(None).build(),
                    connector,
                    ureq::unversioned::resolver::DefaultResolver::default(),
                )
            }
        };
        Ok(Self {
            base,
            token,
            tls,
            agent,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET path`, whatever the status code.
    pub fn get(&self, path: &str) -> Result<Answer, CliError> {
        self.request("GET", path, None, &[])
    }

    /// `POST path` with a JSON body, whatever the status code.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Answer, CliError> {
        self.request("POST", path, Some(&body.to_string()), &[])
    }

    /// `METHOD path` with `headers` and, if given, a body (sent with
    /// `Content-Type: application/json` unless `headers` name another
    /// type), whatever the status code. Sent once: never retried, whatever
    /// the method.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, CliError> {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let typed = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        let sent = match body {
            Some(body) => {
                if !typed {
                    req = req.header("Content-Type", "application/json");
                }
                let req = req
                    .body(body.to_string())
                    .map_err(|e| self.bad_request(path, e))?;
                self.agent.run(req)
            }
            None => {
                let req = req.body(()).map_err(|e| self.bad_request(path, e))?;
                self.agent.run(req)
            }
        };
        let res = sent.map_err(|e| self.unreachable(path, e))?;
        Self::answer(res).map_err(|e| self.unreachable(path, e))
    }

    fn bad_request(&self, path: &str, e: ureq::http::Error) -> CliError {
        CliError::Other(format!(
            "cannot make a request for {}{path}: {e}",
            self.base
        ))
    }

    /// `GET path` as a `T`; a non-2xx answer is an error quoting the node.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let a = self.get(path)?;
        if !(200..300).contains(&a.status) {
            return Err(self.refused(path, &a));
        }
        serde_json::from_value(a.body).map_err(|e| {
            CliError::Other(format!(
                "{}{path} answered something else than expected: {e}",
                self.base
            ))
        })
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<StatusReport, CliError> {
        self.get_as("/v1/status")
    }

    fn answer(mut res: ureq::http::Response<ureq::Body>) -> Result<Answer, ureq::Error> {
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = res.body_mut().read_to_string()?;
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            retry_after,
        })
    }

    fn unreachable(&self, path: &str, e: ureq::Error) -> CliError {
        let url = format!("{}{path}", self.base);
        let tls_error = match &e {
            ureq::Error::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
            _ => None,
        };
        let (Some(tls), Some(tls_error)) = (&self.tls, tls_error) else {
            let hint = if self.tls.is_none() {
                "is the node running, with [http] listening there? A node with [http] \
                 client_certs = true speaks only HTTPS: use https:// with --ca, --cert and --key"
            } else {
                "is the node running, with [http] listening there?"
            };
            return CliError::Other(format!("cannot reach {url}: {e} ({hint})"));
        };
        let files = &tls.files;
        let said = match tls_error {
            rustls::Error::InvalidCertificate(why) => {
                let pin = match &tls.server_name {
                    Some(name) => format!(" and name {name:?} (--server-name)"),
                    None if self.host_is_ip() => String::new(),
                    None => " and name the URL's host (or pass --server-name with the node's \
                              name)"
                        .to_string(),
                };
                format!(
                    "the node's certificate is not accepted ({}): it must chain to the CA \
                     in {} (--ca){pin}",
                    troupe::http::tls::describe(why),
                    files.ca.display()
                )
            }
            rustls::Error::General(why) => format!("the node's certificate is not accepted: {why}"),
            rustls::Error::AlertReceived(alert) => format!(
                "the node refused the TLS handshake ({alert:?}): it did not accept the client \
                 certificate {} (--cert); is it issued by the node's cluster CA, its [tls] ca?",
                files.cert.display()
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "the node does not speak TLS there: if its [http] has no client_certs = true, \
                 use http://"
                    .to_string()
            }
            other => format!("TLS failed: {other}"),
        };
        CliError::Other(format!("cannot query {url}: {said}"))
    }

    /// True if the URL's host is an IP address (not a name).
    fn host_is_ip(&self) -> bool {
        let authority = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, rest)| rest);
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok()
    }

    /// The error for a 404 of `path` from a node that does not run the
    /// sample app `app` (its routes are not mounted).
    pub fn no_app(&self, path: &str, app: &str) -> CliError {
        CliError::Other(format!(
            "{} has no {path} route: is the {app} app running there ([apps.{app}])?",
            self.base
        ))
    }

    /// The error for a refusal `a` of `path`.
    pub fn refused(&self, path: &str, a: &Answer) -> CliError {
        let said = a.body["error"].as_str().unwrap_or("no error text");
        let hint = match a.status {
            401 if self.token.is_none() => " (the node wants a token: pass --token)",
            401 => " (is --token the node's [http] token?)",
            _ => "",
        };
        CliError::Other(format!(
            "{}{path} answered {}: {said}{hint}",
            self.base, a.status
        ))
    }
}

/// Wraps the TCP connection of an `https://` request in TLS with the
/// client config of [`troupe::http::tls::client_config`].
#[derive(Debug)]
struct ClusterTls {
    config: Arc<rustls::ClientConfig>,
}

impl<In: Transport> Connector<In> for ClusterTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name or IP address: {e}"),
            ))
        })?;
        let conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        let mut stream = StreamOwned::new(conn, sock);
        stream.conn.complete_io(&mut stream.sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport { buffers, stream })))
    }
}

/// A TLS connection for ureq (as ureq's own rustls transport does it).
struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        use std::io::Write;
        self.stream.sock.set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        use std::io::Read;
        self.stream.sock.set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.sock.get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_base_urls_are_taken_and_https_wants_certificates() {
        let t = Duration::from_secs(1);
        let c = NodeClient::new("http://127.0.0.1:8080/", None, t).expect("valid");
        assert_eq!(c.url(), "http://127.0.0.1:8080");
        for bad in [
            "127.0.0.1:8080",
            "ftp://h:1",
            "http://",
            "http://h:1/v1",
            "https://h:1/v1",
        ] {
            let err = NodeClient::new(bad, None, t).err().expect(bad).to_string();
            assert!(err.contains("http://HOST:PORT"), "{bad}: {err}");
        }
        let err = NodeClient::new("https://127.0.0.1:8443", None, t)
            .err()
            .expect("no certificates")
            .to_string();
        assert!(
            err.contains("--ca, --cert and --key") && err.contains("client_certs"),
            "{err}"
        );
        let tls = ClientTls {
            files: ClientTlsFiles {
                ca: "ca.pem".into(),
                cert: "ops.pem".into(),
                key: "ops.key".into(),
            },
            server_name: None,
        };
        let err = NodeClient::with_tls("http://127.0.0.1:8080", None, Some(tls), t)
            .err()
            .expect("certificates for plain HTTP")
            .to_string();
        assert!(err.contains("plain HTTP"), "{err}");
    }

    #[test]
    fn a_node_that_is_not_there_is_named() {
        // A port nothing listens on: taken and released at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let c = NodeClient::new(&url, None, Duration::from_secs(5)).expect("valid");
        let err = c.status().expect_err("nothing there").to_string();
        assert!(
            err.contains(&format!("cannot reach {url}/v1/status")) && err.contains("[http]"),
            "{err}"
        );
    }
}
