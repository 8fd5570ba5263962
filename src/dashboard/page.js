// The Troupe dashboard page: reads /v1/dashboard/events (server-sent
// events over fetch, so a bearer token can be sent) and redraws. State for
// tests is on <body>: data-updates (snapshots applied), data-nodes,
// data-arrows (messages drawn in the live view), data-load-id (new at each
// page load: a test can tell the page was not reloaded); each membership
// cell carries data-observer, data-member and data-status.
"use strict";
(function () {
  const WINDOW_US = 10e6;
  const MAX_ARROWS = 4000;
  const body = document.body;
  body.dataset.loadId = Math.random().toString(36).slice(2);
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

  // #token=... in the address: sent as a bearer token (kept for the tab).
  const m = location.hash.match(/token=([^&]+)/);
  if (m) sessionStorage.setItem("troupe-token", decodeURIComponent(m[1]));
  const token = sessionStorage.getItem("troupe-token");
  const every = (location.search.match(/every_ms=(\d+)/) || [])[1];

  const state = {
    updates: 0,
    events: new Map(), // node -> [event] (with .node), within the window
    incarnations: new Map(),
    prevTraffic: new Map(), // node -> {t_us, peers: Map(peer -> PeerTraffic)}
    rates: new Map(), // node -> Map(peer -> {msgs_out, bytes_out, msgs_in, bytes_in} per second)
    last: null,
  };

  function setConn(cls, text) {
    const c = $("conn");
    c.className = cls;
    c.textContent = text;
  }

  async function connect() {
    const url = "v1/dashboard/events" + (every ? "?every_ms=" + every : "");
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const res = await fetch(url, { headers, cache: "no-store" });
      if (!res.ok) throw new Error("HTTP " + res.status + " " + (await res.text()));
      setConn("live", "live");
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = chunk
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart())
            .join("\n");
          if (data) apply(JSON.parse(data));
        }
      }
      throw new Error("stream ended");
    } catch (e) {
      setConn("lost", "reconnecting: " + e.message);
      setTimeout(connect, 1000);
    }
  }

  function apply(s) {
    state.updates++;
    state.last = s;
    for (const v of s.nodes) {
      const snap = v.snapshot;
      if (!snap) continue;
      if (state.incarnations.get(v.name) !== snap.incarnation) {
        state.incarnations.set(v.name, snap.incarnation);
        state.events.set(v.name, []);
        state.prevTraffic.delete(v.name);
      }
      const evs = state.events.get(v.name);
      for (const e of snap.events) {
        e.node = v.name;
        evs.push(e);
      }
      const prev = state.prevTraffic.get(v.name);
      const peers = new Map(snap.traffic.map((t) => [t.peer, t]));
      if (prev && snap.t_us > prev.t_us) {
        const dt = (snap.t_us - prev.t_us) / 1e6;
        const r = new Map();
        for (const [peer, t] of peers) {
          const p = prev.peers.get(peer) || { msgs_out: 0, bytes_out: 0, msgs_in: 0, bytes_in: 0 };
          r.set(peer, {
            msgs_out: (t.msgs_out - p.msgs_out) / dt,
            bytes_out: (t.bytes_out - p.bytes_out) / dt,
            msgs_in: (t.msgs_in - p.msgs_in) / dt,
            bytes_in: (t.bytes_in - p.bytes_in) / dt,
          });
        }
        state.rates.set(v.name, r);
      }
      state.prevTraffic.set(v.name, { t_us: snap.t_us, peers });
    }
    const now = s.t_us;
    for (const [n, evs] of state.events) {
      const keep = evs.filter((e) => e.t_us >= now - WINDOW_US);
      state.events.set(n, keep);
    }
    render(s);
  }

  function names(s) {
    const all = new Set();
    for (const v of s.nodes) {
      all.add(v.name);
      if (v.snapshot) for (const m of v.snapshot.members) all.add(m.name);
    }
    return [...all].sort();
  }

  function render(s) {
    const all = names(s);
    $("where").textContent = "gathered by " + s.gathered_by + " · " + s.nodes.length + " nodes";
    $("when").textContent = new Date(s.t_us / 1000).toLocaleTimeString();
    renderMembership(s, all);
    renderLeaders(s);
    renderLocks(s);
    renderTraffic(s);
    renderApps(s);
    renderTrees(s);
    renderLanes(s, all);
    body.dataset.updates = String(state.updates);
    body.dataset.nodes = String(all.length);
  }

  function statusCell(observer, member, status, extra) {
    return `<td data-observer="${esc(observer)}" data-member="${esc(member)}" data-status="${esc(status)}"><span class="st st-${esc(status)}">${esc(status)}</span>${extra || ""}</td>`;
  }

  function renderMembership(s, all) {
    let h = "<table><tr><th>view of ↓ / member →</th>" + all.map((n) => `<th>${esc(n)}</th>`).join("") + "<th>detector</th><th>up for</th></tr>";
    for (const v of s.nodes) {
      h += `<tr><th>${esc(v.name)}</th>`;
      if (!v.snapshot) {
        h += all.map((n) => statusCell(v.name, n, "unreachable")).join("");
        h += `<td colspan="2" class="err">${esc(v.error || "")}</td></tr>`;
        continue;
      }
      const ms = new Map(v.snapshot.members.map((m) => [m.name, m]));
      for (const n of all) {
        if (n === v.name) {
          h += statusCell(v.name, n, "self");
          continue;
        }
        const m = ms.get(n);
        if (!m) {
          h += `<td data-observer="${esc(v.name)}" data-member="${esc(n)}" data-status="unknown" class="muted">–</td>`;
          continue;
        }
        const phi = m.phi === null || m.phi === undefined ? "" : `<span class="phi">φ ${typeof m.phi === "number" ? m.phi.toFixed(2) : esc(m.phi)}</span>`;
        h += statusCell(v.name, n, m.status, phi);
      }
      h += `<td>${esc(v.snapshot.detector)}</td><td>${(v.snapshot.uptime_ms / 1000).toFixed(0)} s</td></tr>`;
    }
    $("membership").innerHTML = h + "</table>";
  }

  function renderLeaders(s) {
    const rows = [];
    for (const v of s.nodes) {
      if (!v.snapshot) continue;
      for (const l of v.snapshot.leaders) rows.push(`<tr data-election="${esc(l.election)}" data-node="${esc(v.name)}"><td>${esc(l.election)}</td><td>${esc(v.name)}</td><td>${l.term}</td><td>${l.leader === null ? '<span class="muted">none</span>' : esc(l.leader)}</td></tr>`);
    }
    $("leaders").innerHTML = rows.length ? "<table><tr><th>election</th><th>node</th><th>term</th><th>leader it knows</th></tr>" + rows.join("") + "</table>" : '<span class="muted">no election runs</span>';
  }

  function renderLocks(s) {
    const rows = [];
    for (const v of s.nodes) {
      if (!v.snapshot) continue;
      for (const l of v.snapshot.locks) {
        const what = l.holding !== null && l.holding !== undefined ? `<b>holds</b> (fencing token ${l.holding})` : l.waiting ? "waits" : '<span class="muted">idle</span>';
        rows.push(`<tr data-lock="${esc(l.resource)}" data-node="${esc(v.name)}" data-holding="${l.holding ?? ""}"><td>${esc(l.resource)}</td><td>${esc(v.name)}</td><td>${what}</td></tr>`);
      }
    }
    $("locks").innerHTML = rows.length ? "<table><tr><th>resource</th><th>node</th><th>state</th></tr>" + rows.join("") + "</table>" : '<span class="muted">no lock runs</span>';
  }

  function fmtRate(x, unit) {
    if (!isFinite(x) || x <= 0) return '<span class="muted">0</span>';
    const k = x >= 1e6 ? (x / 1e6).toFixed(1) + " M" : x >= 1e3 ? (x / 1e3).toFixed(1) + " k" : x.toFixed(x < 10 ? 1 : 0) + " ";
    return k + unit;
  }

  function renderTraffic(s) {
    let max = 1;
    for (const r of state.rates.values()) for (const x of r.values()) max = Math.max(max, x.msgs_out);
    const rows = [];
    for (const v of s.nodes) {
      const r = state.rates.get(v.name);
      if (!r || !v.snapshot) continue;
      for (const [peer, x] of r) {
        rows.push(`<tr><td>${esc(v.name)} → ${esc(peer)}</td><td><span class="bar" style="width:${Math.round((60 * x.msgs_out) / max)}px"></span> ${fmtRate(x.msgs_out, "msg/s")}</td><td>${fmtRate(x.bytes_out, "B/s")}</td><td>${fmtRate(x.msgs_in, "msg/s")}</td><td>${fmtRate(x.bytes_in, "B/s")}</td></tr>`);
      }
    }
    $("traffic").innerHTML = rows.length ? "<table><tr><th>link</th><th>out</th><th>bytes out</th><th>in</th><th>bytes in</th></tr>" + rows.join("") + "</table>" : '<span class="muted">rates appear after two updates</span>';
  }

  function renderApps(s) {
    let h = "";
    for (const v of s.nodes) {
      if (!v.snapshot) continue;
      for (const p of v.snapshot.panels) {
        h += `<div class="panel" data-app="${esc(p.app)}" data-node="${esc(v.name)}"><h3>${esc(p.panel ? p.panel.title : p.app)} <span class="muted">on ${esc(v.name)}</span></h3>`;
        if (!p.panel) {
          h += `<div class="err">${esc(p.error || "no panel")}</div></div>`;
          continue;
        }
        if (p.panel.fields.length) h += "<dl>" + p.panel.fields.map(([k, val]) => `<dt>${esc(k)}</dt><dd>${esc(val)}</dd>`).join("") + "</dl>";
        const t = p.panel.table;
        if (t) h += "<table><tr>" + t.columns.map((c) => `<th>${esc(c)}</th>`).join("") + "</tr>" + t.rows.map((r) => "<tr>" + r.map((c) => `<td>${esc(c)}</td>`).join("") + "</tr>").join("") + "</table>";
        h += "</div>";
      }
    }
    $("apps").innerHTML = h || '<span class="muted">no app shows a panel</span>';
  }

  function tree(t) {
    const restarts = t.restarts ? ` <span class="restarts">↻${t.restarts}</span>` : "";
    const state = typeof t.state === "string" ? t.state : JSON.stringify(t.state);
    const tag = t.kind === "Supervisor" || t.kind === "supervisor" ? `<span class="muted">[${esc(t.strategy || "")}]</span>` : "";
    const kids = t.children && t.children.length ? `<ul class="tree">${t.children.map((c) => "<li>" + tree(c) + "</li>").join("")}</ul>` : "";
    const st = state === "running" ? "" : ` <span class="err">${esc(state)}</span>`;
    return `${esc(t.name)} ${tag}${restarts}${st}${kids}`;
  }

  function renderTrees(s) {
    let h = "";
    for (const v of s.nodes) {
      if (!v.snapshot || !v.snapshot.tree) continue;
      h += `<div data-tree="${esc(v.name)}"><ul class="tree tree-root"><li>${tree(v.snapshot.tree)}</li></ul></div>`;
    }
    $("trees").innerHTML = h;
  }

  // The live space-time view: a lane per node, an arrow per message from
  // its send to its delivery, matched by (sender, seq, receiver).
  function renderLanes(s, all) {
    const canvas = $("lanes");
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 800;
    const h = Math.max(120, 40 + all.length * 50);
    canvas.style.height = h + "px";
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    const left = 90, right = w - 10;
    const lane = new Map(all.map((n, i) => [n, 25 + i * ((h - 40) / Math.max(1, all.length - 1 || 1))]));
    const now = s.t_us, t0 = now - WINDOW_US;
    const x = (t) => left + ((t - t0) / WINDOW_US) * (right - left);
    g.font = "12px system-ui, sans-serif";
    for (const [n, y] of lane) {
      g.strokeStyle = "#cfd8dc";
      g.beginPath(); g.moveTo(left, y); g.lineTo(right, y); g.stroke();
      g.fillStyle = "#37474f";
      g.fillText(n, 6, y + 4);
    }
    // Sends, and what the page hides: the dashboard's own asks and their replies.
    const sends = new Map();
    const hidden = new Set();
    const events = [...state.events.values()].flat();
    for (const e of events) {
      if (e.ev !== "send") continue;
      const key = e.node + "#" + e.seq + ">" + e.peer;
      if ((e.tag && e.tag.startsWith("troupe.dashboard")) || (e.cause && hidden.has(e.cause[0] + "#" + e.cause[1] + ">" + e.node))) {
        hidden.add(key);
        continue;
      }
      sends.set(key, e);
    }
    let arrows = 0;
    const matched = new Set();
    g.lineWidth = 1;
    const color = (e) => (e.kind === "ask" ? "#1e88e5" : e.kind === "reply" || e.kind === "error" ? "#43a047" : "#5e35b1");
    for (const e of events) {
      if (e.ev !== "deliver" || arrows >= MAX_ARROWS) continue;
      const key = e.peer + "#" + e.seq + ">" + e.node;
      const send = sends.get(key);
      if (!send || !lane.has(e.node) || !lane.has(send.node)) continue;
      matched.add(key);
      arrow(g, x(send.t_us), lane.get(send.node), x(e.t_us), lane.get(e.node), color(send));
      arrows++;
    }
    for (const [key, e] of sends) {
      if (matched.has(key) || !lane.has(e.node) || !lane.has(e.peer) || arrows >= MAX_ARROWS) continue;
      // In flight, or its delivery is not (yet) in view: a short stub.
      const y0 = lane.get(e.node), y1 = lane.get(e.peer);
      g.strokeStyle = "#b0bec5";
      g.beginPath(); g.moveTo(x(e.t_us), y0); g.lineTo(x(e.t_us) + 6, y0 + (y1 - y0) * 0.25); g.stroke();
    }
    for (const e of events) {
      if (e.ev !== "drop" || !lane.has(e.node)) continue;
      const cx = x(e.t_us), cy = lane.get(e.node);
      g.strokeStyle = "#c62828";
      g.beginPath(); g.moveTo(cx - 4, cy - 4); g.lineTo(cx + 4, cy + 4); g.moveTo(cx + 4, cy - 4); g.lineTo(cx - 4, cy + 4); g.stroke();
    }
    body.dataset.arrows = String(arrows);
  }

  function arrow(g, x0, y0, x1, y1, c) {
    g.strokeStyle = c;
    g.fillStyle = c;
    g.beginPath(); g.moveTo(x0, y0); g.lineTo(x1, y1); g.stroke();
    const a = Math.atan2(y1 - y0, x1 - x0);
    g.beginPath();
    g.moveTo(x1, y1);
    g.lineTo(x1 - 6 * Math.cos(a - 0.4), y1 - 6 * Math.sin(a - 0.4));
    g.lineTo(x1 - 6 * Math.cos(a + 0.4), y1 - 6 * Math.sin(a + 0.4));
    g.fill();
  }

  connect();
})();
