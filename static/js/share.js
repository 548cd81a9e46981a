// A shared run's public page, /r/{shareId} (SPEC §3.14): the spell, what the run made (files by
// their public URLs), its inputs if the owner chose to show them, and a link to cast the spell.
// No session: anyone with the link sees it, until its owner unshares it.
import { Problem, api, el } from "/static/js/common.js";

const $ = (id) => document.getElementById(id);
const shareId = decodeURIComponent(location.pathname.split("/")[2] || "");

function output(o) {
  const caption = o.title && el("figcaption", { textContent: o.title });
  if (o.kind === "image") {
    return el("figure", {}, el("img", { src: o.url, alt: o.title || "A generated image", width: 256, height: 256, decoding: "async" }), caption);
  }
  if (o.kind === "file") return el("figure", {}, el("a", { href: o.url, textContent: o.title || "Download" }));
  const text = o.kind === "json" ? JSON.stringify(o.value, null, 2) : String(o.value ?? "");
  return el("figure", {}, el("pre", { textContent: text }), caption);
}

try {
  const run = await api(`/api/v1/shares/${encodeURIComponent(shareId)}`);
  document.title = `${run.title} · a shared run · Spellcast`;
  $("title").textContent = run.title;
  $("summary").textContent = run.summary ?? "";
  $("cast-link").href = `/spells/${encodeURIComponent(run.slug)}`;
  $("cast-link").textContent = `Cast ${run.title} yourself`;
  $("cast-it").hidden = false;
  if (run.inputs && Object.keys(run.inputs).length) {
    $("inputs").replaceChildren(...Object.entries(run.inputs).flatMap(([k, v]) =>
      [el("dt", { textContent: k }), el("dd", { textContent: typeof v === "string" ? v : JSON.stringify(v) })]));
    $("inputs-box").hidden = false;
  }
  $("outputs").replaceChildren(...(run.outputs.length ? run.outputs.map(output)
    : [el("p", { className: "muted", textContent: `This run ${run.status === "succeeded" ? "made nothing to show" : `ended ${run.status}`}.` })]));
  $("gallery").hidden = false;
} catch (err) {
  $("title").textContent = err.code === "share_not_found" ? "This shared run is gone" : "The shared run could not be loaded";
  const box = $("alert");
  box.hidden = false;
  box.textContent = err instanceof Problem ? err.message : "Could not reach Spellcast. Reload the page to try again.";
}
