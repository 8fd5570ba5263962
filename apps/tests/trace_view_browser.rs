//! `troupe trace view` in a real browser: the locked_counter example's
//! trace drawn by headless Chromium, its lanes, arrows, lost messages and
//! marks compared with counts computed here from the trace file, and the
//! causal past and future of a chosen event compared with a reachability
//! computed here. Screenshots go to `target/trace-view/` for people to look
//! at. Without Chromium the tests say `SKIPPED: chromium not installed`
//! and pass.
//!
//! The benchmark (ignored: `cargo test -p troupe-apps --test
//! trace_view_browser -- --ignored --nocapture`) draws a 100,000-event
//! trace of the sim_cluster example and reports the time to the first
//! diagram (BENCHMARKS.md, "Space-time diagrams").

// Each example brings its own copy of examples/common/trace_arg.rs.
#![allow(clippy::duplicate_mod)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[path = "common/browser.rs"]
#[allow(dead_code)] // the DevTools driver is for the dashboard test
mod browser;
#[path = "troupe_run/mod.rs"]
mod troupe_run;

#[allow(dead_code)]
#[path = "../../examples/locked_counter.rs"]
mod locked_counter;
#[allow(dead_code)]
#[path = "../../examples/sim_cluster.rs"]
mod sim_cluster;

use browser::{body_attributes, file_url, target_dir, Chromium};
use troupe::prelude::{ElectionAlgorithm, MutexAlgorithm};

/// One trace line, as this test reads it (independently of the viewer).
struct Line {
    text: String,
    node: String,
    ev: String,
    peer: Option<String>,
    seq: Option<u64>,
}

fn read_trace(path: &Path) -> Vec<Line> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        // A model checker's step and violation lines are not events.
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap()
                .get("ev")
                .is_some()
        })
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            Line {
                text: l.trim().to_string(),
                node: s("node").unwrap(),
                ev: s("ev").unwrap(),
                peer: s("to").or_else(|| s("from")),
                seq: v.get("seq").and_then(Value::as_u64),
            }
        })
        .collect()
}

/// What a diagram of `trace` must show: lanes, message arrows (deliveries
/// and drops whose send is in the trace), of which dropped, marks (every
/// other event), sends with neither.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    lanes: usize,
    arrows: usize,
    dropped: usize,
    marks: usize,
    open: usize,
    events: usize,
}

/// Per delivery or drop (by line index), the index of its send: the send
/// line of node `from` to this node with that `seq`.
fn matches(trace: &[Line]) -> HashMap<usize, usize> {
    let mut sends: HashMap<(&str, &str, u64), usize> = HashMap::new();
    for (i, l) in trace.iter().enumerate() {
        if l.ev == "send" {
            sends.insert((&l.node, l.peer.as_deref().unwrap(), l.seq.unwrap()), i);
        }
    }
    let mut out = HashMap::new();
    for (i, l) in trace.iter().enumerate() {
        if l.ev == "deliver" || l.ev == "drop" {
            if let Some(&s) =
                sends.get(&(l.peer.as_deref().unwrap(), l.node.as_str(), l.seq.unwrap()))
            {
                out.insert(i, s);
            }
        }
    }
    out
}

fn expected(trace: &[Line]) -> Expected {
    let m = matches(trace);
    let mut nodes: HashSet<&str> = trace.iter().map(|l| l.node.as_str()).collect();
    nodes.extend(trace.iter().filter_map(|l| l.peer.as_deref()));
    let answered: HashSet<usize> = m.values().copied().collect();
    Expected {
        lanes: nodes.len(),
        arrows: m.len(),
        dropped: m.keys().filter(|&&i| trace[i].ev == "drop").count(),
        marks: trace
            .iter()
            .filter(|l| !matches!(l.ev.as_str(), "send" | "deliver" | "drop"))
            .count(),
        open: trace
            .iter()
            .enumerate()
            .filter(|(i, l)| l.ev == "send" && !answered.contains(i))
            .count(),
        events: trace.len(),
    }
}

