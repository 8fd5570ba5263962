//! `troupe bank transfer|accounts`: a client of the bank app's routes
//! (`troupe::sample` `bank`) on a node's HTTP endpoint.
//!
//! ```sh
//! troupe bank transfer --node http://127.0.0.1:8080 acct-1 acct-2 50
//! troupe bank accounts --node http://127.0.0.1:8080
//! ```
//!
//! A committed transfer prints its id and exits 0; an aborted one prints
//! its id and reason and exits non-zero, as does an unknown outcome (the
//! node's answer is quoted).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

use crate::cli::{CliError, EndpointArgs};
use crate::inspect::client;

/// `POST /v1/bank/transfer`: the line to print, or why it did not commit.
pub fn transfer_command(
    endpoint: &EndpointArgs,
    from: &str,
    to: &str,
    amount: u64,
) -> Result<String, CliError> {
    let client = client(endpoint)?;
    let path = "/v1/bank/transfer";
    let a = client.post_json(path, &json!({"from": from, "to": to, "amount": amount}))?;
    let tx = a.body["tx"].as_str().unwrap_or("?");
    match a.status {
        200 => Ok(format!(
            "transfer {tx} committed: {amount} from {from} to {to}\n"
        )),
        409 => Err(CliError::Other(format!(
            "transfer {tx} aborted: {}",
            a.body["reason"].as_str().unwrap_or("no reason given")
        ))),
        404 => Err(client.no_app(path, "bank")),
        _ => Err(client.refused(path, &a)),
    }
}

/// `GET /v1/bank/accounts`, as a table.
pub fn accounts_command(endpoint: &EndpointArgs) -> Result<String, CliError> {
    let client = client(endpoint)?;
    let path = "/v1/bank/accounts";
    let a = client.get(path)?;
    if a.status == 404 {
        return Err(client.no_app(path, "bank"));
    }
    if a.status != 200 {
        return Err(client.refused(path, &a));
    }
    let accounts: BTreeMap<String, u64> = serde_json::from_value(a.body["accounts"].clone())
        .map_err(|e| {
            CliError::Other(format!(
                "{}{path}: not a list of accounts: {e}",
                client.url()
            ))
        })?;
    let total = a.body["total"].as_u64().unwrap_or_default();
    Ok(format_accounts(&accounts, total))
}

/// One line per account (in numeric order), then the total.
pub fn format_accounts(accounts: &BTreeMap<String, u64>, total: u64) -> String {
    let mut rows: Vec<(&String, &u64)> = accounts.iter().collect();
    rows.sort_by_key(|(a, _)| {
        let n: Option<u64> = a.strip_prefix("acct-").and_then(|n| n.parse().ok());
        (n.unwrap_or(u64::MAX), a.to_string())
    });
    let width = rows.iter().map(|(a, _)| a.len()).max().unwrap_or(0).max(5);
    let mut out = String::new();
    for (a, b) in rows {
        let _ = writeln!(out, "{a:<width$}  {b:>12}");
    }
    let _ = writeln!(out, "{:<width$}  {total:>12}", "total");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_listed_in_numeric_order_with_the_total() {
        let accounts: BTreeMap<String, u64> = [("acct-10", 5), ("acct-2", 7), ("acct-0", 1000)]
            .map(|(a, b)| (a.to_string(), b))
            .into_iter()
            .collect();
        assert_eq!(
            format_accounts(&accounts, 1012),
            "acct-0           1000\nacct-2              7\nacct-10             5\ntotal            1012\n"
        );
    }
}
