//! JSON-lines traces read as one execution: the events of every node, the
//! messages matched from send to delivery, and the happened-before order
//! (for `troupe trace view` and `troupe trace shiviz`).
//!
//! A trace is the JSON lines of `troupe::framework::trace` — from the
//! simulator (`SimNetwork::trace`, one file, virtual time), from nodes
//! (`[trace] file`, one file per node, wall-clock `t_us`), or from the
//! model checker (`troupe check --trace`, `Counterexample::to_json_lines`:
//! its step and violation lines, which have no `ev`, are skipped; the
//! events of each step follow it). Several files are read as one trace:
//!
//! - **Lanes.** Each node is a lane; its events keep the order of its lines
//!   (a node's own order is the one thing every source gets right). A node
//!   whose lines are spread over several files has them merged by `t_us`.
//! - **Messages.** A message is named by its sender and its `seq`: a
//!   `deliver` or `drop` line `{from, seq}` at node B matches the `send`
//!   line of node `from` with that `seq` (the simulator numbers frames
//!   network-wide, so `(from, seq)` is unique; a transport numbering per
//!   sender is unique per sender, and should the same `(from, seq)` come
//!   twice, e.g. a sender restarted and counting from 0 again, a delivery
//!   matches the last such send at or before its own `t_us`). A duplicated
//!   frame is one send with two deliveries.
//! - **Happened-before.** Each event happens after its lane predecessor,
//!   and a delivery after its send. [`Graph::order`] lists the events in
//!   an order that respects both (a topological order), and
//!   [`Graph::logical`] gives each event a Lamport-style position (its lane
//!   predecessor's + 1, at least its send's + 1): a layout in which no
//!   message goes backwards, whatever the nodes' clocks said. A drop is
//!   placed after its send too (it is the network's event, recorded at the
//!   receiver), but it is not a happened-before edge: the receiver learnt
//!   nothing. Inconsistent input (a delivery whose send comes after it in
//!   a cycle) cannot be ordered: such a delivery's edge is cut and counted
//!   ([`Graph::cut`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// What an event is (the trace line's `ev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A frame left the node.
    Send,
    /// A frame reached the node.
    Deliver,
    /// A frame to the node was lost.
    Drop,
    /// A protocol timer fired.
    Timer,
    /// The node crashed.
    Crash,
    /// The node restarted.
    Restart,
    /// Durable writes became durable.
    Sync,
    /// Something in the supervision tree.
    Supervision,
    /// A broadcast delivery to the application.
    Delivered,
    /// A free-form note.
    Note,
    /// An event kind this version does not know (drawn as a plain mark).
    Other,
}

impl Kind {
    fn parse(ev: &str) -> Self {
        match ev {
            "send" => Kind::Send,
            "deliver" => Kind::Deliver,
            "drop" => Kind::Drop,
            "timer" => Kind::Timer,
            "crash" => Kind::Crash,
            "restart" => Kind::Restart,
            "sync" => Kind::Sync,
            "supervision" => Kind::Supervision,
            "delivered" => Kind::Delivered,
            "note" => Kind::Note,
            _ => Kind::Other,
        }
    }

    /// The number the page's script knows this kind by.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// True for the events drawn as marks (everything but the ends of
    /// message arrows).
    pub fn is_mark(self) -> bool {
        !matches!(self, Kind::Send | Kind::Deliver | Kind::Drop)
    }
}

/// One trace line.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its node's lane (index into [`Graph::nodes`]).
    pub lane: usize,
    /// `t_us` as written (0 when absent).
    pub t_us: u64,
    /// What it is.
    pub kind: Kind,
    /// `ev` as written.
    pub ev: String,
    /// The line's fields.
    pub fields: Map<String, Value>,
    /// The line as written.
    pub line: String,
    /// Which file (index into the files read) and line (from 1).
    pub at: (usize, usize),
}

impl Event {
    fn str_field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// `seq` of a send, delivery or drop.
    pub fn seq(&self) -> Option<u64> {
        self.fields.get("seq").and_then(Value::as_u64)
    }

    /// The other end of a message: `to` of a send, `from` of a delivery or
    /// a drop.
    pub fn peer(&self) -> Option<&str> {
        match self.kind {
            Kind::Send => self.str_field("to"),
            Kind::Deliver | Kind::Drop => self.str_field("from"),
            _ => None,
        }
    }

