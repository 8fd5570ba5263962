//! `troupe trace shiviz FILE... [-o out.log]`: JSON-lines traces as a log
//! that ShiViz (<https://bestchai.bitbucket.io/shiviz/>, a space-time
//! diagram viewer of distributed executions) reads.
//!
//! ShiViz takes a text log and a regular expression with the named groups
//! `event`, `host` and `clock`; a file opened in ShiViz starts with that
//! expression on its first line and the multiple-executions delimiter on
//! its second (empty here: one execution). Each event is two lines, the
//! event's text, then its host and its vector clock as a JSON object of
//! host -> counter, which is what ShiViz's default expression
//! `(?<event>.*)\n(?<host>\S*) (?<clock>{.*})` reads:
//!
//! ```text
//! (?<event>.*)\n(?<host>\S*) (?<clock>{.*})
//!
//! send tell troupe.fd to n2 #7 (96 bytes) t=1.5ms
//! n1 {"n1":3}
//! deliver tell troupe.fd from n1 #7 t=2.1ms
//! n2 {"n1":3,"n2":5}
//! ```
//!
//! ShiViz orders events by their clocks only, and checks them: each
//! host's own entry counts its events from 1, one by one, and an event's
//! other entries name known hosts within their counts. The clocks here are
//! computed from the trace (whatever stamps the messages carried): an
//! event's clock is its lane predecessor's merged, for a delivery, with its
//! send's, its own entry incremented (see
//! [`crate::trace_graph::Graph::vector_clocks`]). Drops are not events of
//! the receiver (it learnt nothing): the send's text says the frame was
//! lost. Host names are the node names with whitespace replaced by `_`
//! (the expression's `\S*`); zero entries are left out, as ShiViz does.

use crate::trace_graph::{Graph, Kind};

/// ShiViz's default parser expression, the first line of the file.
pub const REGEX: &str = r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})";

