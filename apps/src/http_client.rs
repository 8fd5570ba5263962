//! A small blocking client of a node's HTTP endpoint (`troupe::http`), for
//! `troupe status`, `troupe tree` and `troupe cluster`.
//!
//! Every failure is a [`CliError`] that names the URL and says what to
//! check: the node does not answer (is it running, with `[http]`?), it
//! refused the token (`--token`), or it answered an error (its `error`
//! text is quoted).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use troupe::http::StatusReport;

use crate::cli::CliError;

/// A node's endpoint, by its base URL (`http://127.0.0.1:8080`).
#[derive(Clone)]
pub struct NodeClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// What the node answered: its status code and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body, parsed as JSON (`Value::Null` if it was not JSON).
    pub body: Value,
}

impl NodeClient {
    /// A client of the node at `url` (`http://host:port`, a trailing `/`
    /// allowed), sending `token` as a bearer token if given, giving up on a
    /// request after `timeout`.
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Result<Self, CliError> {
        let base = url.trim_end_matches('/').to_string();
        let rest = base.strip_prefix("http://").ok_or_else(|| {
            CliError::Other(format!(
                "--node {url:?}: expected the node's HTTP endpoint as http://HOST:PORT \
                 (its [http] listen address)"
            ))
        })?;
        if rest.is_empty() || rest.contains('/') {
            return Err(CliError::Other(format!(
                "--node {url:?}: expected http://HOST:PORT, without a path"
            )));
        }
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(timeout))
                .build(),
        );
        Ok(Self { base, token, agent })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET path`, whatever the status code.
    pub fn get(&self, path: &str) -> Result<Answer, CliError> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let res = req.call().map_err(|e| self.unreachable(path, e))?;
        Self::answer(res).map_err(|e| self.unreachable(path, e))
    }

    /// `POST path` with a JSON body, whatever the status code.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Answer, CliError> {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let res = req
            .content_type("application/json")
            .send(body.to_string())
            .map_err(|e| self.unreachable(path, e))?;
        Self::answer(res).map_err(|e| self.unreachable(path, e))
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
        let text = res.body_mut().read_to_string()?;
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    fn unreachable(&self, path: &str, e: ureq::Error) -> CliError {
        CliError::Other(format!(
            "cannot reach {}{path}: {e} (is the node running, with [http] listening there?)",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_base_urls_are_taken() {
        let t = Duration::from_secs(1);
        let c = NodeClient::new("http://127.0.0.1:8080/", None, t).expect("valid");
        assert_eq!(c.url(), "http://127.0.0.1:8080");
        for bad in [
            "127.0.0.1:8080",
            "https://127.0.0.1:8080",
            "http://",
            "http://h:1/v1",
        ] {
            let err = NodeClient::new(bad, None, t).err().expect(bad).to_string();
            assert!(err.contains("http://HOST:PORT"), "{bad}: {err}");
        }
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