    /// The message kind of a send (`tell`, `ask`, `reply`, `error`).
    pub fn msg_kind(&self) -> Option<&str> {
        self.str_field("kind")
    }

    /// The message type tag of a send.
    pub fn tag(&self) -> Option<&str> {
        self.str_field("tag")
    }

    /// The protocol a mark belongs to, for filters: a timer's name up to
    /// its `:`, a sync's or a broadcast delivery's protocol, a supervision
    /// event's path.
    pub fn protocol(&self) -> Option<String> {
        match self.kind {
            Kind::Timer => self
                .str_field("name")
                .map(|n| n.split(':').next().unwrap_or(n).to_string()),
            Kind::Sync | Kind::Delivered => self.str_field("protocol").map(str::to_string),
            Kind::Supervision => self.str_field("path").map(str::to_string),
            _ => None,
        }
    }

    /// A short text for a mark (what a legend or a log line says).
    pub fn label(&self) -> String {
        let s = |k: &str| self.str_field(k).unwrap_or("");
        let n = |k: &str| {
            self.fields
                .get(k)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        match self.kind {
            Kind::Send => format!(
                "send {} {} to {} #{}",
                s("kind"),
                s("tag"),
                s("to"),
                n("seq")
            ),
            Kind::Deliver => format!("deliver from {} #{}", s("from"), n("seq")),
            Kind::Drop => format!("drop from {} #{} ({})", s("from"), n("seq"), s("reason")),
            Kind::Timer => format!("timer {}", s("name")),
            Kind::Crash => "crash".to_string(),
            Kind::Restart => format!("restart {}", s("incarnation")),
            Kind::Sync => format!(
                "sync {} #{} ({} writes, group {})",
                s("protocol"),
                n("sync"),
                n("writes"),
                n("group")
            ),
            Kind::Supervision => {
                let path = s("path");
                let path = if path.is_empty() { "(root)" } else { path };
                format!("supervision {path}: {}", s("event"))
            }
            Kind::Delivered => format!(
                "delivered {} {}#{} (index {})",
                s("protocol"),
                s("origin"),
                n("seq"),
                n("index")
            ),
            Kind::Note => s("text").to_string(),
            Kind::Other => {
                let mut rest: Vec<String> = self
                    .fields
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "t_us" | "node" | "ev"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                rest.insert(0, self.ev.clone());
                rest.join(" ")
            }
        }
    }
}

/// A bad trace file: which file, which line, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("{file}: {error}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A line is not a trace line.
    #[error("{file}:{line}: {what}")]
    Line {
        /// The file.
        file: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// Nothing to draw.
    #[error("no trace events in {0}")]
    Empty(String),
}

/// Traces read as one execution (see the module docs).
#[derive(Debug, Clone)]
pub struct Graph {
    /// Node names, one per lane, in lane order (names compared with their
    /// numbers as numbers: n2 before n10).
    pub nodes: Vec<String>,
    /// Every event.
    pub events: Vec<Event>,
    /// Per lane, its events (indexes into `events`) in the node's order.
    pub lanes: Vec<Vec<usize>>,
    /// Per delivery or drop, the send it matches (`None`: not in the trace,
    /// or cut, see [`Graph::cut`]).
    pub send_of: Vec<Option<usize>>,
    /// Per send, its deliveries and drops, in lane order of the receiver.
    pub ends_of: Vec<Vec<usize>>,
    /// Every event once, each after its lane predecessor and after the send
    /// of a delivery or drop.
    pub order: Vec<usize>,
    /// Lamport-style position per event (from 1): above its lane
    /// predecessor's and above its send's.
    pub logical: Vec<u64>,
    /// Deliveries and drops whose match to a send had to be cut to order
    /// the events (inconsistent input).
    pub cut: usize,
    /// How many files were read.
    pub files: usize,
    /// Some were a model checker's counterexample (step lines): its clock
    /// counts steps, many events share one instant.
    pub model_checker: bool,
}

/// Reads a trace file, JSON lines or binary (`[trace] format = "binary"`),
/// as JSON lines. What a damaged binary file lost is said on standard
/// error, naming the file and the bytes.
pub fn read_text(f: &std::path::Path) -> Result<String, TraceError> {
    let d = troupe::framework::trace::read_jsonl(f).map_err(|error| TraceError::Read {
        file: f.to_path_buf(),
        error,
    })?;
    for what in &d.damaged {
        eprintln!("troupe: {}: {what}", f.display());
    }
    Ok(d.jsonl)
}

/// Reads `files` (JSON lines or binary traces) as one trace.
pub fn read_files(files: &[PathBuf]) -> Result<Graph, TraceError> {
    let mut texts = Vec::new();
    for f in files {
        texts.push((f.clone(), read_text(f)?));
    }
    let graph = Graph::from_texts(&texts)?;
    if graph.events.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(TraceError::Empty(names.join(", ")));
    }
    Ok(graph)
}

