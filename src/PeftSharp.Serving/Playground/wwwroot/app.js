// PeftSharp playground: one prompt to the base and any loaded adapters at once, answers streamed side by side.
// Plain browser JavaScript, no build step and no dependencies; it talks only to this server's public OpenAI endpoints
// (/v1/models, /v1/completions, /v1/chat/completions with SSE) and the adapter endpoints, so it is a live check of them.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], cards: new Map(), selected: new Set(), running: [] };

// ---- HTTP -------------------------------------------------------------------------------------------------------

function headers(json) {
  const h = {};
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

/** fetch that turns every failure into an Error whose message a person can read. */
async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: headers(options.body !== undefined) });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new Error(`cannot reach the server at ${location.origin} (is peft serve still running?): ${e.message}`);
  }
  if (!response.ok) throw await httpError(response);
  return response;
}

/** The OpenAI error body ({"error": {"message", "code"}}) as one line, with a hint for a missing or wrong key. */
async function httpError(response) {
  let message = response.statusText;
  let code = "";
  try {
    const body = await response.json();
    message = body.error?.message ?? message;
    code = body.error?.code ?? "";
  } catch { /* not JSON: keep the status text */ }
  const hint = response.status === 401 ? " — enter the server's API key at the top right and press Connect" : "";
  return new Error(`${response.status}${code ? " " + code : ""}: ${message}${hint}`);
}

// ---- models, cards, adapter load/unload ---------------------------------------------------------------------------

async function refresh() {
  showBanner("");
  try {
    const list = await (await call("/v1/models")).json();
    state.models = list.data;
    const ids = new Set(state.models.map((m) => m.id));
    if (state.selected.size === 0) state.models.forEach((m) => state.selected.add(m.id));
    for (const id of [...state.selected]) if (!ids.has(id)) state.selected.delete(id);
    state.cards.clear();
    await Promise.all(state.models.filter((m) => m.parent).map(async (m) => {
      try { state.cards.set(m.id, await (await call(`/v1/adapters/${encodeURIComponent(m.id)}/card`)).json()); }
      catch (e) { state.cards.set(m.id, { error: e.message }); }
    }));
    renderModels();
  } catch (e) {
    state.models = [];
    renderModels();
    showBanner(e.message);
  }
}

function renderModels() {
  const ul = $("models");
  ul.replaceChildren();
  if (state.models.length === 0) { ul.append(el("li", { className: "muted" }, "no models (see the message above)")); return; }
  for (const m of state.models) {
    const box = el("input", { type: "checkbox", checked: state.selected.has(m.id) });
    box.dataset.model = m.id;
    box.addEventListener("change", () => { box.checked ? state.selected.add(m.id) : state.selected.delete(m.id); });
    const label = el("label", {}, box, m.id, el("span", { className: "tag" }, m.parent ? `${m.adapter_type} r=${m.rank} v${m.version}` : "base"));
    const row = el("div", { className: "row" }, label);
    if (m.parent) {
      const unload = el("button", { type: "button", className: "link", title: "DELETE /v1/adapters/" + m.id }, "unload");
      unload.addEventListener("click", () => unloadAdapter(m.id));
      row.append(unload);
    }
    const li = el("li", {}, row);
    li.dataset.model = m.id;
    li.append(m.parent ? cardView(state.cards.get(m.id)) : el("div", { className: "card" }, `${m.model_type}, context ${m.max_model_len}${m.quantization && m.quantization !== "none" ? ", " + m.quantization : ""}`));
    ul.append(li);
  }
}

/** The method a card names: its peft_type, but DoRA for a DoRA adapter (PEFT files DoRA as LORA with use_dora). */
function methodOf(card) {
  return card.adapter_type === "dora" ? "DORA" : card.peft_type ?? card.adapter_type;
}

