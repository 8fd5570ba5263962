//! `troupe kv get|put|cas|del|cluster`: a client of the kv app's routes
//! (`troupe::sample` `kv`) on a node's HTTP endpoint. Any node serves any
//! request (a node that does not lead forwards it to the leader).
//!
//! ```sh
//! troupe kv put --node http://127.0.0.1:8080 color blue      # revision 5
//! troupe kv get --node http://127.0.0.1:8080 color           # blue
//! troupe kv cas --node http://127.0.0.1:8080 color green --expected blue
//! troupe kv cas --node http://127.0.0.1:8080 shape round --absent
//! troupe kv del --node http://127.0.0.1:8080 color
//! troupe kv cluster --node http://127.0.0.1:8080             # leader, term, match indexes
//! ```
//!
//! `get` prints the value (`--stale`: this node's replica, possibly behind)
//! and exits 1 when the key is absent; `put`, `cas` and `del` print the
//! revision of their write. A compare-and-set that finds another value
//! exits 1 naming it. A write that was certainly not applied (503) says so
//! and can be sent again; one whose outcome is unknown (504, a timeout, a
//! lost connection) says that it may or may not have been applied:
//! `--idempotency-key CLIENT:SEQ` (the `Idempotency-Key` header) makes a
//! write sent again with the same key apply at most once.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::cli::{CliError, EndpointArgs};
use crate::http_client::{Answer, NodeClient};
use crate::inspect::client;
use crate::sample::{parse_session, IDEMPOTENCY_KEY};

/// `troupe kv ...`.
#[derive(Debug, clap::Subcommand)]
pub enum KvCliAction {
    /// Print KEY's value (GET URL/v1/kv/KEY): linearizable, answered by
    /// the leader; exits 1 when the key is absent.
    Get {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The key.
        #[arg(value_name = "KEY")]
        kv_key: String,
        /// Read the node's own replica (possibly stale) instead.
        #[arg(long)]
        stale: bool,
    },
    /// Set KEY to VALUE (PUT URL/v1/kv/KEY); prints the revision.
    Put {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The key.
        #[arg(value_name = "KEY")]
        kv_key: String,
        /// The value.
        value: String,
        /// Apply at most once under this client session: CLIENT:SEQ.
        #[arg(long, value_name = "CLIENT:SEQ")]
        idempotency_key: Option<String>,
    },
    /// Set KEY to VALUE if its value is --expected (or it is --absent)
    /// (POST URL/v1/kv/KEY/cas); exits 1 naming the value found otherwise.
    Cas {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The key.
        #[arg(value_name = "KEY")]
        kv_key: String,
        /// The new value.
        value: String,
        /// The value KEY must have.
        #[arg(long, required_unless_present = "absent", conflicts_with = "absent")]
        expected: Option<String>,
        /// KEY must be absent.
        #[arg(long)]
        absent: bool,
        /// Apply at most once under this client session: CLIENT:SEQ.
        #[arg(long, value_name = "CLIENT:SEQ")]
        idempotency_key: Option<String>,
    },
    /// Remove KEY (DELETE URL/v1/kv/KEY); prints the revision.
    Del {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The key.
        #[arg(value_name = "KEY")]
        kv_key: String,
        /// Apply at most once under this client session: CLIENT:SEQ.
        #[arg(long, value_name = "CLIENT:SEQ")]
        idempotency_key: Option<String>,
    },
    /// The group as its leader sees it (GET URL/v1/kv/_cluster): leader,
    /// term, commit index, each member's match index.
    Cluster {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

/// Run a `troupe kv` command: what to print, or why it failed.
pub fn run(command: KvCliAction) -> Result<String, CliError> {
    match command {
        KvCliAction::Get {
            endpoint,
            kv_key: key,
            stale,
        } => {
            let query = if stale { "?consistency=stale" } else { "" };
            let (c, path) = (client(&endpoint)?, format!("{}{query}", key_path(&key)));
            let a = c.get(&path)?;
            match a.status {
                200 => Ok(format!(
                    "{}\n",
                    a.body["value"].as_str().unwrap_or_default()
                )),
                404 if a.body.get("key").is_some() => {
                    Err(CliError::Other(format!("{key:?} is absent")))
                }
                _ => Err(failed(&c, &path, &a)),
            }
        }
        KvCliAction::Put {
            endpoint,
            kv_key: key,
            value,
            idempotency_key,
        } => write(
            &endpoint,
            "PUT",
            key_path(&key),
            Some(json!({ "value": value })),
            idempotency_key,
        ),
        KvCliAction::Cas {
            endpoint,
            kv_key: key,
            value,
            expected,
            absent: _,
            idempotency_key,
        } => write(
            &endpoint,
            "POST",
            format!("{}/cas", key_path(&key)),
            Some(json!({ "expected": expected, "value": value })),
            idempotency_key,
        ),
        KvCliAction::Del {
            endpoint,
            kv_key: key,
            idempotency_key,
        } => write(&endpoint, "DELETE", key_path(&key), None, idempotency_key),
        KvCliAction::Cluster { endpoint } => {
            let c = client(&endpoint)?;
            let path = "/v1/kv/_cluster";
            let a = c.get(path)?;
            match a.status {
                200 => Ok(format_cluster(&a.body)),
                _ => Err(failed(&c, path, &a)),
            }
        }
    }
}

/// A write: `revision N`, or why not.
fn write(
    endpoint: &EndpointArgs,
    method: &str,
    path: String,
    body: Option<Value>,
    idempotency_key: Option<String>,
) -> Result<String, CliError> {
    if let Some(k) = &idempotency_key {
        parse_session(k).map_err(|e| CliError::Other(format!("--idempotency-key {k:?}: {e}")))?;
    }
    let c = client(endpoint)?;
    let headers: Vec<(&str, &str)> = idempotency_key
        .as_deref()
        .map(|k| (IDEMPOTENCY_KEY, k))
        .into_iter()
        .collect();
    let body = body.map(|b| b.to_string());
    let a = match c.request(method, &path, body.as_deref(), &headers) {
        Ok(a) => a,
        Err(e) => {
            return Err(CliError::Other(format!(
                "{e}\noutcome unknown: the write may or may not have been applied{}",
                retry_hint(idempotency_key.is_some())
            )))
        }
    };
    match a.status {
        200 => Ok(format!(
            "revision {}\n",
            a.body["revision"].as_u64().unwrap_or_default()
        )),
        409 if a.body["error"] == "mismatch" => {
            Err(CliError::Other(match a.body["value"].as_str() {
                Some(v) => format!("mismatch: the value is {v:?}"),
                None => "mismatch: the key is absent".to_string(),
            }))
        }
        504 => Err(CliError::Other(format!(
            "{}\nthe write may or may not have been applied{}",
            a.body["error"].as_str().unwrap_or("outcome unknown"),
            retry_hint(idempotency_key.is_some())
        ))),
        _ => Err(failed(&c, &path, &a)),
    }
}

fn retry_hint(with_key: bool) -> &'static str {
    if with_key {
        ": send it again with the same --idempotency-key to apply it at most once"
    } else {
        " (with --idempotency-key CLIENT:SEQ, sending it again would apply it at most once)"
    }
}

/// Any other answer: a 503 (not applied: send it again), the route
/// missing, or the node's refusal quoted.
fn failed(c: &NodeClient, path: &str, a: &Answer) -> CliError {
    match a.status {
        503 => CliError::Other(format!(
            "{}: send it again{}",
            a.body["error"].as_str().unwrap_or("not applied"),
            a.retry_after
                .map(|s| format!(" (in {s} s)"))
                .unwrap_or_default()
        )),
        404 => c.no_app(path, "kv"),
        _ => c.refused(path, a),
    }
}

/// `/v1/kv/KEY`, KEY percent-encoded (all but letters, digits, `-._~`).
pub fn key_path(key: &str) -> String {
    let mut path = String::from("/v1/kv/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            path.push(b as char);
        } else {
            let _ = write!(path, "%{b:02X}");
        }
    }
    path
}