/// Compares names with their digit runs as numbers (`n2` < `n10`).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, xa), (db, xb)) in ca.iter().zip(cb.iter()) {
        let ord = if *da && *db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then(ta.cmp(tb))
        } else {
            xa.cmp(xb)
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then(a.cmp(b))
}

impl Graph {
    /// Reads trace texts (`(file name, JSON lines)`) as one trace.
    pub fn from_texts(texts: &[(PathBuf, String)]) -> Result<Graph, TraceError> {
        let mut parsed: Vec<(String, Event)> = Vec::new();
        let mut model_checker = false;
        for (fi, (file, text)) in texts.iter().enumerate() {
            for (li, raw) in text.lines().enumerate() {
                let line = raw.trim();
                if line.is_empty() {
                    continue;
                }
                let bad = |what: String| TraceError::Line {
                    file: file.clone(),
                    line: li + 1,
                    what,
                };
                let value: Value = serde_json::from_str(line)
                    .map_err(|e| bad(format!("not a JSON trace line: {e}")))?;
                let Value::Object(fields) = value else {
                    return Err(bad("not a JSON object".into()));
                };
                if fields.contains_key("model") && !fields.contains_key("ev") {
                    // A model checker's step or violation: its events are
                    // the trace lines around it.
                    model_checker = true;
                    continue;
                }
                let node = match fields.get("node") {
                    Some(Value::String(n)) => n.clone(),
                    _ => return Err(bad("no \"node\" (a trace line names its node)".into())),
                };
                let ev = match fields.get("ev") {
                    Some(Value::String(e)) => e.clone(),
                    _ => return Err(bad("no \"ev\" (a trace line says what happened)".into())),
                };
                let t_us = match fields.get("t_us") {
                    None => 0,
                    Some(v) => v.as_u64().ok_or_else(|| {
                        bad(format!("\"t_us\" is not a number of microseconds: {v}"))
                    })?,
                };
                let kind = Kind::parse(&ev);
                if matches!(kind, Kind::Send | Kind::Deliver | Kind::Drop) {
                    let peer = if kind == Kind::Send { "to" } else { "from" };
                    if !fields.get(peer).is_some_and(Value::is_string) {
                        return Err(bad(format!("a {ev} line needs \"{peer}\"")));
                    }
                    if !fields.get("seq").is_some_and(Value::is_u64) {
                        return Err(bad(format!("a {ev} line needs a numeric \"seq\"")));
                    }
                }
                parsed.push((
                    node,
                    Event {
                        lane: 0,
                        t_us,
                        kind,
                        ev,
                        fields,
                        line: line.to_string(),
                        at: (fi, li + 1),
                    },
                ));
            }
        }
        let mut nodes: Vec<String> = parsed.iter().map(|(n, _)| n.clone()).collect();
        // Lanes also for nodes only named as peers: a message to a node
        // whose own trace is missing still has somewhere to point.
        nodes.extend(
            parsed
                .iter()
                .filter_map(|(_, e)| e.peer().map(str::to_string)),
        );
        nodes.sort_by(|a, b| natural_cmp(a, b));
        nodes.dedup();
        let lane_of: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut events = Vec::with_capacity(parsed.len());
        for (node, mut e) in parsed {
            e.lane = lane_of[node.as_str()];
            events.push(e);
        }
        let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, e) in events.iter().enumerate() {
            lanes[e.lane].push(i);
        }
        for lane in &mut lanes {
            let first_file = lane.first().map(|&i| events[i].at.0);
            if lane.iter().any(|&i| Some(events[i].at.0) != first_file) {
                // One node in several files: merged by time (stable: each
                // file's own order kept for equal times).
                lane.sort_by_key(|&i| events[i].t_us);
            }
        }
        let mut g = Graph {
            nodes,
            send_of: vec![None; events.len()],
            ends_of: vec![Vec::new(); events.len()],
            order: Vec::with_capacity(events.len()),
            logical: vec![0; events.len()],
            events,
            lanes,
            cut: 0,
            files: texts.len(),
            model_checker,
        };
        g.match_messages(&lane_of_owned(&g.nodes));
        g.order_events();
        Ok(g)
    }

    fn match_messages(&mut self, lane_of: &HashMap<String, usize>) {
        // (sender lane, seq) -> its sends, in the sender's order.
        let mut sends: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
        for lane in &self.lanes {
            for &i in lane {
                let e = &self.events[i];
                if e.kind == Kind::Send {
                    if let Some(seq) = e.seq() {
                        sends.entry((e.lane, seq)).or_default().push(i);
                    }
                }
            }
        }
        for lane in 0..self.lanes.len() {
            for k in 0..self.lanes[lane].len() {
                let i = self.lanes[lane][k];
                let e = &self.events[i];
                if !matches!(e.kind, Kind::Deliver | Kind::Drop) {
                    continue;
                }
                let (Some(from), Some(seq)) = (e.peer().and_then(|p| lane_of.get(p)), e.seq())
                else {
                    continue;
                };
                let Some(candidates) = sends.get(&(*from, seq)) else {
                    continue;
                };
                let to_me =
                    |&&s: &&usize| self.events[s].peer() == Some(self.nodes[e.lane].as_str());
                let matching: Vec<&usize> = candidates.iter().filter(to_me).collect();
                let chosen = match matching.as_slice() {
                    [] => None,
                    [one] => Some(**one),
                    many => many
                        .iter()
                        .rev()
                        .find(|&&&s| self.events[s].t_us <= e.t_us)
                        .or(many.first())
                        .map(|s| **s),
                };
                if let Some(s) = chosen {
                    self.send_of[i] = Some(s);
                    self.ends_of[s].push(i);
                }
            }
        }
    }

    /// The topological order and the logical positions (module docs).
    fn order_events(&mut self) {
        let n = self.events.len();
        let mut done = vec![false; n];
        let mut cursor = vec![0usize; self.lanes.len()];
        let mut ready: VecDeque<usize> = (0..self.lanes.len()).collect();
        let mut waiting: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut last = vec![0u64; self.lanes.len()];
        while self.order.len() < n {
            let Some(lane) = ready.pop_front() else {
                // Every unfinished lane waits for a send of another: follow
                // the waits from one to a lane met twice (on a cycle) and
                // cut its delivery's edge.
                let Some(mut l) = (0..self.lanes.len()).find(|&l| cursor[l] < self.lanes[l].len())
                else {
                    break;
                };
                let mut seen = vec![false; self.lanes.len()];
                while !seen[l] {
                    seen[l] = true;
                    let head = self.lanes[l][cursor[l]];
                    match self.send_of[head] {
                        Some(s) => l = self.events[s].lane,
                        None => break,
                    }
                }
                let i = self.lanes[l][cursor[l]];
                if let Some(s) = self.send_of[i].take() {
                    self.ends_of[s].retain(|&d| d != i);
                    self.cut += 1;
                }
                ready.push_back(l);
                continue;
            };
            while cursor[lane] < self.lanes[lane].len() {
                let i = self.lanes[lane][cursor[lane]];
                if done[i] {
                    cursor[lane] += 1;
                    continue;
                }
                let mut pos = last[lane] + 1;
                if let Some(s) = self.send_of[i] {
                    if !done[s] {
                        waiting.entry(s).or_default().push(lane);
                        break;
                    }
                    pos = pos.max(self.logical[s] + 1);
                }
                self.logical[i] = pos;
                last[lane] = pos;
                done[i] = true;
                self.order.push(i);
                cursor[lane] += 1;
                if let Some(lanes) = waiting.remove(&i) {
                    ready.extend(lanes);
                }
            }
        }
    }

    /// Deliveries and drops matched to their send: the message arrows.
    pub fn arrows(&self) -> usize {
        self.send_of.iter().filter(|s| s.is_some()).count()
    }

    /// True when the times are wall-clock times of several nodes (several
    /// files with Unix-epoch microseconds): they are not comparable across
    /// lanes, and the logical layout is the better default.
    pub fn wall_clocks_of_several_nodes(&self) -> bool {
        // 2001-09-09 in microseconds since the epoch: virtual times (from
        // zero) are far below it.
        const EPOCH_LIKE: u64 = 1_000_000_000_000_000;
        self.files > 1 && self.events.iter().any(|e| e.t_us >= EPOCH_LIKE)
    }

    /// The happened-before vector clock of every event (indexed like
    /// [`Graph::events`]; per lane, that lane's count of events up to and
    /// including it), for events that `keep` (the others, e.g. drops,
    /// are not counted and get an empty clock). A kept delivery merges its
    /// send's clock when the send is kept.
    pub fn vector_clocks(&self, keep: impl Fn(&Event) -> bool) -> Vec<Vec<u32>> {
        let lanes = self.lanes.len();
        let mut clocks: Vec<Vec<u32>> = vec![Vec::new(); self.events.len()];
        let mut current: Vec<Vec<u32>> = vec![vec![0; lanes]; lanes];
        for &i in &self.order {
            let e = &self.events[i];
            if !keep(e) {
                continue;
            }
            let mut vc = std::mem::take(&mut current[e.lane]);
            if e.kind == Kind::Deliver {
                if let Some(s) = self.send_of[i] {
                    for (mine, theirs) in vc.iter_mut().zip(&clocks[s]) {
                        *mine = (*mine).max(*theirs);
                    }
                }
            }
            vc[e.lane] += 1;
            clocks[i] = vc.clone();
            current[e.lane] = vc;
        }
        clocks
    }

    /// The smallest and largest `t_us`.
    pub fn time_range(&self) -> (u64, u64) {
        let min = self.events.iter().map(|e| e.t_us).min().unwrap_or(0);
        let max = self.events.iter().map(|e| e.t_us).max().unwrap_or(0);
        (min, max)
    }

    /// How many events of each `ev`.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in &self.events {
            *out.entry(e.ev.clone()).or_insert(0) += 1;
        }
        out
    }
}