/// The ShiViz log of `graph`, and how many events it has.
pub fn render(graph: &Graph) -> (String, usize) {
    let hosts: Vec<String> = graph
        .nodes
        .iter()
        .map(|n| {
            let h: String = n
                .chars()
                .map(|c| if c.is_whitespace() { '_' } else { c })
                .collect();
            if h.is_empty() {
                "_".to_string()
            } else {
                h
            }
        })
        .collect();
    let keep = |e: &crate::trace_graph::Event| e.kind != Kind::Drop;
    let clocks = graph.vector_clocks(keep);
    let mut out = String::new();
    out.push_str(REGEX);
    out.push_str("\n\n");
    let mut count = 0;
    for &i in &graph.order {
        let e = &graph.events[i];
        if !keep(e) {
            continue;
        }
        count += 1;
        let mut text = match e.kind {
            Kind::Send => {
                let mut t = format!(
                    "send {} {} to {} #{} ({} bytes)",
                    e.msg_kind().unwrap_or(""),
                    e.tag().unwrap_or(""),
                    e.peer().unwrap_or(""),
                    e.seq().unwrap_or(0),
                    e.fields.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0)
                );
                // A model checker's trace has the message itself.
                if let Some(msg) = e.fields.get("msg").and_then(|m| m.as_str()) {
                    t.push_str(&format!(": {msg}"));
                }
                for &d in &graph.ends_of[i] {
                    let end = &graph.events[d];
                    if end.kind == Kind::Drop {
                        let reason = end
                            .fields
                            .get("reason")
                            .and_then(|r| r.as_str())
                            .unwrap_or("");
                        t.push_str(&format!(" LOST ({reason})"));
                    }
                }
                t
            }
            Kind::Deliver => {
                let send = graph.send_of[i].map(|s| &graph.events[s]);
                format!(
                    "deliver {} {} from {} #{}{}",
                    send.and_then(|s| s.msg_kind()).unwrap_or(""),
                    send.and_then(|s| s.tag()).unwrap_or(""),
                    e.peer().unwrap_or(""),
                    e.seq().unwrap_or(0),
                    if send.is_none() {
                        " (its send is not in the trace)"
                    } else {
                        ""
                    }
                )
            }
            _ => e.label(),
        };
        text.push_str(&format!(" t={}us", e.t_us));
        // One line per event text (`.` does not match a newline).
        let text: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        out.push_str(&text);
        out.push('\n');
        out.push_str(&hosts[e.lane]);
        out.push(' ');
        let mut clock = serde_json::Map::new();
        for (lane, &count) in clocks[i].iter().enumerate() {
            if count > 0 {
                clock.insert(hosts[lane].clone(), count.into());
            }
        }
        out.push_str(&serde_json::Value::Object(clock).to_string());
        out.push('\n');
    }
    (out, count)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;

    /// One parsed ShiViz event: host, clock, text.
    type Parsed = (String, HashMap<String, u64>, String);

    /// Reads a ShiViz log as ShiViz's default expression does: the first
    /// two lines (expression, delimiter), then event text / host and clock.
    fn parse(log: &str) -> Vec<Parsed> {
        let mut lines = log.lines();
        assert_eq!(lines.next(), Some(REGEX));
        assert_eq!(lines.next(), Some(""));
        let rest: Vec<&str> = lines.collect();
        assert_eq!(rest.len() % 2, 0, "event and clock lines in pairs");
        rest.chunks(2)
            .map(|p| {
                let (host, clock) = p[1].split_once(' ').expect("host clock");
                assert!(!host.is_empty() && !host.contains(char::is_whitespace));
                let clock: HashMap<String, u64> = serde_json::from_str(clock).expect("JSON clock");
                (host.to_string(), clock, p[0].to_string())
            })
            .collect()
    }

    /// What ShiViz checks, and what a happened-before needs: each host's
    /// own entry counts its events 1, 2, 3...; no entry names an unknown
    /// host or exceeds that host's events; along a host the clock never
    /// goes down; and a delivery's clock covers its send's (matched by the
    /// texts: `send .. to B #seq` at A, `deliver .. from A #seq` at B).
    fn check(events: &[Parsed]) {
        let mut own: HashMap<&str, u64> = HashMap::new();
        let mut last: HashMap<&str, &HashMap<String, u64>> = HashMap::new();
        let mut sends: HashMap<(String, String, String), &HashMap<String, u64>> = HashMap::new();
        let between = |text: &str, a: &str, b: &str| -> Option<String> {
            let start = text.find(a)? + a.len();
            let end = start + text[start..].find(b)?;
            Some(text[start..end].replace(char::is_whitespace, "_"))
        };
        let seq = |text: &str| between(text, " #", " ");
        let mut deliveries = 0;
        for (host, clock, text) in events {
            let n = own.entry(host).or_insert(0);
            *n += 1;
            assert_eq!(
                clock.get(host).copied(),
                Some(*n),
                "{host}'s own entry counts its events: {clock:?}"
            );
            if let Some(prev) = last.get(host.as_str()) {
                for (h, c) in prev.iter() {
                    assert!(
                        clock.get(h).copied().unwrap_or(0) >= *c,
                        "{host}'s clock went down"
                    );
                }
            }
            last.insert(host, clock);
            if text.starts_with("send ") {
                let to = between(text, " to ", " #").expect("send names its receiver");
                sends.insert((host.clone(), to, seq(text).expect("seq")), clock);
            }
            if text.starts_with("deliver ") {
                let from = between(text, " from ", " #").expect("delivery names its sender");
                let key = (from, host.clone(), seq(text).expect("seq"));
                let sent = sends
                    .get(&key)
                    .unwrap_or_else(|| panic!("{text}: no send before it"));
                for (h, c) in sent.iter() {
                    assert!(
                        clock.get(h).copied().unwrap_or(0) >= *c,
                        "{text}: {clock:?} does not cover its send's {sent:?}"
                    );
                }
                deliveries += 1;
            }
        }
        for (_, clock, _) in events {
            for (h, c) in clock {
                assert!(
                    own.get(h.as_str()).is_some_and(|n| c <= n),
                    "entry {h}={c} out of range"
                );
            }
        }
        assert!(deliveries > 0 || !events.iter().any(|e| e.2.starts_with("deliver ")));
    }

    fn line(t: u64, node: &str, rest: &str) -> String {
        format!("{{\"t_us\":{t},\"node\":\"{node}\",{rest}}}\n")
    }

    #[test]
    fn clocks_are_a_happened_before_shiviz_accepts() {
        // a sends to b twice (one lost), b answers, c hears from b.
        let trace = line(
            0,
            "a",
            r#""ev":"send","to":"b","seq":1,"bytes":5,"kind":"tell","tag":"x""#,
        ) + &line(
            1,
            "a",
            r#""ev":"send","to":"b","seq":2,"bytes":5,"kind":"tell","tag":"x""#,
        ) + &line(1, "b", r#""ev":"drop","from":"a","seq":1,"reason":"loss""#)
            + &line(2, "b", r#""ev":"timer","name":"fd:Tick""#)
            + &line(3, "b", r#""ev":"deliver","from":"a","seq":2"#)
            + &line(
                4,
                "b",
                r#""ev":"send","to":"a","seq":3,"bytes":5,"kind":"reply","tag":"""#,
            )
            + &line(
                4,
                "b",
                r#""ev":"send","to":"c node","seq":4,"bytes":5,"kind":"tell","tag":"y""#,
            )
            + &line(5, "a", r#""ev":"deliver","from":"b","seq":3"#)
            + &line(6, "c node", r#""ev":"deliver","from":"b","seq":4"#)
            + &line(7, "c node", r#""ev":"crash""#);
        let g = Graph::from_texts(&[(PathBuf::from("t"), trace)]).unwrap();
        let (log, n) = render(&g);
        let events = parse(&log);
        assert_eq!(n, 9, "every event but the drop");
        assert_eq!(events.len(), 9);
        check(&events);
        let find = |text: &str| {
            events
                .iter()
                .find(|e| e.2.starts_with(text))
                .unwrap_or_else(|| panic!("no {text:?} in {log}"))
        };
        // The lost frame is said on its send.
        assert!(find("send tell x to b #1").2.contains("LOST (loss)"));
        // A delivery covers its send: b's delivery of a#2 knows a's 2 events.
        let d = find("deliver tell x from a #2");
        assert_eq!(d.1["a"], 2);
        assert_eq!(d.1["b"], 2);
        // Transitively: c knows a's events through b.
        let c = find("deliver tell y from b #4");
        assert_eq!(c.0, "c_node");
        assert_eq!((c.1["a"], c.1["b"], c.1["c_node"]), (2, 4, 1));
        // a's delivery of the reply: after b's send of it.
        let r = find("deliver reply  from b #3");
        assert_eq!((r.1["a"], r.1["b"]), (3, 3));
    }

    /// The check fails on a delivery whose clock does not cover its send's.
    #[test]
    #[should_panic(expected = "does not cover its send")]
    fn the_check_refuses_a_delivery_before_its_send() {
        let log = format!(
            "{REGEX}\n\nsend tell x to b #1 (5 bytes) t=0us\na {{\"a\":1}}\ndeliver tell x from a #1 t=1us\nb {{\"b\":1}}\n"
        );
        check(&parse(&log));
    }

    /// The check above fails on clocks that are not a happened-before
    /// (so it can fail): a host's own entry skipping a number.
    #[test]
    #[should_panic(expected = "own entry counts its events")]
    fn the_check_refuses_a_skipped_count() {
        let log = format!("{REGEX}\n\nx\na {{\"a\":1}}\ny\na {{\"a\":3}}\n");
        check(&parse(&log));
    }
}
