// Placeholder execution page: reads the spell, casts it with its default inputs as a demo user,
// and prints the live events. Every text goes in through textContent, never as HTML.
const slug = location.pathname.split("/")[2];
const $ = (id) => document.getElementById(id);
const api = async (path, token, body) => {
  const res = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${json.code}: ${json.detail}`);
  return json;
};
const log = (line) => { $("log").textContent += line + "\n"; };

const meta = await api(`/api/v1/spells/${slug}/meta`);
document.title = `${meta.title} · Spellcast`;
$("title").textContent = meta.title;
$("summary").textContent = meta.summary;
$("cost").textContent = meta.avgCostPtsCached;
const defaults = Object.fromEntries(
  Object.entries(meta.inputs.properties || {}).filter(([, s]) => "default" in s).map(([k, s]) => [k, s.default]));

$("cast").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const session = await api("/api/v1/dev/session", null, {});
    const invoice = await api("/api/v1/payments/invoice", session.token, { spellSlug: slug, asset: "PTS" });
    log(`quote: ${invoice.costPts} points`);
    const cast = await api("/api/v1/spells/cast", session.token, { slug, invoiceId: invoice.invoiceId, context: defaults });
    const source = new EventSource(`${cast.streamUrl}&token=${encodeURIComponent(invoice.invoiceId)}`);
    for (const type of ["executionStarted", "stepUpdate", "executionFinished", "spellExecutionError"]) {
      source.addEventListener(type, (ev) => {
        const data = JSON.parse(ev.data);
        log(`#${ev.lastEventId} ${type} ${data.stepId ?? ""} ${data.status ?? data.code ?? ""} ${data.message ?? ""}`);
        if (type === "executionFinished" || type === "spellExecutionError") source.close();
        for (const out of data.outputs ?? []) {
          if (type !== "executionFinished") continue;
          if (out.kind === "image") {
            const img = document.createElement("img");
            img.src = `${out.url}?token=${encodeURIComponent(invoice.invoiceId)}`;
            img.alt = out.title ?? "output image";
            $("outputs").append(img);
          } else {
            const pre = document.createElement("pre");
            pre.textContent = typeof out.value === "string" ? out.value : JSON.stringify(out.value, null, 2);
            $("outputs").append(pre);
          }
        }
      });
    }
  } catch (err) {
    log(`error: ${err.message}`);
  }
});