/// The `_cluster` answer as text: a summary line, then one line per member.
pub fn format_cluster(c: &Value) -> String {
    let mut out = format!(
        "leader {}  term {}  commit {}  applied {}  (answered by {})\n\nMEMBER      ROLE     MATCH\n",
        c["leader"].as_str().unwrap_or("none"),
        c["term"],
        c["commit"],
        c["applied"],
        c["answered_by"].as_str().unwrap_or("?")
    );
    for m in c["members"].as_array().into_iter().flatten() {
        let matched = m["match"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{:<10}  {:<7}  {matched:>5}",
            m["name"].as_str().unwrap_or("?"),
            m["role"].as_str().unwrap_or("?")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_into_the_path() {
        assert_eq!(key_path("color"), "/v1/kv/color");
        assert_eq!(key_path("a b/c?"), "/v1/kv/a%20b%2Fc%3F");
        assert_eq!(key_path("é"), "/v1/kv/%C3%A9");
    }

    #[test]
    fn the_cluster_prints_the_leader_and_each_match_index() {
        let c = json!({"leader": "node-1", "term": 3, "commit": 42, "applied": 41,
            "answered_by": "node-1", "role": "leader", "members": [
                {"name": "node-1", "role": "voter", "match": 42},
                {"name": "node-2", "role": "voter", "match": null}]});
        assert_eq!(
            format_cluster(&c),
            "leader node-1  term 3  commit 42  applied 41  (answered by node-1)\n\n\
             MEMBER      ROLE     MATCH\n\
             node-1      voter       42\n\
             node-2      voter        -\n"
        );
    }
}
