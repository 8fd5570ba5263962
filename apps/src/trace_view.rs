//! `troupe trace view FILE... [-o out.html]`: a space-time diagram of
//! JSON-lines traces, as one self-contained HTML page (no network needed
//! to open it).
//!
//! The traces are read as one execution ([`crate::trace_graph`]); the page
//! gets them as JSON in a `<script type="application/json">` element, in
//! columns (one array per field, strings in a table), with the original
//! lines for the details shown on hover. Its script (`trace_view/view.js`)
//! draws on a `<canvas>`: one lane per node, an arrow per message from send
//! to delivery (a lost one dashed, ending in a cross), a mark per other
//! event (timers, syncs, supervision, broadcast deliveries, notes, crashes
//! and restarts), only what is in view; wheel to zoom, drag to pan, filters
//! by protocol, message type and node, a time or a logical (happened-before)
//! axis, and a click on an event highlights its causal past and future.
//!
//! Once drawn, `<body>` carries what it drew, for tests and benchmarks:
//! `data-lanes`, `data-arrows`, `data-dropped`, `data-marks`,
//! `data-events`, `data-render-ms` (see `view.js`).

use std::path::PathBuf;

use serde::Serialize;

use crate::trace_graph::{describe, Graph, Kind};

const PAGE: &str = include_str!("trace_view/page.html");
const STYLE: &str = include_str!("trace_view/view.css");
const SCRIPT: &str = include_str!("trace_view/view.js");

/// Which axis the page opens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Axis {
    /// Logical for several nodes' wall-clock traces with messages between
    /// them, a frozen clock or a model checker's counterexample; time
    /// otherwise.
    Auto,
    /// `t_us`, as recorded.
    Time,
    /// Happened-before positions: each event after its lane predecessor and
    /// each delivery after its send.
    Logical,
}

/// The page's data: one array per field, one entry per event, in an order
/// where every event comes after its lane predecessor and its send.
#[derive(Serialize)]
struct Data<'a> {
    title: String,
    nodes: &'a [String],
    axis: &'static str,
    wall: bool,
    /// `t_us` of the first event; `t` is relative to it.
    t0: u64,
    strings: Vec<String>,
    lane: Vec<u32>,
    t: Vec<u64>,
    lx: Vec<u64>,
    /// [`Kind::code`].
    ev: Vec<u8>,
    /// Delivery or drop: the index of its send (-1: none).
    peer: Vec<i64>,
    /// Message kind (tell, ask...) of a message end (index in `strings`, -1).
    kind: Vec<i32>,
    /// Message type tag, or a mark's protocol (index in `strings`, -1).
    tag: Vec<i32>,
    /// A mark's text (index in `strings`, -1).
    label: Vec<i32>,
    /// The trace line as written.
    lines: Vec<&'a str>,
    /// Deliveries and drops cut to order the events (inconsistent input).
    cut: usize,
}

#[derive(Default)]
struct Strings {
    list: Vec<String>,
    index: std::collections::HashMap<String, i32>,
}

impl Strings {
    fn get(&mut self, s: Option<&str>) -> i32 {
        let Some(s) = s else { return -1 };
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as i32;
        self.list.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// What `troupe trace view` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events drawn.
    pub events: usize,
    /// Lanes (nodes).
    pub lanes: usize,
    /// Message arrows (deliveries and drops matched to a send).
    pub arrows: usize,
    /// Of those, drops.
    pub dropped: usize,
    /// Marks (events other than sends, deliveries and drops).
    pub marks: usize,
    /// The axis the page opens with.
    pub axis: &'static str,
    /// Edges cut because the input was inconsistent.
    pub cut: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events on {} lanes: {} message arrows ({} dropped), {} marks; {} axis",
            self.events, self.lanes, self.arrows, self.dropped, self.marks, self.axis
        )?;
        if self.cut > 0 {
            write!(
                f,
                "; {} deliveries could not be ordered after their send (inconsistent input) and are drawn without their arrow",
                self.cut
            )?;
        }
        Ok(())
    }
}