/** An adapter's card (GET /v1/adapters/{name}/card) as a small definition list. */
function cardView(card) {
  const div = el("div", { className: "card" });
  if (!card) return div;
  if (card.error) { div.append(el("span", { className: "status error" }, card.error)); return div; }
  const rows = [
    ["method", [methodOf(card), card.alpha != null ? `alpha ${card.alpha}` : null].filter(Boolean).join(", ")],
    ["targets", Array.isArray(card.target_modules) ? card.target_modules.join(", ") : card.target_modules],
    ["base", { same: "fingerprint matches the served base", checked_at_load: "fingerprint over its own targets, checked at load", not_recorded: "no fingerprint recorded (shapes checked at load)" }[card.base.match]],
  ];
  const t = card.training, r = card.results;
  const steps = r?.steps ?? t?.steps;
  if (t) rows.push(["trained on", [t.data, t.method, steps ? `${steps} steps` : t.epochs ? `${t.epochs} epoch(s)` : null, t.lr ? `lr ${t.lr}` : null].filter(Boolean).join(", ")]);
  if (t?.data_stats) rows.push(["data", t.data_stats.split(";")[0]]);   // examples, sequences, tokens
  if (r) {
    const pct = (v) => (v == null ? "?" : (100 * v).toFixed(1) + "%");
    const num = (v) => (v == null ? "?" : v.toFixed(3));
    if (r.exact_match_after != null) rows.push(["exact match", `${pct(r.exact_match_before)} → ${pct(r.exact_match_after)}`]);
    if (r.eval_loss_after != null) rows.push(["eval loss", `${num(r.eval_loss_before)} → ${num(r.eval_loss_after)}`]);
    if (r.heldout_loss_after != null) rows.push(["held-out ppl", `${num(Math.exp(r.heldout_loss_before))} → ${num(Math.exp(r.heldout_loss_after))}`]);
  }
  const dl = el("dl");
  for (const [k, v] of rows) if (v) dl.append(el("dt", {}, k), el("dd", { className: k === "base" ? "match-" + card.base.match : "" }, String(v)));
  div.append(dl);
  return div;
}

async function loadAdapter(event) {
  event.preventDefault();
  const name = $("load-name").value.trim(), path = $("load-path").value.trim();
  if (!name || !path) return setStatus("load-status", "Enter both a name and a folder (relative to --adapter-root).", true);
  setStatus("load-status", `loading ${name}…`);
  try {
    const v = await (await call("/v1/adapters", { method: "POST", body: JSON.stringify({ name, path }) })).json();
    state.selected.add(v.id);
    setStatus("load-status", `loaded ${v.id} (version ${v.version})`);
    await refresh();
  } catch (e) { setStatus("load-status", e.message, true); }
}

async function unloadAdapter(name) {
  try {
    await call(`/v1/adapters/${encodeURIComponent(name)}`, { method: "DELETE" });
    setStatus("load-status", `unloaded ${name}`);
    state.selected.delete(name);
  } catch (e) { setStatus("load-status", e.message, true); }
  await refresh();
}

// ---- prompts and streamed columns -----------------------------------------------------------------------------

function mode() { return document.querySelector('input[name="mode"]:checked').value; }

function samplingFields() {
  const number = (id) => { const v = $(id).value.trim(); return v === "" ? undefined : Number(v); };
  return { temperature: number("temperature"), top_p: number("top-p"), max_tokens: number("max-tokens"), seed: number("seed") };
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value;
  if (prompt.trim() === "") return setStatus("send-status", "The prompt is empty: type something to send.", true);
  const models = state.models.map((m) => m.id).filter((id) => state.selected.has(id));
  if (models.length === 0) return setStatus("send-status", "No model ticked: pick the base and/or adapters on the left.", true);
  setStatus("send-status", "");
  const chat = mode() === "chat";
  const base = { ...samplingFields(), stream: true, stream_options: { include_usage: true } };
  if (chat) {
    const system = $("system").value.trim();
    base.messages = [...(system ? [{ role: "system", content: system }] : []), { role: "user", content: prompt }];
  } else base.prompt = prompt;

  $("columns").replaceChildren();
  const controller = new AbortController();
  state.running.push(controller);
  $("send").disabled = true;
  $("stop").disabled = false;
  const outcomes = await Promise.all(models.map((model) => stream(chat, { ...base, model }, column(model), controller.signal)));
  // An adapter unloaded elsewhere since the list was read: show the list as it is now.
  if (outcomes.some((o) => o.includes("model_not_found"))) refresh();
  state.running = state.running.filter((c) => c !== controller);
  $("send").disabled = false;
  $("stop").disabled = state.running.length === 0;
}

