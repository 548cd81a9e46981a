// The spell page (and /runs/{runId}): form, quote, cast, the run live, outputs. Spell text and
// input go in as text only, never as HTML.

import { Problem, api, el, session, showBalance } from "/static/js/common.js";

const [, section, pathId] = location.pathname.split("/");
const runPage = section === "runs"; // /runs/{runId}, else /spells/{slug}
let slug = runPage ? "" : decodeURIComponent(pathId || "");
const $ = (id) => document.getElementById(id);
const TERMINAL = ["succeeded", "failed", "canceled"];
let files; // the file picker's module, loaded for a file input only

function alertBox(text, ok, action) {
  const box = $("alert");
  box.hidden = !text;
  box.className = ok ? "alert ok" : "alert";
  box.replaceChildren(el("p", { textContent: text }), action ?? "");
}

// ---- the form

let meta;
const fields = {};

function field(name, s, required) {
  const id = `f-${name}`;
  const label = s.title || name;
  const help = s.description && el("p", { id: `${id}-h`, className: "help", textContent: s.description });
  const err = el("p", { id: `${id}-e`, className: "err", hidden: true });
  const described = [help && help.id, err.id].filter(Boolean).join(" ");
  const common = { name, id, required, "aria-describedby": described };
  let control;
  let box;
  if (s.enum && s.enum.length <= 4) {
    box = el("fieldset", { className: "field", "aria-describedby": described }, el("legend", { textContent: label }));
    s.enum.forEach((v, i) =>
      box.append(el("label", {}, el("input", { type: "radio", name, value: v, id: i ? undefined : id, checked: v === s.default }), ` ${v}`)));
    box.append(help, err);
  } else {
    if (s.enum) {
      control = el("select", common, ...s.enum.map((v) => el("option", { value: v, textContent: v, selected: v === s.default })));
    } else if (s.type === "boolean") {
      control = el("input", { ...common, type: "checkbox", checked: !!s.default, required: false });
    } else if (s.format === "spellcast-upload") {
      control = el("input", { ...common, type: "file", accept: s.contentMediaType });
      (files ??= import("/static/js/file-input.js")).then((m) => m.picker(control, s));
    } else if (s.type === "integer" || s.type === "number") {
      control = el("input", { ...common, type: "number", min: s.minimum, max: s.maximum, step: s.type === "integer" ? 1 : "any", value: s.default ?? "" });
    } else {
      const long = s.format === "textarea" || (s.maxLength || 0) > 200;
      control = el(long ? "textarea" : "input", { ...common, type: long ? undefined : "text", minLength: s.minLength, maxLength: s.maxLength, value: s.default ?? "" });
    }
    const lab = el("label", { htmlFor: id, textContent: label });
    box = s.type === "boolean" ? el("div", { className: "field" }, control, " ", lab, help, err) : el("div", { className: "field" }, lab, control, help, err);
  }
  fields[name] = { s, required, box, err };
  return box;
}

function read() {
  const ctx = {};
  for (const [name, { s, box }] of Object.entries(fields)) {
    const radio = box.querySelector("input:checked[type=radio]");
    const input = box.querySelector("input:not([type=radio]),select,textarea");
    let v = s.enum && !input ? radio?.value : input?.type === "checkbox" ? input.checked : input?.files ? input.files[0] : input?.value;
    if ((s.type === "integer" || s.type === "number") && v !== "") v = Number(v);
    if (v !== "" && v !== undefined) ctx[name] = v;
  }
  return ctx;
}

// The same checks as the server's schema, reported with the same pointers.
function check(ctx) {
  const errors = [];
  for (const [name, { s, required }] of Object.entries(fields)) {
    const v = ctx[name];
    const bad = (message) => errors.push({ pointer: `/context/${name}`, message });
    if (v === undefined) required && bad("This is required.");
    else if (s.type === "integer" && !Number.isInteger(v)) bad("Enter a whole number.");
    else if (typeof v === "number" && Number.isNaN(v)) bad("Enter a number.");
    else if (s.minimum !== undefined && v < s.minimum) bad(`The smallest allowed is ${s.minimum}.`);
    else if (s.maximum !== undefined && v > s.maximum) bad(`The largest allowed is ${s.maximum}.`);
    else if (s.minLength && String(v).length < s.minLength) bad(`Enter at least ${s.minLength} character(s).`);
    else if (s.maxLength && String(v).length > s.maxLength) bad(`Enter at most ${s.maxLength} characters.`);
    else if (s.enum && !s.enum.includes(v)) bad("Choose one of the options.");
  }
  return errors;
}