fn shown(attrs: &HashMap<String, String>) -> Expected {
    let n = |k: &str| -> usize {
        attrs
            .get(k)
            .unwrap_or_else(|| panic!("no {k} on <body>: {attrs:?}"))
            .parse()
            .unwrap()
    };
    Expected {
        lanes: n("data-lanes"),
        arrows: n("data-arrows"),
        dropped: n("data-dropped"),
        marks: n("data-marks"),
        open: n("data-open"),
        events: n("data-events"),
    }
}

/// Events in the causal past and future of line `e` (itself excluded):
/// along each node's lines, and from a send to its deliveries.
fn causal(trace: &[Line], e: usize) -> (usize, usize) {
    let m = matches(trace);
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); trace.len()];
    let mut prev: Vec<Vec<usize>> = vec![Vec::new(); trace.len()];
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, l) in trace.iter().enumerate() {
        if let Some(p) = last.insert(&l.node, i) {
            next[p].push(i);
            prev[i].push(p);
        }
    }
    for (&d, &s) in &m {
        if trace[d].ev == "deliver" {
            next[s].push(d);
            prev[d].push(s);
        }
    }
    let reach = |edges: &Vec<Vec<usize>>| {
        let mut seen = vec![false; trace.len()];
        let mut queue = VecDeque::from([e]);
        seen[e] = true;
        while let Some(i) = queue.pop_front() {
            for &j in &edges[i] {
                if !seen[j] {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        seen.iter().filter(|s| **s).count() - 1
    };
    (reach(&prev), reach(&next))
}

/// The page's embedded data (the JSON in its `trace-data` script).
fn page_data(html: &Path) -> Value {
    let page = std::fs::read_to_string(html).unwrap();
    let open = "<script id=\"trace-data\" type=\"application/json\">";
    let start = page.find(open).unwrap() + open.len();
    let end = start + page[start..].find("</script>").unwrap();
    serde_json::from_str(&page[start..end]).unwrap()
}

fn out_dir() -> PathBuf {
    let dir = target_dir().join("trace-view");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn view(trace: &[&Path], html: &Path, extra: &[&str]) -> String {
    let mut args = vec!["trace", "view", "-o", html.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(trace.iter().map(|p| p.to_str().unwrap()));
    let out = troupe_run::troupe_ok(&args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_locked_counter_diagram_shows_every_message_and_event_of_its_trace() {
    let dir = out_dir();
    let trace_file = dir.join("locked_counter.jsonl");
    locked_counter::run_traced(
        MutexAlgorithm::Centralized,
        ElectionAlgorithm::Bully,
        7,
        false,
        Some(trace_file.clone()),
    )
    .expect("the example's own checks");
    let trace = read_trace(&trace_file);
    let want = expected(&trace);
    assert!(
        want.arrows > 1000 && want.dropped > 0 && want.marks > 100,
        "{want:?}"
    );
    assert!(
        trace.iter().any(|l| l.ev == "crash"),
        "the leader's crash is in the trace"
    );

    let html = dir.join("locked_counter.html");
    let summary = view(&[&trace_file], &html, &[]);
    assert!(
        summary.contains(&format!(
            "{} events on {} lanes: {} message arrows ({} dropped), {} marks; time axis",
            want.events, want.lanes, want.arrows, want.dropped, want.marks
        )),
        "{summary} vs {want:?}"
    );

    let Some(chromium) = Chromium::or_skip("trace view of locked_counter") else {
        return;
    };
    let size = (1400, 800);
    let dom = chromium.dump_dom(&file_url(&html, ""), size).unwrap();
    let attrs = body_attributes(&dom);
    assert_eq!(shown(&attrs), want, "drawn vs the trace: {attrs:?}");
    assert_eq!(attrs["data-axis"], "time");

    // The same on the logical axis (everything still in view).
    let dom = chromium
        .dump_dom(&file_url(&html, "axis=logical"), size)
        .unwrap();
    let attrs = body_attributes(&dom);
    assert_eq!(shown(&attrs), want, "logical axis: {attrs:?}");
    assert_eq!(attrs["data-axis"], "logical");

    // Filters: without the failure detector's traffic and timers, and
    // without node n4, fewer arrows and marks, as counted here.
    let data = page_data(&html);
    let keep = |l: &Line, tag: Option<&str>| {
        let proto_ok = tag.is_none_or(|t| !t.to_lowercase().contains("fd"));
        let nodes_ok = l.node != "n4" && l.peer.as_deref() != Some("n4");
        proto_ok && nodes_ok
    };
    let tag_of = |l: &Line| -> Option<String> {
        let v: Value = serde_json::from_str(&l.text).unwrap();
        match l.ev.as_str() {
            "send" => v["tag"].as_str().map(str::to_string),
            "timer" => v["name"]
                .as_str()
                .map(|n| n.split(':').next().unwrap().to_string()),
            "sync" | "delivered" => v["protocol"].as_str().map(str::to_string),
            "supervision" => v["path"].as_str().map(str::to_string),
            _ => None,
        }
    };
    let m = matches(&trace);
    let filtered_arrows = m
        .iter()
        .filter(|(&d, &s)| {
            let tag = tag_of(&trace[s]);
            keep(&trace[d], tag.as_deref()) && keep(&trace[s], tag.as_deref())
        })
        .count();
    let filtered_marks = trace
        .iter()
        .filter(|l| !matches!(l.ev.as_str(), "send" | "deliver" | "drop"))
        .filter(|l| keep(l, tag_of(l).as_deref()))
        .count();
    let dom = chromium
        .dump_dom(&file_url(&html, "proto=!fd&nodes=n1,n2,n3,store"), size)
        .unwrap();
    let attrs = body_attributes(&dom);
    assert_eq!(attrs["data-lanes"], "4");
    assert_eq!(
        attrs["data-arrows"],
        filtered_arrows.to_string(),
        "{attrs:?}"
    );
    assert_eq!(attrs["data-marks"], filtered_marks.to_string(), "{attrs:?}");
    assert!(filtered_arrows < want.arrows && filtered_marks < want.marks);

    // The causal past and future of a delivery in the middle of the run
    // (one whose line is unique), as computed here.
    let lines = data["lines"].as_array().unwrap();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for l in &trace {
        *count.entry(&l.text).or_insert(0) += 1;
    }
    let chosen = (trace.len() / 2..trace.len())
        .find(|&i| trace[i].ev == "deliver" && count[trace[i].text.as_str()] == 1)
        .expect("a unique delivery");
    let k = lines
        .iter()
        .position(|l| l.as_str() == Some(trace[chosen].text.as_str()))
        .expect("the delivery is in the page");
    let (past, future) = causal(&trace, chosen);
    assert!(past > 100 && future > 100, "{past} {future}");
    let dom = chromium
        .dump_dom(&file_url(&html, &format!("select={k}")), size)
        .unwrap();
    let attrs = body_attributes(&dom);
    assert_eq!(attrs["data-selected"], k.to_string());
    assert_eq!(attrs["data-past"], past.to_string(), "causal past");
    assert_eq!(attrs["data-future"], future.to_string(), "causal future");

    // Hover, click, zoom, pan, filter, axis: driven as a user would.
    let probe = dir.join("locked_counter-probe.html");
    std::fs::write(
        &probe,
        PROBE.replace("DIAGRAM", "locked_counter.html#x0=4.93&x1=5.45"),
    )
    .unwrap();
    let attrs = body_attributes(
        &chromium
            .dump_dom_scripted(&file_url(&probe, ""), (1500, 900), 5_000)
            .unwrap(),
    );
    assert_eq!(
        attrs.get("data-done").map(String::as_str),
        Some("yes"),
        "{attrs:?}"
    );
    assert!(!attrs.contains_key("data-error"), "{attrs:?}");
    assert_eq!(attrs["data-tip-shown"], "true", "{attrs:?}");
    let tip = &attrs["data-tip"];
    assert!(
        tip.contains("sent t=") && (tip.contains("delivered t=") || tip.contains("lost")),
        "{tip}"
    );
    assert_eq!(
        attrs["data-selected"], attrs["data-pick"],
        "a click selects the event"
    );
    let n = |k: &str| attrs[k].parse::<f64>().unwrap();
    assert!(n("data-zoom") > 1.5, "the wheel zooms in: {attrs:?}");
    assert!(
        n("data-arrows-zoomed") < n("data-arrows-before"),
        "{attrs:?}"
    );
    assert!(
        (n("data-pan-px") - 300.0).abs() < 1.0,
        "a drag of 300 px pans 300 px: {attrs:?}"
    );
    assert_eq!(
        n("data-arrows-all"),
        want.arrows as f64,
        "fit shows everything again"
    );
    let store_arrows = m
        .values()
        .filter(|&&s| tag_of(&trace[s]).is_some_and(|t| t.contains("store")))
        .count();
    assert_eq!(
        n("data-arrows-store"),
        store_arrows as f64,
        "typed filter 'store'"
    );
    assert_eq!(attrs["data-axis"], "logical");

    // For people: the whole run, and the crash of the leader up close
    // without the failure detector's heartbeats (the README's picture,
    // docs/img/locked_counter-trace.png, is this one).
    let whole = dir.join("locked_counter.png");
    chromium
        .screenshot(&file_url(&html, ""), &whole, size)
        .unwrap();
    let crash = dir.join("locked_counter-crash.png");
    chromium
        .screenshot(&file_url(&html, README_VIEW), &crash, (1400, 720))
        .unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "trace view screenshots: {} {}",
        whole.display(),
        crash.display()
    );
}

/// The view of the README's picture: 4.86 s to 5.96 s, the leader n4
/// crashing at 5 s, the others' requests to it lost, a new election and
/// the lock moving to n3; `!fd` hides the failure detector's heartbeats.
const README_VIEW: &str = "x0=4.86&x1=5.96&proto=!fd";

/// A page that drives the diagram in an `<iframe>` as a user would, and
/// writes what it saw on its own `<body>`: hover over a send (the tooltip
/// tells the message), click it (it is selected), wheel (zoom in), drag
/// (pan), type in the protocol filter, switch the axis. After each, the
/// frame the page asked for is drawn at once (`traceView.flush()`):
/// headless Chromium runs an iframe's animation frames only now and then.
const PROBE: &str = r#"<!DOCTYPE html><html><body>
<iframe id="f" src="DIAGRAM" width="1400" height="800"></iframe>
<script>
const f = document.getElementById('f');
const out = document.body.dataset;
f.onload = () => {
  const w = f.contentWindow, d = f.contentDocument, tv = w.traceView;
  w.addEventListener('error', (e) => { out.error = (out.error || '') + e.message; });
  const canvas = d.getElementById('canvas');
  const rect = canvas.getBoundingClientRect();
  const at = (x, y) => ({ clientX: rect.left + x, clientY: rect.top + y, bubbles: true, cancelable: true });
  // What the page drew after an interaction (its next frame, drawn now).
  const arrows = () => { tv.flush(); return Number(d.body.dataset.arrows); };
  // A send in the middle of the view.
  let pick = -1;
  for (let i = 0; i < tv.kinds.length; i++) {
    const p = tv.position(i);
    if (tv.kinds[i] === 0 && p && p.x > 500 && p.x < 900) { pick = i; break; }
  }
  out.pick = pick;
  const p = tv.position(pick);
  w.dispatchEvent(new w.MouseEvent('mousemove', at(p.x, p.y)));
  const tip = d.getElementById('tip');
  out.tipShown = String(!tip.hidden);
  out.tip = tip.textContent.slice(0, 300);
  canvas.dispatchEvent(new w.MouseEvent('mousedown', at(p.x, p.y)));
  w.dispatchEvent(new w.MouseEvent('mouseup', at(p.x, p.y)));
  out.selected = d.body.dataset.selected;
  w.dispatchEvent(new w.KeyboardEvent('keydown', { key: 'Escape' }));
  out.arrowsBefore = arrows();
  const scale = tv.state.scale;
  canvas.dispatchEvent(new w.WheelEvent('wheel', Object.assign({ deltaY: -500 }, at(700, 300))));
  out.zoom = (tv.state.scale / scale).toFixed(3);
  out.arrowsZoomed = arrows();
  const v0 = tv.state.v0, s = tv.state.scale;
  canvas.dispatchEvent(new w.MouseEvent('mousedown', at(700, 300)));
  w.dispatchEvent(new w.MouseEvent('mousemove', at(850, 300)));
  w.dispatchEvent(new w.MouseEvent('mousemove', at(1000, 300)));
  w.dispatchEvent(new w.MouseEvent('mouseup', at(1000, 300)));
  out.panPx = ((v0 - tv.state.v0) * s).toFixed(1);
  out.arrowsPanned = arrows();
  d.getElementById('fit').click();
  out.arrowsAll = arrows();
  const proto = d.getElementById('proto');
  proto.value = 'store';
  proto.dispatchEvent(new w.Event('input'));
  out.arrowsStore = arrows();
  const axis = d.getElementById('axis');
  axis.value = 'logical';
  axis.dispatchEvent(new w.Event('change'));
  tv.flush();
  out.axis = d.body.dataset.axis;
  out.done = 'yes';
};
</script></body></html>"#;

/// Two nodes' own trace files with wall clocks that disagree (b's is
/// behind): the page opens on the logical axis, and every message is
/// drawn.
#[test]
fn several_nodes_files_open_on_the_logical_axis() {
    let dir = out_dir();
    let epoch = 1_700_000_000_000_000u64;
    let send = |t: u64, n: &str, to: &str, seq: u64| {
        format!("{{\"t_us\":{},\"node\":\"{n}\",\"ev\":\"send\",\"to\":\"{to}\",\"seq\":{seq},\"bytes\":90,\"kind\":\"ask\",\"tag\":\"bank.deposit\"}}\n", epoch + t)
    };
    let deliver = |t: u64, n: &str, from: &str, seq: u64| {
        format!("{{\"t_us\":{},\"node\":\"{n}\",\"ev\":\"deliver\",\"from\":\"{from}\",\"seq\":{seq}}}\n", epoch + t)
    };
    let a = dir.join("two-nodes-a.jsonl");
    let b = dir.join("two-nodes-b.jsonl");
    std::fs::write(&a, send(5_000, "a", "b", 1) + &deliver(5_900, "a", "b", 1)).unwrap();
    std::fs::write(
        &b,
        deliver(1_000, "b", "a", 1)
            + &send(1_100, "b", "a", 1)
            + "{\"t_us\":1700000000001200,\"node\":\"b\",\"ev\":\"timer\",\"name\":\"fd:Tick\"}\n",
    )
    .unwrap();
    let html = dir.join("two-nodes.html");
    let summary = view(&[&a, &b], &html, &[]);
    assert!(summary.contains("logical axis"), "{summary}");
    let Some(chromium) = Chromium::or_skip("trace view of two nodes' files") else {
        return;
    };
    let attrs = body_attributes(
        &chromium
            .dump_dom(&file_url(&html, ""), (1000, 600))
            .unwrap(),
    );
    assert_eq!(attrs["data-axis"], "logical");
    assert_eq!(
        shown(&attrs),
        Expected {
            lanes: 2,
            arrows: 2,
            dropped: 0,
            marks: 1,
            open: 0,
            events: 5
        }
    );
}

/// A model checker's counterexample (three-phase commit losing agreement
/// under a partition, the README's `troupe check` run), written by
/// `troupe check --trace` (its steps, each followed by its events): drawn
/// on the logical axis, every message and event of it.
#[test]
fn a_model_checker_counterexample_is_drawn() {
    let dir = out_dir();
    let trace_file = dir.join("3pc-counterexample.jsonl");
    let out = troupe_run::troupe_within(
        &[
            "check",
            "commit",
            "--algorithm",
            "three-phase",
            "--crashes",
            "1",
            "--crashable",
            "1",
            "--no-restarts",
            "--partitions",
            "1",
            "--trace",
            trace_file.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(300),
    );
    assert_eq!(out.status.code(), Some(1), "a violation: {out:?}");
    let trace = read_trace(&trace_file);
    let want = expected(&trace);
    assert!(want.arrows > 5 && want.dropped > 0, "{want:?}");
    assert!(trace.iter().any(|l| l.text.contains("VIOLATED")));

    let html = dir.join("3pc-counterexample.html");
    let summary = view(&[&trace_file], &html, &[]);
    assert!(summary.contains("logical axis"), "{summary}");
    let Some(chromium) = Chromium::or_skip("trace view of a model checker's counterexample") else {
        return;
    };
    let attrs = body_attributes(
        &chromium
            .dump_dom(&file_url(&html, ""), (1400, 600))
            .unwrap(),
    );
    assert_eq!(attrs["data-axis"], "logical");
    assert_eq!(shown(&attrs), want, "{attrs:?}");
    chromium
        .screenshot(
            &file_url(&html, ""),
            &dir.join("3pc-counterexample.png"),
            (1400, 600),
        )
        .unwrap();
}

/// A page that times the diagram's frames while panning it (drags of 40
/// px, each frame drawn and its pixels flushed): 10 frames with all of the
/// trace in view, 10 zoomed in 20 times. Writes the median milliseconds
/// per frame of each on its `<body>`.
const PAN_PROBE: &str = r#"<!DOCTYPE html><html><body>
<iframe id="f" src="DIAGRAM" width="1400" height="800"></iframe>
<script>
const f = document.getElementById('f');
f.onload = () => {
  const w = f.contentWindow, d = f.contentDocument, tv = w.traceView;
  const canvas = d.getElementById('canvas');
  const ctx = canvas.getContext('2d');
  const rect = canvas.getBoundingClientRect();
  const at = (x, y) => ({ clientX: rect.left + x, clientY: rect.top + y, bubbles: true, cancelable: true });
  const frames = () => {
    const ms = [];
    for (let k = 0; k < 10; k++) {
      const t = w.performance.now();
      canvas.dispatchEvent(new w.MouseEvent('mousedown', at(700, 300)));
      w.dispatchEvent(new w.MouseEvent('mousemove', at(700 + (k % 2 ? 40 : -40), 300)));
      w.dispatchEvent(new w.MouseEvent('mouseup', at(700 + (k % 2 ? 40 : -40), 300)));
      tv.flush();
      ctx.getImageData(0, 0, 1, 1);
      ms.push(w.performance.now() - t);
    }
    ms.sort((a, b) => a - b);
    return ms[5].toFixed(1);
  };
  document.body.dataset.panAll = frames();
  for (let k = 0; k < 10; k++) {
    canvas.dispatchEvent(new w.WheelEvent('wheel', Object.assign({ deltaY: -200 }, at(700, 300))));
  }
  tv.flush();
  document.body.dataset.zoom = (tv.state.scale).toExponential(2);
  document.body.dataset.arrowsZoomed = d.body.dataset.arrows;
  document.body.dataset.panZoomed = frames();
};
</script></body></html>"#;

/// The render time of 100,000-event traces: a messages-heavy one
/// (sim_cluster, 218 rounds: about 51,000 message arrows, few marks) and
/// a marks-heavy one (16 locked_counter runs one after the other: about
/// 102,000 events, 29,000 of them marks). A benchmark, not a timed test.
#[test]
#[ignore = "benchmark: cargo test -p troupe-apps --test trace_view_browser -- --ignored --nocapture"]
fn bench_render_100k_events() {
    let dir = out_dir();
    let messages = dir.join("sim_cluster-100k.jsonl");
    sim_cluster::run_with(1, 218, false, Some(messages.clone())).expect("the example's checks");
    let one = dir.join("locked_counter-once.jsonl");
    locked_counter::run_traced(
        MutexAlgorithm::Centralized,
        ElectionAlgorithm::Bully,
        7,
        false,
        Some(one.clone()),
    )
    .expect("the example's checks");
    // 16 runs in a row: each copy later by 13 s, its seqs numbered on.
    let marks = dir.join("locked_counter-16x.jsonl");
    let text = std::fs::read_to_string(&one).unwrap();
    let mut tiled = String::new();
    for copy in 0..16u64 {
        for line in text.lines() {
            let mut v: Value = serde_json::from_str(line).unwrap();
            v["t_us"] = (v["t_us"].as_u64().unwrap() + copy * 13_000_000).into();
            if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
                if v["ev"] != "delivered" {
                    v["seq"] = (seq + copy * 1_000_000).into();
                }
            }
            tiled.push_str(&v.to_string());
            tiled.push('\n');
        }
    }
    std::fs::write(&marks, tiled).unwrap();
    let Some(chromium) = Chromium::or_skip("trace view benchmark") else {
        return;
    };
    for (name, trace_file) in [
        ("sim_cluster-100k", messages),
        ("locked_counter-16x", marks),
    ] {
        let events = read_trace(&trace_file).len();
        let html = dir.join(format!("{name}.html"));
        let started = std::time::Instant::now();
        let summary = view(&[&trace_file], &html, &[]);
        let build = started.elapsed();
        let mut runs = Vec::new();
        for _ in 0..5 {
            let attrs = body_attributes(
                &chromium
                    .dump_dom(&file_url(&html, ""), (1400, 800))
                    .unwrap(),
            );
            assert_eq!(attrs["data-events"], events.to_string());
            let ms = |k: &str| attrs[k].parse::<f64>().unwrap();
            runs.push((
                ms("data-render-ms"),
                ms("data-setup-ms"),
                ms("data-draw-ms"),
            ));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (render, setup, draw) = runs[runs.len() / 2];
        let probe = dir.join(format!("{name}-pan.html"));
        std::fs::write(
            &probe,
            PAN_PROBE.replace("DIAGRAM", &format!("{name}.html")),
        )
        .unwrap();
        let pan = body_attributes(
            &chromium
                .dump_dom_scripted(&file_url(&probe, ""), (1500, 900), 5_000)
                .unwrap(),
        );
        chromium
            .screenshot(
                &file_url(&html, ""),
                &dir.join(format!("{name}.png")),
                (1400, 800),
            )
            .unwrap();
        let _ = writeln!(
            std::io::stderr(),
            "trace view bench {name}: {events} events, page {:.1} MB written in {:.2} s by this build of troupe ({}); \
             in Chromium, median of 5: {render:.0} ms from navigation start to the first diagram \
             ({setup:.0} ms indexing, {draw:.0} ms drawing with pixels flushed); all runs (render, indexing, drawing) {runs:?}; \
             panning: {} ms per frame with everything in view, {} ms zoomed in 20 times ({} arrows in view)",
            std::fs::metadata(&html).unwrap().len() as f64 / 1e6,
            build.as_secs_f64(),
            summary.trim(),
            pan.get("data-pan-all").map_or("?", String::as_str),
            pan.get("data-pan-zoomed").map_or("?", String::as_str),
            pan.get("data-arrows-zoomed").map_or("?", String::as_str),
        );
    }
}