/// The page for `graph` (read from `files`), opening on `axis`.
pub fn render(graph: &Graph, files: &[PathBuf], axis: Axis) -> (String, Summary) {
    let wall = graph.wall_clocks_of_several_nodes();
    let (t0, t1) = graph.time_range();
    let axis = match axis {
        Axis::Time => "time",
        Axis::Logical => "logical",
        // One instant for everything (a frozen clock), or
        // several nodes' clocks, not synchronized, and messages between
        // them to order their events by: time says little across lanes.
        // (Without messages the logical axis would only number each lane's
        // events: wall-clock time is the better guess.)
        // A model checker's steps: many events at each step's instant.
        Axis::Auto if (wall && graph.arrows() > 0) || t0 == t1 || graph.model_checker => "logical",
        Axis::Auto => "time",
    };
    let n = graph.events.len();
    let mut strings = Strings::default();
    let mut data = Data {
        title: describe(files),
        nodes: &graph.nodes,
        axis,
        wall,
        t0,
        strings: Vec::new(),
        lane: Vec::with_capacity(n),
        t: Vec::with_capacity(n),
        lx: Vec::with_capacity(n),
        ev: Vec::with_capacity(n),
        peer: Vec::with_capacity(n),
        kind: Vec::with_capacity(n),
        tag: Vec::with_capacity(n),
        label: Vec::with_capacity(n),
        lines: Vec::with_capacity(n),
        cut: graph.cut,
    };
    // Position of each event in the page's arrays (its place in `order`).
    let mut at = vec![0usize; n];
    for (k, &i) in graph.order.iter().enumerate() {
        at[i] = k;
    }
    let mut summary = Summary {
        events: n,
        lanes: graph.nodes.len(),
        arrows: 0,
        dropped: 0,
        marks: 0,
        axis,
        cut: graph.cut,
    };
    for &i in &graph.order {
        let e = &graph.events[i];
        let send = graph.send_of[i].map(|s| &graph.events[s]);
        data.lane.push(e.lane as u32);
        data.t.push(e.t_us - t0);
        data.lx.push(graph.logical[i]);
        data.ev.push(e.kind.code());
        data.peer
            .push(graph.send_of[i].map_or(-1, |s| at[s] as i64));
        let (kind, tag, label) = match e.kind {
            Kind::Send => (e.msg_kind(), e.tag(), None),
            Kind::Deliver | Kind::Drop => (
                send.and_then(|s| s.msg_kind()),
                send.and_then(|s| s.tag()),
                None,
            ),
            _ => (None, None, Some(e.label())),
        };
        let protocol = e.protocol();
        data.kind.push(strings.get(kind));
        data.tag.push(strings.get(tag.or(protocol.as_deref())));
        data.label.push(strings.get(label.as_deref()));
        data.lines.push(&e.line);
        if send.is_some() {
            summary.arrows += 1;
            if e.kind == Kind::Drop {
                summary.dropped += 1;
            }
        }
        if e.kind.is_mark() {
            summary.marks += 1;
        }
    }
    data.strings = strings.list;
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_string());
    // Inside <script>, "</script" would end it and "<!--" change how it is
    // parsed: no "<" at all ("<" only occurs inside JSON strings, where
    // "\u003c" is the same character).
    let json = json.replace('<', "\\u003c");
    let title = html_escape(&format!("Troupe trace: {}", data.title));
    let page = PAGE
        .replace("{{TITLE}}", &title)
        .replace("/*{{STYLE}}*/", STYLE)
        .replace("/*{{SCRIPT}}*/", SCRIPT)
        .replace("{{DATA}}", &json);
    (page, summary)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_its_data_cannot_end_the_script() {
        let text = "{\"t_us\":0,\"node\":\"a\",\"ev\":\"note\",\"text\":\"<!--<script></script><b>\"}\n\
                    {\"t_us\":5,\"node\":\"a\",\"ev\":\"send\",\"to\":\"b\",\"seq\":1,\"bytes\":3,\"kind\":\"tell\",\"tag\":\"t\"}\n\
                    {\"t_us\":9,\"node\":\"b\",\"ev\":\"deliver\",\"from\":\"a\",\"seq\":1}\n";
        let g = Graph::from_texts(&[(PathBuf::from("a.jsonl"), text.to_string())]).unwrap();
        let (page, s) = render(&g, &[PathBuf::from("a.jsonl")], Axis::Auto);
        assert_eq!(s.lanes, 2);
        assert_eq!(s.arrows, 1);
        assert_eq!(s.marks, 1);
        assert_eq!(s.axis, "time");
        // One closing script tag per script element, none from the data.
        assert_eq!(page.matches("</script>").count(), 2, "{page}");
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!page.contains("{{"), "a placeholder was left");
        let start = page.find("application/json\">").unwrap() + "application/json\">".len();
        let end = start + page[start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(data["nodes"], serde_json::json!(["a", "b"]));
        assert_eq!(data["peer"], serde_json::json!([-1, -1, 1]));
        assert!(data["lines"][0]
            .as_str()
            .unwrap()
            .contains("<!--<script></script><b>"));
    }

    #[test]
    fn several_wall_clocks_open_on_the_logical_axis_when_messages_order_them() {
        let t = |us: u64| 1_700_000_000_000_000 + us;
        let a = format!("{{\"t_us\":{},\"node\":\"a\",\"ev\":\"send\",\"to\":\"b\",\"seq\":1,\"bytes\":1,\"kind\":\"tell\",\"tag\":\"x\"}}\n", t(5));
        let b = format!(
            "{{\"t_us\":{},\"node\":\"b\",\"ev\":\"deliver\",\"from\":\"a\",\"seq\":1}}\n",
            t(1)
        );
        let files = [PathBuf::from("a"), PathBuf::from("b")];
        let g = Graph::from_texts(&[(files[0].clone(), a.clone()), (files[1].clone(), b)]).unwrap();
        assert_eq!(render(&g, &files, Axis::Auto).1.axis, "logical");
        // Without messages between them: time.
        let c = format!("{{\"t_us\":{},\"node\":\"c\",\"ev\":\"crash\"}}\n", t(2));
        let g = Graph::from_texts(&[(files[0].clone(), a), (files[1].clone(), c)]).unwrap();
        assert_eq!(render(&g, &files, Axis::Auto).1.axis, "time");
    }

    #[test]
    fn frozen_time_opens_on_the_logical_axis() {
        let text = "{\"t_us\":0,\"node\":\"a\",\"ev\":\"crash\"}\n{\"t_us\":0,\"node\":\"b\",\"ev\":\"crash\"}\n";
        let g = Graph::from_texts(&[(PathBuf::from("x"), text.to_string())]).unwrap();
        assert_eq!(render(&g, &[], Axis::Auto).1.axis, "logical");
        assert_eq!(render(&g, &[], Axis::Time).1.axis, "time");
    }
}