function showErrors(errors) {
  for (const f of Object.values(fields)) {
    f.err.hidden = true;
    f.box.querySelectorAll("input,select,textarea").forEach((c) => c.removeAttribute("aria-invalid"));
  }
  for (const { pointer, message } of errors) {
    const f = fields[pointer.split("/")[2]];
    if (!f) continue;
    f.err.textContent = message;
    f.err.hidden = false;
    f.box.querySelectorAll("input,select,textarea").forEach((c) => c.setAttribute("aria-invalid", "true"));
  }
  const first = errors.map((e) => fields[e.pointer.split("/")[2]]).find(Boolean);
  first?.box.querySelector("input,select,textarea")?.focus();
  return errors.length > 0;
}

// ---- the run

let steps = [];
let lastSeq = 0;

// A model's answer grows in a fixed-height box: nothing below moves.
function showSteps(list) {
  steps = list.map((s) => ({ ...s, status: s.status || "pending", progress: s.progress || 0 }));
  $("run").hidden = false;
  $("steps").replaceChildren(
    ...steps.map((s, i) => el("li", { id: `s${i}` }, el("span", { textContent: s.title }), " ", el("span", { className: "st" }),
      el("progress", { max: 1, value: 0, "aria-label": `${s.title} progress` }),
      meta?.steps[i]?.tool === "llm.chat" ? el("p", { className: "answer", tabIndex: 0, "aria-live": "polite", textContent: s.partial || "" }) : "")));
  steps.forEach((s, i) => paintStep(i));
}

function answer(i, text, afresh) {
  const box = $(`s${i}`).querySelector(".answer");
  if (box) {
    if (afresh) box.textContent = "";
    box.append(text);
    box.scrollTop = 1e9;
  }
}

// A durable wait counts down; the server takes the run up when due.
const left = (u) => new Date(Math.max(0, Date.parse(u) - Date.now() + 999) || 0).toISOString().slice(11, 19).replace(/^00:0?/, "");
setInterval(() => steps.forEach((s, i) => s.status == "waiting" && paintStep(i)), 250);

function paintStep(i) {
  const s = steps[i];
  const li = $(`s${i}`);
  const label = { pending: "not started", running: `running, ${Math.round(s.progress * 100)}%`, waiting: `waiting, ${left(s.until)} left`, succeeded: "done", failed: "failed", canceled: "canceled" }[s.status];
  li.querySelector(".st").textContent = `(${label}${s.message ? ` — ${s.message}` : ""})`;
  li.querySelector("progress").value = s.status === "succeeded" ? 1 : s.progress;
  li.dataset.status = s.status;
  const done = steps.reduce((n, x) => n + (x.status === "succeeded" ? 1 : x.progress), 0);
  $("overall").value = done / steps.length;
}

function gallery(outputs, token) {
  $("outputs").replaceChildren(...outputs.map((o) => {
    const caption = o.title && el("figcaption", { textContent: o.title });
    if (o.kind === "image" || o.kind === "file") {
      const src = `${o.url}?token=${encodeURIComponent(token)}`;
      const body = o.kind === "image"
        ? el("img", { src, alt: o.title || "Generated image", width: 256, height: 256, decoding: "async" })
        : el("span", { textContent: o.title || "Download" });
      return el("figure", {}, el("a", { href: src, target: "_blank", rel: "noopener", title: "Open full size" }, body), caption);
    }
    const text = o.kind === "json" ? JSON.stringify(o.value, null, 2) : String(o.value ?? "");
    return el("figure", {}, el("pre", { textContent: text }), caption);
  }));
}

// A finished run's owner may share it: a public page at /r/{shareId}, until unshared.
async function sharing(runId) {
  const path = `/api/v1/runs/${encodeURIComponent(runId)}/share`;
  const token = await session();
  const show = (s) => {
    $("share").hidden = !!s;
    $("share-link").hidden = $("unshare").hidden = !s;
    if (s) $("share-link").textContent = $("share-link").href = new URL(s.url, location.href).href;
  };
  show(await api(path, token).catch(() => null));
  $("sharing").hidden = false;
  $("share").onclick = async () => show(await api(path, token, {}));
  $("unshare").onclick = async () => {
    await api(path, token, null, "DELETE");
    show(null);
  };
}

