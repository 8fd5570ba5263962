//! Checks a broadcast's order guarantees from a JSON-lines trace.
//!
//! Nodes that trace (see `troupe_framework::trace`), in the simulator or in
//! production, record each broadcast delivery as a line with `"ev":
//! "delivered"` (`TraceEvent::Delivered`): the instance (`protocol`), the
//! message's `origin` and `seq`, and for causal broadcast its `vector`
//! stamp. [`check_broadcast_trace`] reads such lines (other lines are
//! skipped; the traces of several nodes may be concatenated), takes each
//! node's deliveries of each instance in the order of the lines, and checks:
//!
//! - **no duplicate**: no node delivers a message twice;
//! - **causal order** (when asked): when node X delivers a message m from
//!   origin j stamped V, X has delivered before m at least `V[k]` messages
//!   of every other member k, and exactly `V[j] - 1` of j (FIFO: m is j's
//!   next message; `V[j]` must be m's `seq`). A delivery without a vector
//!   fails the check;
//! - **total order** (when asked): any two nodes deliver the messages they
//!   both delivered in the same relative order.
//!
//! A violation names the node, the messages and the line (from 1).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

/// A message, by origin and sequence number.
pub type TracedMsg = (String, u64);

/// What a checked trace held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceSummary {
    /// Lines read (blank lines not counted).
    pub lines: usize,
    /// Per broadcast instance, in name order.
    pub protocols: Vec<ProtocolSummary>,
    /// Causal order was checked.
    pub causal: bool,
    /// Total order was checked.
    pub total: bool,
}

/// The deliveries of one broadcast instance in a trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolSummary {
    /// The instance (`protocol` field).
    pub protocol: String,
    /// Nodes that delivered something.
    pub nodes: usize,
    /// Distinct messages delivered.
    pub messages: usize,
    /// Deliveries, all nodes together.
    pub deliveries: usize,
    /// Deliveries that carried a vector stamp.
    pub with_vector: usize,
}

impl TraceSummary {
    /// Deliveries of every instance.
    pub fn deliveries(&self) -> usize {
        self.protocols.iter().map(|p| p.deliveries).sum()
    }
}

