// The account page, /me (SPEC §3.11a): the balance, the user's runs (each linking to its page)
// and the ledger (grants, debits, refunds, with links to their runs), newest first, a page at a
// time. Everything comes from the API with the user's session; nothing from this browser's
// storage but the session itself.
import { Problem, api, el, session, showBalance } from "/static/js/common.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;
const STATUS = { queued: "queued", running: "running", canceling: "canceling", succeeded: "done", failed: "failed, refunded", canceled: "canceled" };
const KIND = { grant: "Points granted", debit: "Paid for a run", refund: "Refund for a run" };

const when = (at) => el("time", { dateTime: at, textContent: new Date(at).toLocaleString() });
const points = (n) => `${n > 0 ? "+" : n < 0 ? "−" : ""}${Math.abs(n)}`;
const runLink = (runId, text) => el("a", { href: `/runs/${encodeURIComponent(runId)}`, textContent: text });

function runRow(r) {
  const paid = r.refundedPts ? `${r.costPts} points, ${r.refundedPts} back` : `${r.costPts} points`;
  return el("li", {}, runLink(r.runId, r.title), ` — ${STATUS[r.status] ?? r.status}, ${paid}, `, when(r.createdAt));
}

function ledgerRow(e) {
  const what = el("td", { textContent: KIND[e.kind] ?? e.kind });
  if (e.runId) what.append(" (", runLink(e.runId, "the run"), ")");
  if (e.reason) what.append(`: ${e.reason}`);
  return el("tr", {}, el("td", {}, when(e.at)), what, el("td", { className: "num", textContent: points(e.pts) }));
}

/** Shows the pages of one list: the first now, the next each time its button is pressed. */
function pager(path, key, into, row, more, empty) {
  let cursor;
  const load = async () => {
    more.disabled = true;
    try {
      const query = new URLSearchParams({ limit: PAGE, ...(cursor ? { cursor } : {}) });
      const page = await api(`${path}?${query}`, await session());
      into.append(...page[key].map(row));
      cursor = page.nextCursor;
      more.hidden = !cursor;
      if (empty) empty.hidden = into.children.length > 0;
    } catch (err) {
      const box = $("alert");
      box.hidden = false;
      box.textContent = err instanceof Problem ? err.message : "Could not reach Spellcast. Reload the page to try again.";
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener("click", load);
  return load();
}

const token = await session();
await Promise.all([
  showBalance(token),
  pager("/api/v1/me/runs", "runs", $("runs"), runRow, $("runs-more"), $("runs-empty")),
  pager("/api/v1/me/ledger", "entries", document.querySelector("#ledger tbody"), ledgerRow, $("ledger-more")),
]);
