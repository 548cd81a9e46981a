// What every page shares: making elements (text only, never HTML), calling the API with
// problem+json errors, the session, and the balance in the header.

// Creates an element; `props` are DOM properties (textContent, htmlFor, ...) or, with a dash,
// attributes (aria-*, data-*).
export function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.includes("-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...kids.filter((k) => k !== undefined && k !== null && k !== false));
  return e;
}

/** An error answer of the API (RFC 9457 problem details). */
export class Problem extends Error {
  constructor(status, body) {
    super(body.detail || `The server answered ${status}`);
    Object.assign(this, { status, code: body.code, errors: body.errors || [] });
  }
}

/** Calls the API: GET, or `method` (POST when there is a body). */
export async function api(path, token, body, method) {
  const headers = {};
  if (body) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, { method: method ?? (body ? "POST" : "GET"), headers, body: body && JSON.stringify(body) });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Problem(res.status, json);
  return json;
}

// The session: a host site plugs in its own with `window.spellcastSession = async () => token`;
// else session.js, loaded apart: the OpenID provider's sign-in (unless `ask` is false: then
// null when signed out), or locally a demo session.
export async function session(ask) {
  return window.spellcastSession ? window.spellcastSession() : (await import("/static/js/session.js")).session(ask);
}
import("/static/js/session.js").then((m) => m.header());

/** Shows the balance in the header's #balance; the balance, or null. */
export async function showBalance(token) {
  const b = await api("/api/v1/me/balance", token).catch(() => null);
  if (b) document.getElementById("balance").textContent = `Balance: ${b.balances.PTS} points`;
  return b?.balances.PTS ?? null;
}