function finished(run, state) {
  sharing(state.runId).catch(() => {});
  $("cast").disabled = false;
  $("cancel").hidden = true;
  $("conn").textContent = "";
  if (run.status === "canceled") {
    steps.forEach((s, i) => {
      if (s.status !== "succeeded") Object.assign(s, { status: "canceled", progress: 0, message: undefined });
      paintStep(i);
    });
    $("outputs").replaceChildren(el("p", { className: "muted", textContent: "No outputs: the run was canceled." }));
    alertBox(`The run was canceled. ${run.refundedPts} points were refunded to your balance.`, true);
  } else if (run.status === "succeeded") {
    steps.forEach((s, i) => { s.status = "succeeded"; s.message = undefined; paintStep(i); });
    gallery(run.outputs, state.invoice);
    alertBox(`Done in ${(run.durationMs / 1000).toFixed(1)} s.`, true);
  } else {
    const i = steps.findIndex((s) => s.id === run.error?.stepId);
    if (i >= 0) {
      Object.assign(steps[i], { status: "failed", message: undefined });
      paintStep(i);
    }
    const where = i >= 0 ? ` at “${steps[i].title}”` : "";
    alertBox(`The spell failed${where}: ${run.error?.message}. ${run.refundedPts} points were refunded to your balance.`);
  }
  session().then(showBalance);
}

function stream(state) {
  const after = lastSeq ? `&lastEventId=${lastSeq}` : "";
  const source = new EventSource(`${state.streamUrl}&token=${encodeURIComponent(state.invoice)}${after}`);
  const on = (type, handle) => source.addEventListener(type, (e) => {
    const seq = Number(e.lastEventId);
    if (seq <= lastSeq) return; // already shown
    lastSeq = seq;
    $("conn").textContent = "";
    handle(JSON.parse(e.data));
  });
  on("executionStarted", (d) => steps.length || showSteps(d.steps));
  on("stepUpdate", (d) => {
    Object.assign(steps[d.index], { status: d.status, progress: d.progress, message: d.message, until: d.until });
    paintStep(d.index);
    if (d.attempt) answer(d.index, "", true); // each attempt answers afresh
  });
  on("stepDelta", (d) => {
    answer(d.index, d.text);
    steps[d.index].progress = d.progress;
    paintStep(d.index);
  });
  const end = (run) => { source.close(); finished(run, state); };
  on("executionFinished", (d) => end({ ...d, status: "succeeded" }));
  on("executionCanceled", (d) => end({ ...d, status: "canceled" }));
  on("spellExecutionError", (d) => end({ ...d, status: "failed", error: d }));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) restore(state); // the server said no more: settle from the snapshot
    else $("conn").textContent = "Connection lost — reconnecting…";
  };
}

// Shows a run from its snapshot (read unless given), then follows it live.
async function restore(state, snapshot) {
  try {
    const run = snapshot ?? (await api(`/api/v1/runs/${state.runId}`, state.invoice));
    showSteps(run.steps);
    lastSeq = run.lastEventId;
    if (TERMINAL.includes(run.status)) {
      finished(run, state);
    } else {
      $("cast").disabled = true;
      going(state, run.status === "canceling");
      stream(state);
    }
  } catch (err) {
    alertBox(err instanceof Problem ? err.message : "Could not reach Spellcast. Reload the page to try again.");
  }
}

// The owner may cancel a run that goes (once confirmed); the stream brings `executionCanceled`.
function going(state, canceling) {
  const button = $("cancel");
  button.hidden = false;
  button.disabled = canceling;
  button.textContent = canceling ? "Canceling…" : "Cancel the run";
  button.onclick = async () => {
    if (!confirm("Cancel this run? The steps not done yet are refunded.")) return;
    button.disabled = true;
    button.textContent = "Canceling…";
    try {
      await api(`/api/v1/runs/${state.runId}/cancel`, await session(), {});
    } catch (err) {
      // The run ended first (its terminal event is on its way), or the request failed.
      if (err.code !== "run_finished") {
        button.disabled = false;
        button.textContent = "Cancel the run";
        alertBox(err instanceof Problem ? err.message : "Could not reach Spellcast to cancel. Try again.");
      }
    }
  };
}

