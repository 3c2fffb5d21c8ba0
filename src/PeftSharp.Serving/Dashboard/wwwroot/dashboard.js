// PeftSharp training dashboard: polls /api/metrics for each run (the records metrics.jsonl gained since the last poll)
// and redraws SVG line charts. Plain JS, no dependencies. Every drawn series is an SVG <path> carrying
// data-series, data-points and data-last, so a test (or a curious user) can read what is plotted from the DOM.
"use strict";

const POLL_MS = 1000;
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const runs = new Map();   // name -> { records: [], offset, line, info, colour }

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${url}: HTTP ${r.status}`);
  return body;
}

async function poll() {
  let more = false;   // a run's file holds more than one answer sends (a long run opened now): read on at once
  try {
    const list = await getJson("api/runs");
    document.getElementById("folder").textContent = list.folder;
    for (const name of list.runs)
      if (!runs.has(name)) runs.set(name, { records: [], offset: 0, line: 0, info: {}, colour: COLOURS[runs.size % COLOURS.length] });
    // A run the server cannot read (a corrupt metrics.jsonl in a compare folder) is named, and the others go on
    // updating; a vanished server (a network TypeError) ends the whole poll.
    const errors = [];
    for (const [name, run] of runs) {
      let m;
      try { m = await getJson(`api/metrics?run=${encodeURIComponent(name)}&offset=${run.offset}&line=${run.line}`); }
      catch (e) { if (e instanceof TypeError) throw e; errors.push(`${name}: ${e.message}`); continue; }
      if (m.reset) run.records = [];
      run.records.push(...m.records);
      run.offset = m.offset; run.line = m.line; run.info = m;
      more ||= m.more === true;
    }
    showError(errors.length ? errors.join("\n") : null);
    render();
  } catch (e) {
    showError(e instanceof TypeError ? "the dashboard server is gone (training process ended?); showing the last figures read" : e.message);
  }
  setTimeout(poll, more ? 0 : POLL_MS);
}

function showError(text) {
  const el = document.getElementById("error");
  el.hidden = !text;
  el.textContent = text || "";
}

const steps = run => run.records.filter(r => r.loss !== undefined);
const evals = run => run.records.filter(r => r.eval_loss !== undefined);
const series = (rs, key) => rs.filter(r => typeof r[key] === "number").map(r => [r.step, r[key]]);

// finished (summary.json), stopped (its `peft train` process is gone without one), running, or elsewhere (it trains
// on another machine, so the server cannot see whether it still runs); the server decides.
const state = run => run.info.state ?? (run.info.finished ? "finished" : "running");
const stateText = run => state(run) === "elsewhere" ? `on ${run.info.plan?.host ?? "another machine"} (not this one: cannot tell whether it still runs)` : state(run);

function render() {
  let total = 0;
  const cards = [];
  for (const [name, run] of runs) {
    total += run.records.length;
    cards.push(card(name, run));
  }
  document.getElementById("runs").replaceChildren(...cards);
  const status = document.getElementById("status");
  status.dataset.records = total;
  const running = [...runs.values()].filter(r => state(r) === "running").length;
  status.textContent = `${runs.size} run(s), ${running} running · ${total} records · updated ${new Date().toLocaleTimeString()}`;

  const all = [...runs].map(([name, run]) => ({ name, run }));
  const multi = all.length > 1;
  const label = (name, what) => multi ? `${name} ${what}` : what;
  draw("chart-loss", all.flatMap(({ name, run }) => [
    { name: label(name, "train loss"), colour: run.colour, points: series(steps(run), "loss") },
    { name: label(name, "eval loss"), colour: run.colour, points: series(evals(run), "eval_loss"), dots: true },
  ]));
  draw("chart-accuracy", all.map(({ name, run }) => ({ name: label(name, "exact match"), colour: run.colour, points: series(evals(run), "eval_accuracy"), dots: true })), [0, 1]);
  draw("chart-lr", all.map(({ name, run }) => ({ name: label(name, "learning rate"), colour: run.colour, points: series(steps(run), "lr") })));
  draw("chart-speed", all.map(({ name, run }) => {
    const key = steps(run).some(r => r.pairs_per_s !== undefined) ? "pairs_per_s" : "tokens_per_s";
    return { name: label(name, key.replace("_per_s", "/s")), colour: run.colour, points: series(steps(run), key) };
  }));
  draw("chart-memory", all.flatMap(({ name, run }) => {
    const s = steps(run), planned = run.info.plan?.planned_bytes ?? run.info.summary?.planned_bytes;
    const out = [
      { name: label(name, "resident MiB"), colour: run.colour, points: series(s, "rss_mb") },
      { name: label(name, "peak MiB"), colour: run.colour, points: series(s, "peak_rss_mb"), thin: true },
    ];
    if (planned && s.length > 0) out.push({ name: label(name, "planned peak MiB"), colour: run.colour, dashed: true,
      points: [[s[0].step, planned / 1048576], [s[s.length - 1].step, planned / 1048576]] });
    return out;
  }));
}

function card(name, run) {
  const s = steps(run), last = s[s.length - 1], ev = evals(run), lastEval = ev[ev.length - 1];
  const total = run.info.plan?.total_steps ?? run.info.summary?.steps;
  const lines = [];
  if (!last) lines.push(state(run) === "stopped" ? "stopped before its first step" : "waiting for the first step…");
  else {
    lines.push(`step ${last.step}${total ? ` / ${total}` : ""}   loss ${last.loss.toFixed(4)}`);
    lines.push(`elapsed ${duration(last.elapsed_s)}${eta(run, last, total)}`);
    const speed = last.tokens_per_s !== undefined ? `${last.tokens_per_s.toFixed(0)} tokens/s` : `${(last.pairs_per_s ?? 0).toFixed(1)} pairs/s`;
    lines.push(`${speed}   resident ${last.rss_mb.toFixed(0)} MB`);
  }
  if (lastEval) lines.push(`eval @${lastEval.step}: loss ${lastEval.eval_loss.toFixed(4)}` +
    (typeof lastEval.eval_accuracy === "number" ? `, exact match ${(100 * lastEval.eval_accuracy).toFixed(1)}% of ${lastEval.eval_examples}` : ""));
  const planned = run.info.plan?.planned_bytes ?? run.info.summary?.planned_bytes;
  const measured = run.info.summary?.peak_rss_bytes;
  // MiB, as metrics.jsonl's rss_mb (bytes / 2^20) and the memory chart.
  if (planned) lines.push(`memory planned ${(planned / 1048576).toFixed(0)} MiB` + (measured ? `, measured peak ${(measured / 1048576).toFixed(0)} MiB (plan ${planned >= measured ? "+" : ""}${(100 * (planned - measured) / measured).toFixed(1)}%)` : ""));
  const el = document.createElement("div");
  el.className = "run";
  el.dataset.run = name;
  el.dataset.finished = run.info.finished ? "true" : "false";
  el.dataset.state = state(run);
  el.style.setProperty("--colour", run.colour);
  const title = document.createElement("b");
  title.textContent = `${name} — ${stateText(run)}${run.info.plan?.method ? ` · ${run.info.plan.method}` : ""}`;
  const figures = document.createElement("div");
  figures.className = "figures";
  figures.textContent = lines.join("\n");
  el.append(title, figures);
  const samples = [...ev].reverse().find(r => Array.isArray(r.samples))?.samples;
  if (samples) el.append(samplesTable(samples));
  return el;
}

// The latest eval's exact-match samples: prompt, expected answer, what the model generated (greedy), hit or miss.
function samplesTable(samples) {
  const table = document.createElement("table");
  table.className = "samples";
  const head = table.insertRow();
  for (const h of ["prompt", "expected", "model", ""]) head.appendChild(Object.assign(document.createElement("th"), { textContent: h }));
  for (const s of samples) {
    const row = table.insertRow();
    row.dataset.exact = s.exact ? "true" : "false";
    for (const text of [s.prompt, s.expected, s.got, s.exact ? "✓" : "✗"]) row.insertCell().textContent = text;
  }
  return table;
}

function eta(run, last, total) {
  if (state(run) !== "running" || !total || last.step >= total) return "";
  const first = steps(run)[0];
  // Time per step measured over this process's steps (a resumed run's elapsed_s restarts from its own start).
  const perStep = last.step > first.step ? (last.elapsed_s - first.elapsed_s) / (last.step - first.step) : last.elapsed_s / last.step;
  return `   ETA ${duration(perStep * (total - last.step))}`;
}

function duration(s) {
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
}

// A line chart of several series into an <svg>: linear axes from the data's range (or yFixed), legend on top.
function draw(id, all, yFixed) {
  const svg = document.getElementById(id);
  const W = svg.clientWidth || 460, H = svg.clientHeight || 240, L = 56, R = 10, T = 8 + 14 * Math.ceil(all.length / 3), B = 22;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pts = all.flatMap(s => s.points);
  const parts = [];
  if (pts.length === 0) {
    parts.push(`<text class="empty" x="${W / 2}" y="${H / 2}" text-anchor="middle">no data yet</text>`);
  } else {
    let [x0, x1] = extent(pts.map(p => p[0])), [y0, y1] = extent(pts.map(p => p[1]));
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (yFixed) [y0, y1] = [Math.min(y0, yFixed[0]), Math.max(y1, yFixed[1])];
    else if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    else { const pad = (y1 - y0) * 0.05; y0 = y0 >= 0 ? Math.max(0, y0 - pad) : y0 - pad; y1 += pad; }   // lines off the axes, no negative ticks for positive data
    const X = x => L + (x - x0) / (x1 - x0) * (W - L - R), Y = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const y = y0 + (y1 - y0) * i / 4;
      parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${Y(y)}" y2="${Y(y)}"/>`,
        `<text x="${L - 4}" y="${Y(y) + 4}" text-anchor="end">${tick(y)}</text>`);
    }
    const every = Math.max(1, Math.ceil((x1 - x0) / 6));   // whole steps only
    for (let x = Math.ceil(x0 / every) * every; x <= x1; x += every)
      parts.push(`<text x="${X(x)}" y="${H - 6}" text-anchor="middle">${x}</text>`);
    parts.push(`<line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/>`, `<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>`);
    for (const s of all) {
      if (s.points.length === 0) continue;
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
      const last = s.points[s.points.length - 1];
      const style = s.dots ? `stroke-opacity="0.5" stroke-dasharray="2,3"` : s.dashed ? `stroke-dasharray="6,4"` : "";
      parts.push(`<path d="${d}" fill="none" stroke="${s.colour}" stroke-width="${s.thin ? 1 : 2}" ${style} ` +
        `data-series="${escapeHtml(s.name)}" data-points="${s.points.length}" data-last="${last[1]}" data-last-step="${escapeHtml(last[0])}"><title>${escapeHtml(s.name)}</title></path>`);
      if (s.dots) for (const p of s.points) parts.push(`<circle cx="${X(p[0])}" cy="${Y(p[1])}" r="3" fill="${s.colour}"/>`);
    }
  }
  all.forEach((s, i) => parts.push(`<text x="${L + (i % 3) * ((W - L) / 3)}" y="${12 + 14 * Math.floor(i / 3)}" style="fill:${s.colour}">` +
    `${s.dashed ? "- -" : s.dots ? "•" : "—"} ${escapeHtml(s.name)}</text>`));
  svg.innerHTML = parts.join("");
}

function extent(v) { return [Math.min(...v), Math.max(...v)]; }
function tick(v) { const a = Math.abs(v); return a !== 0 && (a < 1e-2 || a >= 1e5) ? v.toExponential(1) : +v.toPrecision(3) + ""; }
function escapeHtml(s) { return String(s).replace(/[&<>"]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

poll();