fn lane_of_owned(nodes: &[String]) -> HashMap<String, usize> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect()
}

/// The file names, for a title.
pub fn describe(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| {
            Path::new(f)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.display().to_string())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[&str]) -> Graph {
        let texts: Vec<(PathBuf, String)> = files
            .iter()
            .enumerate()
            .map(|(i, t)| (PathBuf::from(format!("f{i}")), t.to_string()))
            .collect();
        Graph::from_texts(&texts).unwrap()
    }

    fn send(t: u64, node: &str, to: &str, seq: u64) -> String {
        format!("{{\"t_us\":{t},\"node\":\"{node}\",\"ev\":\"send\",\"to\":\"{to}\",\"seq\":{seq},\"bytes\":9,\"kind\":\"tell\",\"tag\":\"x\"}}\n")
    }
    fn deliver(t: u64, node: &str, from: &str, seq: u64) -> String {
        format!("{{\"t_us\":{t},\"node\":\"{node}\",\"ev\":\"deliver\",\"from\":\"{from}\",\"seq\":{seq}}}\n")
    }
    fn note(t: u64, node: &str) -> String {
        format!("{{\"t_us\":{t},\"node\":\"{node}\",\"ev\":\"note\",\"text\":\"hi\"}}\n")
    }

    #[test]
    fn lanes_are_ordered_by_name_with_numbers_as_numbers() {
        let mut v = vec!["n10", "store", "n2", "n1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["n1", "n2", "n10", "store"]);
    }

    /// Per-node files whose clocks disagree: the delivery is stamped before
    /// its send, yet it is ordered after it, and the logical positions
    /// never let a message go backwards.
    #[test]
    fn a_delivery_comes_after_its_send_whatever_the_clocks_say() {
        let a = send(1_000, "a", "b", 0) + &note(1_001, "a") + &deliver(1_002, "a", "b", 0);
        // b's clock is behind: it delivers at 10 what a sent at 1000.
        let b = deliver(10, "b", "a", 0) + &send(11, "b", "a", 0);
        let g = graph(&[&a, &b]);
        assert_eq!(g.nodes, ["a", "b"]);
        assert_eq!(g.arrows(), 2);
        assert_eq!(g.cut, 0);
        for (i, e) in g.events.iter().enumerate() {
            if let Some(s) = g.send_of[i] {
                assert!(g.logical[s] < g.logical[i], "{e:?}");
                let (ps, pi) = (
                    g.order.iter().position(|&x| x == s).unwrap(),
                    g.order.iter().position(|&x| x == i).unwrap(),
                );
                assert!(ps < pi);
            }
        }
        for lane in &g.lanes {
            for w in lane.windows(2) {
                assert!(g.logical[w[0]] < g.logical[w[1]]);
            }
        }
        // b's delivery: after a's send (1): 2; b's send: 3; a's delivery
        // of it: after that send, 4 (not 3, after a's note).
        let last = g.lanes[0][2];
        assert_eq!(g.logical[last], 4);
    }

    #[test]
    fn same_seq_from_different_senders_are_different_messages() {
        let t = send(0, "a", "c", 5) + &send(0, "b", "c", 5) + &deliver(1, "c", "b", 5);
        let g = graph(&[&t]);
        let d = g.lanes[2][0];
        let s = g.send_of[d].unwrap();
        assert_eq!(g.nodes[g.events[s].lane], "b");
        assert_eq!(g.arrows(), 1);
    }

    /// A sender that restarted and numbers from 0 again: each delivery
    /// matches the last send with its number at or before it.
    #[test]
    fn a_reused_seq_matches_the_latest_send_before_the_delivery() {
        let a = send(10, "a", "b", 0) + &send(50, "a", "b", 0);
        let b = deliver(20, "b", "a", 0) + &deliver(60, "b", "a", 0);
        let g = graph(&[&a, &b]);
        assert_eq!(g.send_of[g.lanes[1][0]], Some(g.lanes[0][0]));
        assert_eq!(g.send_of[g.lanes[1][1]], Some(g.lanes[0][1]));
    }

    #[test]
    fn a_cycle_is_cut_not_looped_on() {
        // a delivers b's message before sending the one b delivers before
        // sending its own: impossible, so one edge is cut.
        let t = deliver(0, "a", "b", 1)
            + &send(1, "a", "b", 2)
            + &deliver(0, "b", "a", 2)
            + &send(1, "b", "a", 1);
        let g = graph(&[&t]);
        assert_eq!(g.cut, 1);
        assert_eq!(g.order.len(), 4);
        assert_eq!(g.arrows(), 1);
    }

    #[test]
    fn bad_lines_are_named_with_file_and_line() {
        let texts = vec![(
            PathBuf::from("x.jsonl"),
            note(0, "a") + "{\"t_us\":1,\"ev\":\"note\"}\n",
        )];
        let e = Graph::from_texts(&texts).unwrap_err().to_string();
        assert!(e.starts_with("x.jsonl:2: no \"node\""), "{e}");
        // A model checker's counterexample: its steps and violation are
        // skipped, the events between them read.
        let texts = vec![(
            PathBuf::from("cx.jsonl"),
            "{\"model\":\"m\",\"step\":1,\"choice\":0,\"what\":\"x\"}\n".to_string()
                + &note(1000, "1")
                + "{\"model\":\"m\",\"violation\":\"v\"}\n",
        )];
        let g = Graph::from_texts(&texts).unwrap();
        assert_eq!(g.events.len(), 1);
        assert_eq!(g.nodes, ["1"]);
        assert!(g.model_checker);
    }

    /// Vector clocks: each lane's own entry counts its events, a delivery
    /// takes in its send's clock, and a drop is left out.
    #[test]
    fn vector_clocks_follow_messages() {
        let t = send(0, "a", "b", 0)
            + &send(1, "a", "b", 1)
            + "{\"t_us\":2,\"node\":\"b\",\"ev\":\"drop\",\"from\":\"a\",\"seq\":0,\"reason\":\"loss\"}\n"
            + &note(3, "b")
            + &deliver(4, "b", "a", 1);
        let g = graph(&[&t]);
        let vc = g.vector_clocks(|e| e.kind != Kind::Drop);
        let b = &g.lanes[1];
        assert!(vc[b[0]].is_empty());
        assert_eq!(vc[b[1]], [0, 1]);
        assert_eq!(vc[b[2]], [2, 2]);
    }
}