async function cast(event) {
  event.preventDefault();
  alertBox("");
  const ctx = read();
  if (showErrors(check(ctx))) return;
  $("cast").disabled = true;
  try {
    const token = await session();
    if (files) await (await files).uploads(ctx, token);
    const quote = await api("/api/v1/payments/invoice", token, { spellSlug: slug, asset: "PTS" });
    $("quote").textContent = ` · your quote: ${quote.costPts} points`;
    const run = await api("/api/v1/spells/cast", token, { slug, invoiceId: quote.invoiceId, context: ctx });
    const state = { runId: run.runId, streamUrl: run.streamUrl, invoice: quote.invoiceId };
    // The run has its own page now: a reload or another tab finds it on the server.
    history.pushState(null, "", `/runs/${encodeURIComponent(run.runId)}`);
    lastSeq = 0;
    $("outputs").replaceChildren(el("p", { className: "muted", textContent: "The outputs appear here when the spell is done." }));
    showSteps(meta.steps);
    showBalance(token);
    going(state, false);
    stream(state);
  } catch (err) {
    $("cast").disabled = false;
    if (err.code === "invalid_context") showErrors(err.errors);
    else if (err.code === "invoice_expired") alertBox("Your quote expired before the cast.", false, el("button", { type: "button", textContent: "Get a new quote", onclick: cast }));
    else if (err.code === "insufficient_balance") alertBox(`Not enough points: ${err.message}.`);
    else if (err instanceof Problem) alertBox(err.message);
    else alertBox("Could not reach Spellcast. Check your connection and try again.");
  }
}

// ---- start

// Preview users (?preview=1) see a banner until they dismiss it, for good.
const params = new URLSearchParams(location.search);
if (params.has("preview")) localStorage.setItem("spellcast.preview", "1");
if (localStorage.getItem("spellcast.preview") && !localStorage.getItem("spellcast.bannerDismissed")) {
  $("banner").hidden = false;
  $("dismiss").onclick = () => {
    localStorage.setItem("spellcast.bannerDismissed", "1");
    $("banner").hidden = true;
  };
}

// Back from a run's page to the spell's (or forth): show what the address says.
addEventListener("popstate", () => location.reload());

/** The spell's title, texts and form (hidden on a run's page, which links to it instead). */
async function showSpell() {
  meta = await api(`/api/v1/spells/${encodeURIComponent(slug)}/meta`);
  document.title = `${meta.title} · Spellcast`;
  $("title").textContent = meta.title;
  $("summary").textContent = meta.summary;
  $("description").textContent = meta.description;
  $("avg").textContent = meta.avgCostPtsCached;
  const required = meta.inputs.required || [];
  $("fields").replaceChildren(...Object.entries(meta.inputs.properties || {}).map(([n, s]) => field(n, s, required.includes(n))));
  $("form").addEventListener("submit", cast);
}

/** /runs/{runId}: the run as the server has it, for its owner; live while it goes. */
async function showRun(runId) {
  const token = await session();
  const run = await api(`/api/v1/runs/${encodeURIComponent(runId)}`, token);
  slug = run.slug;
  await showSpell();
  document.title = `${meta.title} · your run · Spellcast`;
  $("again").href = `/spells/${encodeURIComponent(slug)}`;
  $("again").hidden = false;
  $("gallery").hidden = false;
  const streamUrl = `/api/v1/spells/${encodeURIComponent(slug)}/stream?creditTxId=${encodeURIComponent(run.creditTxId)}`;
  await restore({ runId: run.runId, streamUrl, invoice: run.watchToken }, run);
  showBalance(token);
}

try {
  if (runPage) {
    await showRun(decodeURIComponent(pathId || ""));
  } else {
    await showSpell();
    // Form and gallery appear together, so nothing already shown moves (no layout shift).
    $("form").hidden = $("gallery").hidden = false;
    if (!window.spellcastSession) session(false).then(showBalance, () => {});
  }
} catch (err) {
  const what = runPage ? "run" : "spell";
  const titles = { spell_not_found: "Spell not found", run_not_found: "Run not found", forbidden: "This run is someone else's" };
  $("title").textContent = titles[err.code] ?? `The ${what} could not be loaded`;
  alertBox(err instanceof Problem ? err.message : "Could not reach Spellcast. Reload the page to try again.");
}