function column(model) {
  const card = state.cards.get(model);
  const info = card && !card.error ? `${methodOf(card)} r=${card.rank}` : model === state.models[0]?.id ? "base" : "";
  const output = el("pre", { className: "output" });
  output.dataset.state = "streaming";
  const error = el("p", { className: "error", hidden: true });
  const stats = el("div", { className: "stats" }, "waiting…");
  const section = el("section", { className: "column" }, el("header", {}, el("strong", {}, model), el("span", { className: "tag" }, info)), output, error, stats);
  section.dataset.model = model;
  $("columns").append(section);
  return { output, error, stats };
}

/**
 * One streamed request; returns "done", "stopped" or the error message. Token counts come from the final usage chunk (stream_options.include_usage), not from
 * counting chunks; tokens/s is completion tokens over the time from sending to the last chunk (queue and prompt
 * included, as a user waits for it).
 */
async function stream(chat, body, view, signal) {
  const started = performance.now();
  let firstChunk = null, usage = null, finish = null, chunks = 0;
  try {
    const response = await call(chat ? "/v1/chat/completions" : "/v1/completions", { method: "POST", body: JSON.stringify(body), signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", done = false;
    while (!done) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") { done = true; break; }
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const choice = chunk.choices?.[0];
          if (!choice) continue;
          const text = chat ? choice.delta?.content : choice.text;
          if (text) {
            firstChunk ??= performance.now();
            chunks++;
            view.output.textContent += text;
          }
          finish = choice.finish_reason ?? finish;
        }
        view.stats.textContent = `${chunks} chunks…`;
      }
    }
    if (!done) throw new Error("the stream ended before [DONE] (did the server stop?)");
    const seconds = (performance.now() - started) / 1000;
    const tokens = usage?.completion_tokens;
    view.stats.textContent = tokens == null ? `${chunks} chunks (no usage sent), ${seconds.toFixed(2)} s`
      : `${tokens} tokens · ${(tokens / seconds).toFixed(1)} tok/s · prompt ${usage.prompt_tokens} · first token ${Math.round(firstChunk - started)} ms · ${finish}`;
    view.output.dataset.state = "done";
    return "done";
  } catch (e) {
    const stopped = e.name === "AbortError";
    view.output.dataset.state = stopped ? "stopped" : "error";
    if (stopped) view.stats.textContent = "stopped";
    else { view.error.textContent = e.message; view.error.hidden = false; view.stats.textContent = ""; }
    return stopped ? "stopped" : e.message;
  }
}

// ---- small helpers and wiring ---------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c != null));
  return node;
}

function setStatus(id, text, isError = false) {
  $(id).textContent = text;
  $(id).classList.toggle("error", isError);
}

function showBanner(text) {
  $("banner").textContent = text;
  $("banner").hidden = !text;
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem("peftsharp.apiKey") ?? "";
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem("peftsharp.apiKey", $("api-key").value.trim()); refresh(); });
  $("refresh").addEventListener("click", refresh);
  $("load-form").addEventListener("submit", loadAdapter);
  $("prompt-form").addEventListener("submit", send);
  $("stop").addEventListener("click", () => state.running.forEach((c) => c.abort()));
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", () => { $("system").hidden = mode() !== "chat"; });
  refresh();
});
