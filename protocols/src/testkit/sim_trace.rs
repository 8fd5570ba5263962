//! A [`super::Sim`] run written as the framework's JSON-lines trace
//! (`troupe_framework::trace`): the same `send` / `deliver` / `drop` /
//! `timer` / `crash` / `restart` / `note` lines a `SimCluster` or a node's
//! `[trace] file` holds, so the tools that read those (`troupe trace
//! view`, `troupe trace check`) read a sans-IO simulation's run too — the
//! model checker writes its counterexamples this way.
//!
//! Each message sent gets a number (`seq`, from 1, per run); its `deliver`
//! and `drop` lines carry the sender and that number, so a reader pairs
//! them; a duplicated message is delivered twice under one number. `send`
//! lines also carry the message itself (`"msg"`, its `Debug` form) and
//! name its type (`tag`: the enum variants its `Debug` form opens with,
//! kebab-case, dot-separated: `ThreePhase(Prepare {..})` is
//! `three-phase.prepare`). Protocol events are `note` lines.
//!
//! `t_us` is the simulation's clock, or a clock the caller sets
//! ([`SimTrace::set_clock`]): the model checker, whose clock stands
//! still, stamps each step's lines with the step's number in milliseconds.

use std::fmt::Debug;
use std::time::Duration;

use troupe_framework::trace::TraceEvent;

/// The lines recorded so far and the numbering of messages.
#[derive(Debug, Clone, Default)]
pub struct SimTrace {
    lines: Vec<String>,
    clock: Option<Duration>,
}

/// A member's name in the trace: its `Debug` form without quotes.
pub fn node_name<Id: Debug>(id: &Id) -> String {
    format!("{id:?}").trim_matches('"').to_string()
}

/// The message type of a `Debug` form: its leading variant names,
/// kebab-case and dot-separated (`Raft(AppendEntries { .. })` gives
/// `raft.append-entries`).
pub fn tag_of(debug: &str) -> String {
    let head: &str = debug
        .split([' ', '{', ')', ',', '['])
        .next()
        .unwrap_or_default();
    head.split('(')
        .take_while(|s| s.starts_with(|c: char| c.is_uppercase()))
        .map(kebab)
        .collect::<Vec<_>>()
        .join(".")
}

fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl SimTrace {
    /// Stamp lines with `at` from now on (`None`: the simulation's clock).
    pub fn set_clock(&mut self, at: Option<Duration>) {
        self.clock = at;
    }

    /// Take the lines recorded so far.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    /// Record `event` at `node`, at `now` unless a clock is set, with
    /// `extra` fields added to the line.
    pub fn record(
        &mut self,
        now: Duration,
        node: &str,
        event: TraceEvent,
        extra: Option<(&str, String)>,
    ) {
        let at = self.clock.unwrap_or(now);
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&event) else {
            return;
        };
        let mut line = serde_json::Map::new();
        line.insert(
            "t_us".into(),
            (at.as_micros().min(u128::from(u64::MAX)) as u64).into(),
        );
        line.insert("node".into(), node.into());
        line.extend(fields);
        if let Some((k, v)) = extra {
            line.insert(k.into(), v.into());
        }
        self.lines.push(serde_json::Value::Object(line).to_string());
    }

    /// A message `seq` from `from` to `to` left.
    pub fn send(&mut self, now: Duration, from: &str, to: &str, seq: u64, msg: &impl Debug) {
        let debug = format!("{msg:?}");
        let event = TraceEvent::Send {
            to: to.into(),
            seq,
            bytes: 0,
            kind: "tell".into(),
            tag: tag_of(&debug),
            lamport: None,
            vector: None,
            cause: None,
        };
        self.record(now, from, event, Some(("msg", debug)));
    }

    /// A note (a protocol event, a fault, a command) at `node`.
    pub fn note(&mut self, now: Duration, node: &str, text: String) {
        self.record(now, node, TraceEvent::Note { text }, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_the_leading_variants() {
        assert_eq!(
            tag_of("ThreePhase(Prepare { tx: 1, participants: [2, 3] })"),
            "three-phase.prepare"
        );
        assert_eq!(
            tag_of("Raft(AppendEntries { term: 1 })"),
            "raft.append-entries"
        );
        assert_eq!(tag_of("Ping"), "ping");
        assert_eq!(tag_of("Vote(3)"), "vote");
        assert_eq!(node_name(&"a".to_string()), "a");
        assert_eq!(node_name(&3u32), "3");
    }

    #[test]
    fn lines_are_the_framework_trace_format() {
        let mut t = SimTrace::default();
        t.send(Duration::from_millis(2), "1", "2", 7, &"Hello");
        t.set_clock(Some(Duration::from_millis(5)));
        t.note(Duration::ZERO, "2", "granted".into());
        let lines = t.take();
        let a: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(a["t_us"], 2000);
        assert_eq!(a["node"], "1");
        assert_eq!(a["ev"], "send");
        assert_eq!(a["to"], "2");
        assert_eq!(a["seq"], 7);
        assert_eq!(a["msg"], "\"Hello\"");
        let b: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            (b["t_us"].as_u64(), b["ev"].as_str()),
            (Some(5000), Some("note"))
        );
        assert!(t.take().is_empty());
    }
}