impl fmt::Display for TraceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut checks = vec!["no duplicates"];
        if self.causal {
            checks.push("causal order");
        }
        if self.total {
            checks.push("total order");
        }
        writeln!(
            f,
            "{} lines, {} deliveries; checked: {}",
            self.lines,
            self.deliveries(),
            checks.join(", ")
        )?;
        for p in &self.protocols {
            writeln!(
                f,
                "  {}: {} nodes, {} messages, {} deliveries ({} with a vector)",
                p.protocol, p.nodes, p.messages, p.deliveries, p.with_vector
            )?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Line {
    node: String,
    ev: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    vector: Option<Vec<(String, u64)>>,
}

struct Delivery {
    line: usize,
    msg: TracedMsg,
    vector: Option<Vec<(String, u64)>>,
}

fn show(m: &TracedMsg) -> String {
    format!("{}#{}", m.0, m.1)
}

/// Check the broadcast deliveries in `jsonl` (see the module docs): no
/// duplicates always, causal order if `causal`, total order if `total`.
/// Returns what was checked, or the first violation found.
pub fn check_broadcast_trace(
    jsonl: &str,
    causal: bool,
    total: bool,
) -> Result<TraceSummary, String> {
    // protocol -> node -> deliveries in line order
    let mut by: BTreeMap<String, BTreeMap<String, Vec<Delivery>>> = BTreeMap::new();
    let mut lines = 0;
    for (i, text) in jsonl.lines().enumerate() {
        let line = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        lines += 1;
        let l: Line = serde_json::from_str(text)
            .map_err(|e| format!("line {line}: not a trace line: {e}"))?;
        if l.ev != "delivered" {
            continue;
        }
        let (Some(protocol), Some(origin), Some(seq @ 1..)) = (l.protocol, l.origin, l.seq) else {
            return Err(format!(
                "line {line}: a delivered line without protocol, origin or seq (from 1)"
            ));
        };
        by.entry(protocol)
            .or_default()
            .entry(l.node)
            .or_default()
            .push(Delivery {
                line,
                msg: (origin, seq),
                vector: l.vector,
            });
    }
    let mut summary = TraceSummary {
        lines,
        causal,
        total,
        protocols: Vec::new(),
    };
    for (protocol, nodes) in &by {
        let mut messages = HashSet::new();
        let mut p = ProtocolSummary {
            protocol: protocol.clone(),
            nodes: nodes.len(),
            ..Default::default()
        };
        for (node, ds) in nodes {
            check_node(protocol, node, ds, causal)?;
            p.deliveries += ds.len();
            p.with_vector += ds.iter().filter(|d| d.vector.is_some()).count();
            messages.extend(ds.iter().map(|d| &d.msg));
        }
        p.messages = messages.len();
        if total {
            check_total(protocol, nodes)?;
        }
        summary.protocols.push(p);
    }
    Ok(summary)
}

/// No duplicate at `node`, and causal order if asked.
fn check_node(protocol: &str, node: &str, ds: &[Delivery], causal: bool) -> Result<(), String> {
    let mut seen: HashMap<&TracedMsg, usize> = HashMap::new();
    let mut count: HashMap<&str, u64> = HashMap::new();
    for d in ds {
        if let Some(first) = seen.insert(&d.msg, d.line) {
            return Err(format!(
                "{protocol}: node {node} delivered {} twice (lines {first} and {})",
                show(&d.msg),
                d.line
            ));
        }
        let (origin, seq) = (&d.msg.0, d.msg.1);
        if causal {
            let Some(v) = &d.vector else {
                return Err(format!(
                    "{protocol}: line {}: node {node} delivered {} without a vector stamp",
                    d.line,
                    show(&d.msg)
                ));
            };
            let own = v.iter().find(|(k, _)| k == origin).map_or(0, |e| e.1);
            if own != seq {
                return Err(format!(
                    "{protocol}: line {}: {} carries vector entry {own} for its origin, not its seq",
                    d.line,
                    show(&d.msg)
                ));
            }
            let had = count.get(origin.as_str()).copied().unwrap_or(0);
            if had != seq - 1 {
                return Err(format!(
                    "{protocol}: line {}: FIFO violated: node {node} delivered {} after {had} messages of {origin} (expected {})",
                    d.line,
                    show(&d.msg),
                    seq - 1
                ));
            }
            for (k, n) in v {
                if k == origin {
                    continue;
                }
                let had = count.get(k.as_str()).copied().unwrap_or(0);
                if had < *n {
                    return Err(format!(
                        "{protocol}: line {}: causal order violated: node {node} delivered {} (vector {k}:{n}) having delivered only {had} messages of {k} (missing {})",
                        d.line,
                        show(&d.msg),
                        show(&(k.clone(), had + 1))
                    ));
                }
            }
        }
        *count.entry(origin.as_str()).or_default() += 1;
    }
    Ok(())
}

/// Every two nodes deliver their common messages in the same order.
fn check_total(protocol: &str, nodes: &BTreeMap<String, Vec<Delivery>>) -> Result<(), String> {
    let names: Vec<&String> = nodes.keys().collect();
    for (i, a) in names.iter().enumerate() {
        let da = &nodes[*a];
        let in_a: HashSet<&TracedMsg> = da.iter().map(|d| &d.msg).collect();
        for b in &names[i + 1..] {
            let db = &nodes[*b];
            let in_b: HashSet<&TracedMsg> = db.iter().map(|d| &d.msg).collect();
            let ca = da.iter().filter(|d| in_b.contains(&d.msg));
            let cb = db.iter().filter(|d| in_a.contains(&d.msg));
            for (x, y) in ca.zip(cb) {
                if x.msg != y.msg {
                    return Err(format!(
                        "{protocol}: total order violated: node {a} delivered {} (line {}) where node {b} delivered {} (line {}), among the messages both delivered",
                        show(&x.msg),
                        x.line,
                        show(&y.msg),
                        y.line
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(node: &str, origin: &str, seq: u64, vector: &[(&str, u64)]) -> String {
        let v = if vector.is_empty() {
            String::new()
        } else {
            let items: Vec<String> = vector
                .iter()
                .map(|(k, n)| format!("[\"{k}\",{n}]"))
                .collect();
            format!(",\"vector\":[{}]", items.join(","))
        };
        format!(
            "{{\"t_us\":0,\"node\":\"{node}\",\"ev\":\"delivered\",\"protocol\":\"broadcast.g\",\"origin\":\"{origin}\",\"seq\":{seq},\"index\":0{v},\"held_back\":false}}\n"
        )
    }

    /// A trace from a compact spec: whitespace-separated deliveries
    /// `node:origin#seq`, each optionally with a vector `@k=v,k=v`, and
    /// `noise` for a line that is not a delivery.
    fn trace(spec: &str) -> String {
        spec.split_whitespace()
            .map(|tok| {
                if tok == "noise" {
                    return noise();
                }
                let (head, vector) = tok.split_once('@').unwrap_or((tok, ""));
                let (node, rest) = head.split_once(':').expect("node:origin#seq");
                let (origin, seq) = rest.split_once('#').expect("origin#seq");
                let v: Vec<(&str, u64)> = vector
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(|e| {
                        let (k, n) = e.split_once('=').expect("k=v");
                        (k, n.parse().expect("a count"))
                    })
                    .collect();
                d(node, origin, seq.parse().expect("a seq"), &v)
            })
            .collect()
    }

    /// The checker refuses `t` (with `causal` / `total`), saying `says`;
    /// its message.
    fn refused(t: &str, causal: bool, total: bool, says: &str) -> String {
        let e = check_broadcast_trace(t, causal, total).unwrap_err();
        assert!(e.contains(says), "{e}\n  does not say: {says}");
        e
    }

    fn noise() -> String {
        "{\"t_us\":0,\"node\":\"n1\",\"ev\":\"send\",\"to\":\"n2\",\"seq\":1,\"bytes\":9,\"kind\":\"tell\",\"tag\":\"x\"}\n".into()
    }

    /// n1 broadcasts a; n2 delivers it then broadcasts b (which depends on
    /// a); n3 delivers a then b.
    fn causal_ok() -> String {
        trace("n1:n1#1@n1=1 noise n2:n1#1@n1=1 n2:n2#1@n1=1,n2=1 n3:n1#1@n1=1 n3:n2#1@n1=1,n2=1 n1:n2#1@n1=1,n2=1")
    }

    #[test]
    fn a_causal_trace_passes() {
        let s = check_broadcast_trace(&causal_ok(), true, true).unwrap();
        assert_eq!(s.lines, 7);
        assert_eq!(s.deliveries(), 6);
        assert_eq!(s.protocols.len(), 1);
        assert_eq!(s.protocols[0].messages, 2);
        assert_eq!(s.protocols[0].nodes, 3);
        assert_eq!(s.protocols[0].with_vector, 6);
        assert!(s.to_string().contains("causal order, total order"));
    }

    #[test]
    fn a_duplicate_fails() {
        let t = causal_ok() + &d("n3", "n1", 1, &[("n1", 1)]);
        refused(&t, false, false, "n3 delivered n1#1 twice (lines 5 and 8)");
    }

    #[test]
    fn a_missing_cause_fails() {
        // n3 delivers b before a, its cause.
        let t = trace("n1:n1#1@n1=1 n2:n1#1@n1=1 n2:n2#1@n1=1,n2=1 n3:n2#1@n1=1,n2=1 n3:n1#1@n1=1");
        let e = refused(
            &t,
            true,
            false,
            "line 4: causal order violated: node n3 delivered n2#1",
        );
        assert!(e.contains("missing n1#1"), "{e}");
        // Without the causal check it passes.
        check_broadcast_trace(&t, false, false).unwrap();
    }

    #[test]
    fn a_fifo_gap_fails() {
        let t = trace("n1:n1#1@n1=1 n1:n1#2@n1=2 n2:n1#2@n1=2");
        refused(
            &t,
            true,
            false,
            "line 3: FIFO violated: node n2 delivered n1#2",
        );
    }

    #[test]
    fn a_missing_vector_fails_the_causal_check() {
        let t = d("n1", "n1", 1, &[]);
        refused(&t, true, false, "without a vector stamp");
        check_broadcast_trace(&t, false, true).unwrap();
    }

    #[test]
    fn total_order() {
        // Same order of the common messages; n3 missed one: fine.
        let ok = trace("n1:n1#1 n1:n2#1 n1:n3#1 n2:n1#1 n2:n3#1 n3:n2#1 n3:n3#1");
        check_broadcast_trace(&ok, false, true).unwrap();
        // n3 swaps n2#1 and n3#1.
        let bad = trace("n1:n1#1 n1:n2#1 n1:n3#1 n3:n3#1 n3:n2#1");
        refused(
            &bad,
            false,
            true,
            "node n1 delivered n2#1 (line 2) where node n3 delivered n3#1 (line 4)",
        );
        check_broadcast_trace(&bad, true, false).unwrap_err(); // no vectors
        check_broadcast_trace(&bad, false, false).unwrap();
    }

    #[test]
    fn protocols_are_checked_apart_and_bad_lines_are_named() {
        let other = d("n2", "n1", 1, &[]).replace("broadcast.g", "broadcast.h");
        let t = d("n1", "n1", 1, &[]) + &other;
        let s = check_broadcast_trace(&t, false, true).unwrap();
        assert_eq!(s.protocols.len(), 2);
        let e = check_broadcast_trace("\nnot json\n", false, false).unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }
}
