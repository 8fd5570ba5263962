// The space-time diagram of `troupe trace view` (apps/src/trace_view.rs).
//
// The trace comes as columns (one array per field, events in an order
// where each comes after its lane predecessor and its send: see
// trace_graph.rs). Everything is drawn on one <canvas>, only what is in the
// window: per lane, events sorted by x for the marks and the hit tests,
// messages sorted by their left end (with the running maximum of their
// right end) for the arrows. Filters make a per-event visibility array;
// a click computes the causal past and future of an event in two linear
// passes over that order.
//
// After each drawing <body> says what it drew: data-lanes, data-arrows
// (message arrows, the dropped ones included), data-dropped, data-marks,
// data-open (sends with no delivery or drop in the trace), data-events;
// after the first one also data-render-ms (from navigation start to the
// first diagram on screen, its pixels flushed) and data-draw-ms. A
// selection sets data-selected, data-past, data-future.
//
// The URL's fragment can set the view: #axis=time|logical, proto=TEXT (the
// protocol filter), hide=KIND,... (message kinds or mark types), nodes=A,B
// (the lanes shown), x0=..&x1=.. (the window, in seconds on the time
// axis, in positions on the logical one), select=INDEX.
(function () {
  'use strict';
  const T_START = performance.now();
  const D = JSON.parse(document.getElementById('trace-data').textContent);
  const N = D.lane.length;
  const L = D.nodes.length;
  const S = D.strings;
  const lane = Int32Array.from(D.lane);
  const evk = Uint8Array.from(D.ev);
  const peer = Int32Array.from(D.peer);
  const kindIx = Int32Array.from(D.kind);
  const tagIx = Int32Array.from(D.tag);
  const labelIx = Int32Array.from(D.label);
  const X = { time: Float64Array.from(D.t), logical: Float64Array.from(D.lx) };

  const SEND = 0, DELIVER = 1, DROP = 2, TIMER = 3, CRASH = 4, RESTART = 5,
    SYNC = 6, SUPERVISION = 7, DELIVERED = 8, NOTE = 9, OTHER = 10;
  const MARK_TYPES = [
    [TIMER, 'timer', '#8b949e'], [SYNC, 'sync', '#0f766e'],
    [SUPERVISION, 'supervision', '#b45309'], [DELIVERED, 'delivered', '#7c3aed'],
    [NOTE, 'note', '#0369a1'], [CRASH, 'crash', '#dc2626'],
    [RESTART, 'restart', '#16a34a'], [OTHER, 'other', '#57606a'],
  ];
  const MARK_COLOR = [];
  const MARK_NAME = [];
  for (const [code, name, color] of MARK_TYPES) { MARK_COLOR[code] = color; MARK_NAME[code] = name; }
  const KIND_COLORS = { tell: '#2563eb', ask: '#ea580c', reply: '#16a34a', error: '#db2777' };
  const OTHER_KIND_COLOR = '#6b7280';
  const DROP_COLOR = '#dc2626';

  // ---- structure -------------------------------------------------------
  // Per event: its lane neighbours; per send: its deliveries (CSR).
  const lanePrev = new Int32Array(N).fill(-1);
  const laneNext = new Int32Array(N).fill(-1);
  {
    const last = new Int32Array(L).fill(-1);
    for (let i = 0; i < N; i++) {
      const l = lane[i];
      if (last[l] >= 0) { lanePrev[i] = last[l]; laneNext[last[l]] = i; }
      last[l] = i;
    }
  }
  const endStart = new Int32Array(N + 1);
  let arrowTotal = 0;
  for (let i = 0; i < N; i++) {
    if ((evk[i] === DELIVER || evk[i] === DROP) && peer[i] >= 0) { endStart[peer[i] + 1]++; arrowTotal++; }
  }
  for (let i = 0; i < N; i++) endStart[i + 1] += endStart[i];
  const ends = new Int32Array(arrowTotal);
  {
    const fill = endStart.slice(0, N);
    for (let i = 0; i < N; i++) {
      if ((evk[i] === DELIVER || evk[i] === DROP) && peer[i] >= 0) ends[fill[peer[i]]++] = i;
    }
  }
  const arrows = new Int32Array(arrowTotal);
  const opens = [];
  {
    let k = 0;
    for (let i = 0; i < N; i++) {
      if ((evk[i] === DELIVER || evk[i] === DROP) && peer[i] >= 0) arrows[k++] = i;
      else if (evk[i] === SEND && endStart[i + 1] === endStart[i]) opens.push(i);
    }
  }
  const openSends = Int32Array.from(opens);
  // The receiver of a send with no delivery: its `to`, from the line.
  const openTo = new Int32Array(openSends.length).fill(-1);
  {
    const laneOf = new Map(D.nodes.map((n, i) => [n, i]));
    for (let k = 0; k < openSends.length; k++) {
      const m = /"to":"((?:[^"\\]|\\.)*)"/.exec(D.lines[openSends[k]]);
      if (m) {
        let name;
        try { name = JSON.parse('"' + m[1] + '"'); } catch (e) { name = m[1]; }
        const l = laneOf.get(name);
        if (l !== undefined) openTo[k] = l;
      }
    }
  }

  // Per axis: lanes' events sorted by x (all of them, and the marks), and
  // the arrows sorted by their left end with the running max of the right.
  const index = {};
  function buildIndex(axis) {
    if (index[axis]) return index[axis];
    const x = X[axis];
    const all = [], marks = [];
    for (let l = 0; l < L; l++) { all.push([]); marks.push([]); }
    for (let i = 0; i < N; i++) {
      all[lane[i]].push(i);
      if (evk[i] >= TIMER) marks[lane[i]].push(i);
    }
    const byX = (a, b) => x[a] - x[b] || a - b;
    const sorted = (arr) => {
      const t = Int32Array.from(arr);
      for (let k = 1; k < t.length; k++) {
        if (x[t[k]] < x[t[k - 1]]) { t.sort(byX); break; }
      }
      return t;
    };
    const arr = Int32Array.from(arrows);
    const lo = (e) => Math.min(x[peer[e]], x[e]);
    const hi = (e) => Math.max(x[peer[e]], x[e]);
    arr.sort((a, b) => lo(a) - lo(b) || a - b);
    const loX = new Float64Array(arr.length), maxHi = new Float64Array(arr.length);
    let m = -Infinity;
    for (let k = 0; k < arr.length; k++) {
      loX[k] = lo(arr[k]);
      m = Math.max(m, hi(arr[k]));
      maxHi[k] = m;
    }
    let min = Infinity, max = -Infinity;
    for (let i = 0; i < N; i++) { if (x[i] < min) min = x[i]; if (x[i] > max) max = x[i]; }
    if (!isFinite(min)) { min = 0; max = 1; }
    index[axis] = { x, all: all.map(sorted), marks: marks.map(sorted), arr, loX, maxHi, min, max };
    return index[axis];
  }
  // First position in sorted `ids` whose x >= v.
  function lowerBound(ids, x, v) {
    let a = 0, b = ids.length;
    while (a < b) { const m = (a + b) >> 1; if (x[ids[m]] < v) a = m + 1; else b = m; }
    return a;
  }
  function lowerBoundArr(arr, v) {
    let a = 0, b = arr.length;
    while (a < b) { const m = (a + b) >> 1; if (arr[m] < v) a = m + 1; else b = m; }
    return a;
  }

  // ---- state -----------------------------------------------------------
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  const state = {
    axis: hash.get('axis') === 'time' || hash.get('axis') === 'logical' ? hash.get('axis') : D.axis,
    v0: 0, scale: 1, scrollY: 0,
    proto: hash.get('proto') || '',
    hiddenKinds: new Set(), hiddenMarks: new Set(), hiddenTags: new Set(),
    shownLanes: new Uint8Array(L).fill(1),
    selected: -1, past: null, future: null,
  };
  for (const h of (hash.get('hide') || '').split(',').filter(Boolean)) {
    const mt = MARK_TYPES.find((m) => m[1] === h);
    if (mt) state.hiddenMarks.add(mt[0]); else state.hiddenKinds.add(h);
  }
  if (hash.get('nodes')) {
    const want = new Set(hash.get('nodes').split(','));
    for (let l = 0; l < L; l++) state.shownLanes[l] = want.has(D.nodes[l]) ? 1 : 0;
  }

  // ---- filters ---------------------------------------------------------
  const visible = new Uint8Array(N);
  let rows = [];           // visible lanes, top to bottom
  const rowOf = new Int32Array(L);
  function kindName(i) { return kindIx[i] >= 0 ? S[kindIx[i]] : 'other'; }
  function applyFilters() {
    const terms = state.proto.split(',').map((s) => s.trim()).filter(Boolean);
    const include = terms.filter((t) => !t.startsWith('!')).map((t) => t.toLowerCase());
    const exclude = terms.filter((t) => t.startsWith('!')).map((t) => t.slice(1).toLowerCase()).filter(Boolean);
    const tagPass = new Uint8Array(S.length + 1);
    for (let s = -1; s < S.length; s++) {
      const tag = s >= 0 ? S[s].toLowerCase() : '';
      let ok = include.length === 0 || (s >= 0 && include.some((t) => tag.includes(t)));
      if (ok && s >= 0 && exclude.some((t) => tag.includes(t))) ok = false;
      if (ok && s >= 0 && state.hiddenTags.has(S[s])) ok = false;
      tagPass[s + 1] = ok ? 1 : 0;
    }
    const kindPass = new Uint8Array(S.length + 1);
    for (let s = -1; s < S.length; s++) {
      kindPass[s + 1] = state.hiddenKinds.has(s >= 0 ? S[s] : 'other') ? 0 : 1;
    }
    for (let i = 0; i < N; i++) {
      let ok = state.shownLanes[lane[i]] === 1;
      const k = evk[i];
      if (ok) {
        if (k <= DROP) {
          ok = kindPass[kindIx[i] + 1] === 1 && tagPass[tagIx[i] + 1] === 1;
        } else if (state.hiddenMarks.has(k)) {
          ok = false;
        } else if (tagIx[i] >= 0 || k === TIMER || k === SYNC || k === DELIVERED || k === SUPERVISION) {
          ok = tagPass[tagIx[i] + 1] === 1;
        }
      }
      visible[i] = ok ? 1 : 0;
    }
    rows = [];
    for (let l = 0; l < L; l++) { rowOf[l] = -1; if (state.shownLanes[l]) { rowOf[l] = rows.length; rows.push(l); } }
  }

  // ---- causal past and future -----------------------------------------
  function select(i) {
    state.selected = i;
    if (i < 0) { state.past = state.future = null; return; }
    const fut = new Uint8Array(N), past = new Uint8Array(N);
    fut[i] = 1;
    for (let j = i; j < N; j++) {
      if (!fut[j]) continue;
      if (laneNext[j] >= 0) fut[laneNext[j]] = 1;
      if (evk[j] === SEND) {
        for (let k = endStart[j]; k < endStart[j + 1]; k++) {
          if (evk[ends[k]] === DELIVER) fut[ends[k]] = 1;
        }
      }
    }
    past[i] = 1;
    for (let j = i; j >= 0; j--) {
      if (!past[j]) continue;
      if (lanePrev[j] >= 0) past[lanePrev[j]] = 1;
      if (evk[j] === DELIVER && peer[j] >= 0) past[peer[j]] = 1;
    }
    let np = 0, nf = 0;
    for (let j = 0; j < N; j++) { np += past[j]; nf += fut[j]; }
    state.past = past; state.future = fut;
    document.body.dataset.selected = String(i);
    document.body.dataset.past = String(np - 1);
    document.body.dataset.future = String(nf - 1);
  }

  // ---- drawing ---------------------------------------------------------
  const canvas = document.getElementById('canvas');
  const main = document.getElementById('main');
  const ctx = canvas.getContext('2d');
  const GUTTER = 118, TOP = 30, RIGHT = 16;
  let W = 0, H = 0, laneH = 40;
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    W = Math.max(200, main.clientWidth);
    H = Math.max(120, main.clientHeight);
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  function layoutRows() {
    laneH = Math.max(26, Math.min(120, (H - TOP - 10) / Math.max(1, rows.length)));
    const total = rows.length * laneH;
    state.scrollY = Math.max(0, Math.min(state.scrollY, total - (H - TOP - 10)));
  }
  const px = (v) => GUTTER + (v - state.v0) * state.scale;
  const val = (p) => state.v0 + (p - GUTTER) / state.scale;
  const rowY = (r) => TOP + r * laneH + laneH / 2 - state.scrollY;
  function fit() {
    const ix = buildIndex(state.axis);
    const span = Math.max(ix.max - ix.min, state.axis === 'time' ? 1 : 1);
    const width = W - GUTTER - RIGHT;
    state.scale = width / (span * 1.04);
    state.v0 = ix.min - span * 0.01;
  }
  const unitPerSecond = () => (state.axis === 'time' ? 1e6 : 1);

  function colorOfKind(i) {
    const k = kindIx[i] >= 0 ? S[kindIx[i]] : '';
    return KIND_COLORS[k] || OTHER_KIND_COLOR;
  }

  function fmtTime(us) {
    const a = Math.abs(us);
    if (a >= 1e6) return (us / 1e6).toFixed(a >= 1e7 ? 2 : 3).replace(/\.?0+$/, '') + ' s';
    if (a >= 1e3) return (us / 1e3).toFixed(a >= 1e4 ? 1 : 2).replace(/\.?0+$/, '') + ' ms';
    return Math.round(us) + ' µs';
  }
  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function drawAxis() {
    ctx.fillStyle = '#f6f8fa';
    ctx.fillRect(GUTTER, 0, W - GUTTER, TOP - 6);
    const step = Math.max(niceStep(90 / state.scale), state.axis === 'logical' ? 1 : 1e-9);
    const first = Math.ceil(val(GUTTER) / step) * step;
    ctx.strokeStyle = '#eaeef2';
    ctx.fillStyle = '#57606a';
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'center';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let v = first; px(v) <= W - RIGHT + 0.5; v += step) {
      const x = Math.round(px(v)) + 0.5;
      ctx.moveTo(x, TOP - 6);
      ctx.lineTo(x, H);
      const text = state.axis === 'time' ? fmtTime(v) : String(Math.round(v));
      ctx.fillText(text, x, (TOP - 6) / 2);
    }
    ctx.stroke();
    ctx.textAlign = 'left';
    ctx.fillStyle = '#8b949e';
    ctx.fillText(state.axis === 'time' ? 'time' : 'logical', 8, (TOP - 6) / 2);
  }

  function drawLanes(ix) {
    ctx.font = '600 12px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    for (let r = 0; r < rows.length; r++) {
      const l = rows[r];
      const y = rowY(r);
      if (y < TOP - laneH || y > H + laneH) continue;
      if (r % 2 === 1) {
        ctx.fillStyle = '#fafbfc';
        ctx.fillRect(0, y - laneH / 2, W, laneH);
      }
      // The lane: solid while up, dashed grey between a crash and its restart.
      const x = ix.x;
      const lm = ix.marks[l];
      let down = false, from = GUTTER;
      ctx.lineWidth = 1.5;
      const seg = (x0, x1, isDown) => {
        if (x1 <= x0) return;
        ctx.strokeStyle = isDown ? '#d0d7de' : '#57606a';
        ctx.setLineDash(isDown ? [3, 4] : []);
        ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
      };
      for (let k = 0; k < lm.length; k++) {
        const i = lm[k];
        if (evk[i] === CRASH && !down) {
          const p = Math.max(GUTTER, Math.min(W, px(x[i])));
          seg(from, p, false); from = p; down = true;
        } else if (evk[i] === RESTART && down) {
          const p = Math.max(GUTTER, Math.min(W, px(x[i])));
          seg(from, p, true); from = p; down = false;
        }
      }
      seg(from, W - 4, down);
      ctx.setLineDash([]);
      ctx.fillStyle = '#f6f8fa';
      ctx.fillRect(0, y - laneH / 2, GUTTER - 8, laneH);
      ctx.fillStyle = '#1f2328';
      ctx.textAlign = 'right';
      let name = D.nodes[l];
      if (name.length > 14) name = name.slice(0, 13) + '…';
      ctx.fillText(name, GUTTER - 14, y);
    }
    ctx.textAlign = 'left';
  }

  // Arrows in the window, by color, one path per color; returns counts.
  function drawArrows(ix, only, emph, labels) {
    const x = ix.x;
    const vmin = val(GUTTER - 2), vmax = val(W);
    const start = lowerBoundArr(ix.maxHi, vmin);
    const end = lowerBoundArr(ix.loX, vmax + 1e-9);
    const paths = new Map();
    const drops = [];
    let drawn = 0, dropped = 0;
    const heads = [];
    // With thousands of arrows in view many fall on the same pixels: each
    // (start pixel, end pixel, lanes, kind) is stroked once (all counted).
    const dedupe = end - start > 4000 ? new Map() : null;
    for (let k = start; k < end && k < ix.arr.length; k++) {
      const d = ix.arr[k];
      const s = peer[d];
      if (!visible[d] || !visible[s]) continue;
      if (only && !(only(d) && only(s))) continue;
      if (rowOf[lane[s]] < 0 || rowOf[lane[d]] < 0) continue;
      const lo = Math.min(x[s], x[d]), hi = Math.max(x[s], x[d]);
      if (hi < vmin || lo > vmax) continue;
      const x1 = px(x[s]), y1 = rowY(rowOf[lane[s]]);
      const x2 = px(x[d]), y2 = rowY(rowOf[lane[d]]);
      if (Math.max(y1, y2) < TOP - 4 || Math.min(y1, y2) > H + 4) continue;
      drawn++;
      if (evk[d] === DROP) dropped++;
      if (dedupe) {
        const group = ((rowOf[lane[s]] * rows.length) + rowOf[lane[d]]) * 32
          + (evk[d] === DROP ? 31 : (kindIx[s] + 1) % 31);
        const clamp = (v) => Math.max(0, Math.min(200000, Math.round(v) + 100000));
        const key = clamp(x1) * 200001 + clamp(x2);
        let set = dedupe.get(group);
        if (!set) { set = new Set(); dedupe.set(group, set); }
        if (set.has(key)) continue;
        set.add(key);
      }
      if (labels && labels.length < 5 * 200) labels.push(d, x1, y1, x2, y2);
      if (evk[d] === DROP) {
        drops.push(x1, y1, x1 + (x2 - x1) * 0.8, y1 + (y2 - y1) * 0.8);
        continue;
      }
      const c = emph ? emph(d) : colorOfKind(s);
      let p = paths.get(c);
      if (!p) { p = []; paths.set(c, p); }
      p.push(x1, y1, x2, y2);
      if (heads.length < 4 * 4000) heads.push(x1, y1, x2, y2);
    }
    const many = drawn > 4000;
    ctx.lineWidth = emph ? 2.2 : (many ? 0.8 : 1.3);
    for (const [c, p] of paths) {
      ctx.strokeStyle = c;
      ctx.beginPath();
      for (let k = 0; k < p.length; k += 4) { ctx.moveTo(p[k], p[k + 1]); ctx.lineTo(p[k + 2], p[k + 3]); }
      ctx.stroke();
      if (!many) {
        ctx.fillStyle = c;
        ctx.beginPath();
        for (let k = 0; k < p.length; k += 4) arrowHead(p[k], p[k + 1], p[k + 2], p[k + 3]);
        ctx.fill();
      }
    }
    if (drops.length) {
      ctx.strokeStyle = DROP_COLOR;
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      for (let k = 0; k < drops.length; k += 4) { ctx.moveTo(drops[k], drops[k + 1]); ctx.lineTo(drops[k + 2], drops[k + 3]); }
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      const r = many ? 2.5 : 4;
      for (let k = 0; k < drops.length; k += 4) {
        const cx = drops[k + 2], cy = drops[k + 3];
        ctx.moveTo(cx - r, cy - r); ctx.lineTo(cx + r, cy + r);
        ctx.moveTo(cx - r, cy + r); ctx.lineTo(cx + r, cy - r);
      }
      ctx.stroke();
    }
    // Message ends, when there is room to see them.
    if (!many && drawn < 1500) {
      ctx.fillStyle = '#1f2328';
      ctx.beginPath();
      for (let k = 0; k < heads.length; k += 4) {
        ctx.moveTo(heads[k] + 2, heads[k + 1]);
        ctx.arc(heads[k], heads[k + 1], 2, 0, 2 * Math.PI);
      }
      ctx.fill();
    }
    return { drawn, dropped };
  }
  function arrowHead(x1, y1, x2, y2) {
    const dx = x2 - x1, dy = y2 - y1;
    const len = Math.hypot(dx, dy);
    if (len < 14) return;
    const ux = dx / len, uy = dy / len, s = 7, w = 3.2;
    ctx.moveTo(x2, y2);
    ctx.lineTo(x2 - ux * s - uy * w, y2 - uy * s + ux * w);
    ctx.lineTo(x2 - ux * s + uy * w, y2 - uy * s - ux * w);
    ctx.closePath();
  }

  // Sends with no delivery or drop: a short grey stub towards the receiver.
  function drawOpen(ix, only) {
    const x = ix.x;
    let n = 0;
    ctx.strokeStyle = '#8b949e';
    ctx.lineWidth = 1;
    ctx.setLineDash([2, 2]);
    ctx.beginPath();
    for (let k = 0; k < openSends.length; k++) {
      const s = openSends[k];
      if (!visible[s] || (only && !only(s))) continue;
      const r = rowOf[lane[s]];
      if (r < 0) continue;
      const x1 = px(x[s]);
      if (x1 < GUTTER - 2 || x1 > W) continue;
      const y1 = rowY(r);
      const tr = openTo[k] >= 0 ? rowOf[openTo[k]] : -1;
      const dir = tr < 0 ? 0 : Math.sign(tr - r);
      ctx.moveTo(x1, y1);
      ctx.lineTo(x1 + 10, y1 + dir * Math.min(laneH * 0.45, 12));
      n++;
    }
    ctx.stroke();
    ctx.setLineDash([]);
    return n;
  }

  function drawMarks(ix, only, labels) {
    const x = ix.x;
    const vmin = val(GUTTER - 8), vmax = val(W + 8);
    let n = 0;
    const small = laneH < 34;
    for (let r = 0; r < rows.length; r++) {
      const l = rows[r];
      const y = rowY(r);
      if (y < TOP - laneH || y > H + laneH) continue;
      const lm = ix.marks[l];
      const a = lowerBound(lm, x, vmin), b = lowerBound(lm, x, vmax);
      let lastPx = -1e9, lastKind = -1;
      for (let k = a; k < b; k++) {
        const i = lm[k];
        if (!visible[i] || (only && !only(i))) continue;
        n++;
        const p = px(x[i]);
        const kind = evk[i];
        // Marks on one pixel column are drawn once.
        if (kind === lastKind && p - lastPx < 0.5) continue;
        lastPx = p; lastKind = kind;
        drawMark(kind, p, y, small);
        if (labels && labels.length < 3 * 300) labels.push(i, p, y);
      }
    }
    return n;
  }
  function drawMark(kind, x, y, small) {
    const c = MARK_COLOR[kind] || MARK_COLOR[OTHER];
    ctx.fillStyle = c;
    ctx.strokeStyle = c;
    switch (kind) {
      case TIMER:
        ctx.fillRect(x - 0.75, y - 5, 1.5, 10);
        break;
      case SYNC:
        ctx.fillRect(x - 2.5, y + 3, 5, 5);
        break;
      case SUPERVISION:
        ctx.beginPath(); ctx.moveTo(x, y - 11); ctx.lineTo(x - 5, y - 3); ctx.lineTo(x + 5, y - 3); ctx.closePath(); ctx.fill();
        break;
      case DELIVERED:
        ctx.beginPath(); ctx.arc(x, y, small ? 3 : 4, 0, 2 * Math.PI); ctx.fill();
        break;
      case NOTE:
        ctx.beginPath(); ctx.moveTo(x, y - 10); ctx.lineTo(x + 4, y - 6); ctx.lineTo(x, y - 2); ctx.lineTo(x - 4, y - 6); ctx.closePath(); ctx.fill();
        break;
      case CRASH:
        ctx.lineWidth = 3;
        ctx.beginPath(); ctx.moveTo(x - 7, y - 7); ctx.lineTo(x + 7, y + 7); ctx.moveTo(x - 7, y + 7); ctx.lineTo(x + 7, y - 7); ctx.stroke();
        break;
      case RESTART:
        ctx.beginPath(); ctx.moveTo(x - 2, y - 8); ctx.lineTo(x + 9, y); ctx.lineTo(x - 2, y + 8); ctx.closePath(); ctx.fill();
        break;
      default:
        ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.fill();
    }
  }

  function shortText(i) {
    const k = evk[i];
    let t = labelIx[i] >= 0 ? S[labelIx[i]] : MARK_NAME[k];
    if (k === SUPERVISION) t = t.replace(/^supervision /, '');
    return t.length > 34 ? t.slice(0, 33) + '…' : t;
  }
  const overlaps = (placed, r) => placed.some((q) =>
    r.x < q.x + q.w && q.x < r.x + r.w && r.y < q.y + q.h && q.y < r.y + r.h);
  function drawArrowLabels(list, placed) {
    ctx.font = '10px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'left';
    for (let k = 0; k < list.length; k += 5) {
      const d = list[k], s = peer[d];
      const lost = evk[d] === DROP;
      const tag = (tagIx[s] >= 0 && S[tagIx[s]] ? S[tagIx[s]] : kindName(s)) + (lost ? ' ✕' : '');
      // A lost message's line stops at 80 % of the way.
      const f = lost ? 0.4 : 0.5;
      const mx = list[k + 1] + (list[k + 3] - list[k + 1]) * f;
      const my = list[k + 2] + (list[k + 4] - list[k + 2]) * f;
      const w = ctx.measureText(tag).width + 4;
      const r = { x: mx + 3, y: my - 7, w, h: 13 };
      if (r.x + r.w > W) r.x = mx - 3 - w;
      if (overlaps(placed, r)) continue;
      placed.push(r);
      ctx.fillStyle = 'rgba(255,255,255,0.85)';
      ctx.fillRect(r.x, r.y, r.w, r.h);
      ctx.fillStyle = lost ? DROP_COLOR : colorOfKind(s);
      ctx.fillText(tag, r.x + 2, my);
    }
  }
  // Crashes, restarts, notes, broadcast deliveries and supervision first;
  // timers and syncs (frequent) only when there are few marks.
  function drawMarkLabels(list, placed, all) {
    ctx.font = '10px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'left';
    const order = [];
    for (let k = 0; k < list.length; k += 3) {
      const routine = evk[list[k]] === TIMER || evk[list[k]] === SYNC;
      if (!routine) order.push(k);
    }
    if (all) for (let k = 0; k < list.length; k += 3) if (evk[list[k]] === TIMER || evk[list[k]] === SYNC) order.push(k);
    for (const k of order) {
      const i = list[k], x = list[k + 1], y = list[k + 2];
      const text = shortText(i);
      const w = ctx.measureText(text).width + 4;
      for (const dy of [-20, 16, -32]) {
        const r = { x: x - 2, y: y + dy - 6, w, h: 12 };
        if (r.x + r.w > W) r.x = x + 2 - w;
        if (overlaps(placed, r)) continue;
        placed.push(r);
        ctx.fillStyle = 'rgba(255,255,255,0.85)';
        ctx.fillRect(r.x, r.y, r.w, r.h);
        ctx.fillStyle = MARK_COLOR[evk[i]] || MARK_COLOR[OTHER];
        ctx.fillText(text, r.x + 2, y + dy);
        break;
      }
    }
  }

  let frame = 0;
  function draw() {
    frame = 0;
    const ix = buildIndex(state.axis);
    layoutRows();
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, W, H);
    drawAxis();
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, TOP - 6, W, H - TOP + 6);
    ctx.clip();
    drawLanes(ix);
    ctx.beginPath();
    ctx.rect(GUTTER - 6, TOP - 6, W - GUTTER + 6, H - TOP + 6);
    ctx.clip();
    const sel = state.selected;
    if (sel >= 0) ctx.globalAlpha = 0.16;
    const arrowLabels = [], markLabels = [];
    const a = drawArrows(ix, null, null, arrowLabels);
    const open = drawOpen(ix, null);
    const marks = drawMarks(ix, null, markLabels);
    // Words, when there is room for them: message types along the arrows,
    // what the marks say next to them.
    const placed = [];
    if (a.drawn <= 80) drawArrowLabels(arrowLabels, placed);
    if (marks <= 200) drawMarkLabels(markLabels, placed, marks <= 15);
    if (sel >= 0) {
      ctx.globalAlpha = 1;
      const past = state.past, fut = state.future;
      const related = (i) => past[i] === 1 || fut[i] === 1;
      drawArrows(ix, related, (d) => (fut[d] === 1 && fut[peer[d]] === 1 ? '#d9480f' : '#1864ab'));
      drawOpen(ix, related);
      drawMarks(ix, related);
      const r = rowOf[lane[sel]];
      if (r >= 0) {
        ctx.strokeStyle = '#1f2328';
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(px(ix.x[sel]), rowY(r), 8, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    ctx.restore();
    const b = document.body.dataset;
    b.lanes = String(rows.length);
    b.arrows = String(a.drawn);
    b.dropped = String(a.dropped);
    b.marks = String(marks);
    b.open = String(open);
    b.events = String(N);
    b.axis = state.axis;
    info(a, marks);
  }
  function redraw() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  // ---- text around the canvas ------------------------------------------
  const infoEl = document.getElementById('info');
  function info(a, marks) {
    let text = `${N} events, ${L} nodes · in view: ${a.drawn} messages (${a.dropped} lost), ${marks} marks`;
    if (state.selected >= 0) {
      text += ` · selected: past ${document.body.dataset.past}, future ${document.body.dataset.future} events (click empty space to clear)`;
    }
    if (D.cut > 0) text += ` · ${D.cut} deliveries not orderable after their send (inconsistent input)`;
    infoEl.textContent = text;
  }
  function legend() {
    const el = document.getElementById('legend');
    const items = [];
    const kindsPresent = new Set();
    for (let i = 0; i < N; i++) if (evk[i] === SEND) kindsPresent.add(kindName(i));
    for (const k of ['tell', 'ask', 'reply', 'error']) {
      if (kindsPresent.has(k)) items.push(`<span class="item"><span class="swatch" style="background:${KIND_COLORS[k]}"></span>${k}</span>`);
    }
    let drops = 0;
    for (let i = 0; i < N; i++) if (evk[i] === DROP) drops++;
    if (drops) items.push(`<span class="item"><span style="color:${DROP_COLOR}">- - ✕</span>lost</span>`);
    const shapes = { timer: '|', sync: '■', supervision: '▲', delivered: '●', note: '◆', crash: '✕', restart: '▶', other: '●' };
    const present = new Set();
    for (let i = 0; i < N; i++) if (evk[i] >= TIMER) present.add(evk[i]);
    for (const [code, name, color] of MARK_TYPES) {
      if (present.has(code)) items.push(`<span class="item"><span style="color:${color};font-weight:700">${shapes[name]}</span>${name}</span>`);
    }
    el.innerHTML = items.join('');
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
  }
  function when(i) {
    const t = D.t[i];
    let s = `t=${fmtTime(t)}`;
    if (D.t0 > 1e15) s += ` (${new Date((D.t0 + t) / 1000).toISOString()})`;
    return `${s}, logical ${D.lx[i]}`;
  }
  function parsed(i) {
    try { return JSON.parse(D.lines[i]); } catch (e) { return {}; }
  }
  function oneLine(i) {
    const k = evk[i];
    const s = k === SEND ? i : peer[i];
    const tag = s >= 0 && tagIx[s] >= 0 ? S[tagIx[s]] : '';
    const what = k === SEND ? 'send' : k === DELIVER ? 'delivery' : 'loss';
    return `${what} of ${s >= 0 ? kindName(s) : ''} ${tag}`.trim();
  }
  function describe(i) {
    const k = evk[i];
    const here = D.nodes[lane[i]];
    let h = '';
    if (k <= DROP) {
      const s = k === SEND ? i : peer[i];
      if (s < 0) {
        h += `<b>${k === DELIVER ? 'delivery' : 'drop'}</b> at ${esc(here)} — its send is not in the trace<br>${when(i)}`;
      } else {
        const m = parsed(s);
        h += `<b>${esc(m.kind || '')} ${esc(m.tag || '(no tag)')}</b> ${esc(D.nodes[lane[s]])} → ${esc(m.to)} · seq ${m.seq} · ${m.bytes} B<br>`;
        h += `sent ${when(s)}<br>`;
        for (let q = endStart[s]; q < endStart[s + 1]; q++) {
          const d = ends[q];
          const dt = D.t[d] - D.t[s];
          if (evk[d] === DROP) {
            h += `<span style="color:${DROP_COLOR}">lost</span> (${esc(parsed(d).reason || '')}) ${when(d)}<br>`;
          } else {
            h += `delivered ${when(d)}${D.t0 > 1e15 ? '' : ` (+${fmtTime(dt)})`}<br>`;
          }
        }
        if (endStart[s + 1] === endStart[s]) h += 'no delivery or drop in the trace<br>';
        if (m.msg) h += `message: ${esc(m.msg)}<br>`;
        if (m.lamport !== undefined) h += `Lamport stamp ${m.lamport}<br>`;
        if (m.vector) h += `vector stamp ${esc(m.vector.map((p) => p[0] + ':' + p[1]).join(' '))}<br>`;
      }
    } else {
      h += `<b>${esc(labelIx[i] >= 0 ? S[labelIx[i]] : MARK_NAME[k])}</b> at ${esc(here)}<br>${when(i)}<br>`;
    }
    h += `<code>${esc(D.lines[i])}</code>`;
    return h;
  }

  // ---- interaction -----------------------------------------------------
  const tip = document.getElementById('tip');
  // The visible events under the mouse on its lane, nearest first (on one
  // pixel, message ends before marks); [] when none.
  function hits(mx, my) {
    const ix = buildIndex(state.axis);
    const r = Math.floor((my - TOP + state.scrollY) / laneH);
    if (r < 0 || r >= rows.length || mx < GUTTER - 6) return [];
    if (Math.abs(my - rowY(r)) > Math.max(12, laneH / 2)) return [];
    const ids = ix.all[rows[r]];
    const x = ix.x;
    const a = lowerBound(ids, x, val(mx - 7)), b = lowerBound(ids, x, val(mx + 7));
    const found = [];
    for (let k = a; k < b; k++) {
      const i = ids[k];
      if (visible[i]) found.push([Math.round(Math.abs(px(x[i]) - mx)), evk[i] <= DROP ? 0 : 1, k, i]);
    }
    found.sort((p, q) => p[0] - q[0] || p[1] - q[1] || p[2] - q[2]);
    if (!found.length) return [];
    return found.filter((f) => f[0] <= found[0][0] + 1).map((f) => f[3]);
  }
  function hit(mx, my) {
    const h = hits(mx, my);
    return h.length ? h[0] : -1;
  }
  let drag = null;
  canvas.addEventListener('mousedown', (e) => {
    drag = { x: e.clientX, y: e.clientY, v0: state.v0, sy: state.scrollY, moved: false };
    canvas.classList.add('dragging');
  });
  window.addEventListener('mouseup', (e) => {
    if (!drag) return;
    canvas.classList.remove('dragging');
    if (!drag.moved) {
      const rect = canvas.getBoundingClientRect();
      select(hit(e.clientX - rect.left, e.clientY - rect.top));
      redraw();
    }
    drag = null;
  });
  window.addEventListener('mousemove', (e) => {
    const rect = canvas.getBoundingClientRect();
    const mx = e.clientX - rect.left, my = e.clientY - rect.top;
    if (drag) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      state.v0 = drag.v0 - dx / state.scale;
      state.scrollY = drag.sy - dy;
      tip.hidden = true;
      redraw();
      return;
    }
    if (mx < 0 || my < 0 || mx > W || my > H) { tip.hidden = true; return; }
    const here = hits(mx, my);
    if (!here.length) { tip.hidden = true; return; }
    let h = describe(here[0]);
    if (here.length > 1) {
      const more = here.slice(1, 6).map((j) => esc(evk[j] <= DROP ? oneLine(j) : shortText(j)));
      h += `<br>also here: ${more.join(' · ')}${here.length > 6 ? ` · and ${here.length - 6} more` : ''}`;
    }
    tip.innerHTML = h;
    tip.hidden = false;
    const tw = tip.offsetWidth, th = tip.offsetHeight;
    tip.style.left = Math.min(W - tw - 4, mx + 14) + 'px';
    tip.style.top = (my + 14 + th > H ? Math.max(0, my - th - 10) : my + 14) + 'px';
  });
  function zoom(factor, atPx) {
    const v = val(atPx);
    state.scale *= factor;
    state.v0 = v - (atPx - GUTTER) / state.scale;
    redraw();
  }
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    if (e.shiftKey) { state.scrollY += e.deltaY; redraw(); return; }
    zoom(Math.exp(-e.deltaY * 0.0015), e.clientX - rect.left);
  }, { passive: false });
  window.addEventListener('keydown', (e) => {
    if (e.target && e.target.tagName === 'INPUT') return;
    const mid = GUTTER + (W - GUTTER) / 2;
    if (e.key === '+' || e.key === '=') zoom(1.5, mid);
    else if (e.key === '-') zoom(1 / 1.5, mid);
    else if (e.key === '0') { fit(); redraw(); }
    else if (e.key === 'ArrowLeft') { state.v0 -= (W - GUTTER) * 0.2 / state.scale; redraw(); }
    else if (e.key === 'ArrowRight') { state.v0 += (W - GUTTER) * 0.2 / state.scale; redraw(); }
    else if (e.key === 'Escape') { select(-1); redraw(); }
  });
  document.getElementById('fit').onclick = () => { fit(); redraw(); };
  document.getElementById('zin').onclick = () => zoom(1.5, GUTTER + (W - GUTTER) / 2);
  document.getElementById('zout').onclick = () => zoom(1 / 1.5, GUTTER + (W - GUTTER) / 2);
  const axisSel = document.getElementById('axis');
  axisSel.value = state.axis;
  axisSel.onchange = () => { state.axis = axisSel.value; fit(); redraw(); };
  const protoEl = document.getElementById('proto');
  protoEl.value = state.proto;
  protoEl.addEventListener('input', () => { state.proto = protoEl.value; applyFilters(); redraw(); });

  function chip(parent, name, color, checked, onchange, shape) {
    const label = document.createElement('label');
    label.className = 'chip';
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.checked = checked;
    box.onchange = () => onchange(box.checked);
    label.appendChild(box);
    const sw = document.createElement('span');
    if (shape) { sw.textContent = shape; sw.style.color = color; sw.style.fontWeight = '700'; } else { sw.className = 'swatch'; sw.style.background = color; }
    label.appendChild(sw);
    label.appendChild(document.createTextNode(name));
    parent.appendChild(label);
  }
  function controls() {
    const kinds = document.getElementById('kinds');
    const present = new Set();
    const tags = new Map();
    for (let i = 0; i < N; i++) {
      if (evk[i] === SEND) {
        present.add(kindName(i));
        const t = tagIx[i] >= 0 ? S[tagIx[i]] : '';
        tags.set(t, (tags.get(t) || 0) + 1);
      }
    }
    for (const k of [...present].sort()) {
      chip(kinds, k, KIND_COLORS[k] || OTHER_KIND_COLOR, !state.hiddenKinds.has(k), (on) => {
        if (on) state.hiddenKinds.delete(k); else state.hiddenKinds.add(k);
        applyFilters(); redraw();
      });
    }
    const marks = document.getElementById('markTypes');
    const shapes = { timer: '|', sync: '■', supervision: '▲', delivered: '●', note: '◆', crash: '✕', restart: '▶', other: '●' };
    const markPresent = new Set();
    for (let i = 0; i < N; i++) if (evk[i] >= TIMER) markPresent.add(evk[i]);
    for (const [code, name, color] of MARK_TYPES) {
      if (!markPresent.has(code)) continue;
      chip(marks, name, color, !state.hiddenMarks.has(code), (on) => {
        if (on) state.hiddenMarks.delete(code); else state.hiddenMarks.add(code);
        applyFilters(); redraw();
      }, shapes[name]);
    }
    const typesEl = document.getElementById('types');
    for (const [t, n] of [...tags].sort((a, b) => b[1] - a[1])) {
      chip(typesEl, `${t || '(no tag: replies)'} (${n})`, '#d0d7de', true, (on) => {
        if (on) state.hiddenTags.delete(t); else state.hiddenTags.add(t);
        applyFilters(); redraw();
      });
    }
    const nodesEl = document.getElementById('nodes');
    for (let l = 0; l < L; l++) {
      chip(nodesEl, D.nodes[l], '#57606a', state.shownLanes[l] === 1, (on) => {
        state.shownLanes[l] = on ? 1 : 0;
        applyFilters(); redraw();
      });
    }
  }

  // ---- first drawing ---------------------------------------------------
  resize();
  applyFilters();
  controls();
  legend();
  fit();
  const x0 = parseFloat(hash.get('x0')), x1 = parseFloat(hash.get('x1'));
  if (isFinite(x0) && isFinite(x1) && x1 > x0) {
    const k = unitPerSecond();
    state.v0 = x0 * k;
    state.scale = (W - GUTTER - RIGHT) / ((x1 - x0) * k);
  }
  const want = parseInt(hash.get('select'), 10);
  if (want >= 0 && want < N) select(want);
  const T_DRAW = performance.now();
  draw();
  // Flush the canvas (its commands are otherwise rasterized later) so that
  // the time measured includes the pixels.
  ctx.getImageData(0, 0, 1, 1);
  const T_END = performance.now();
  document.body.dataset.drawMs = (T_END - T_DRAW).toFixed(1);
  document.body.dataset.setupMs = (T_DRAW - T_START).toFixed(1);
  document.body.dataset.renderMs = T_END.toFixed(1);
  window.addEventListener('resize', () => { resize(); redraw(); });
  // For scripts and tests driving the page: where event `i` is drawn
  // (canvas coordinates; null when its lane is hidden), and the view.
  window.traceView = {
    position(i) {
      const r = rowOf[lane[i]];
      return r < 0 ? null : { x: px(X[state.axis][i]), y: rowY(r) };
    },
    state,
    kinds: evk,
    // Draw now what an interaction asked to be drawn at the next frame.
    flush() {
      if (frame) { cancelAnimationFrame(frame); draw(); }
    },
  };
})();
