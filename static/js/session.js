// The session, loaded apart from the pages (they import it when they need it). With an OpenID
// provider (GET /api/v1/auth/config): Sign in sends the browser to the provider with the
// Authorization Code flow and PKCE — no client secret here, the verifier only in sessionStorage —
// and the provider sends it back to /me?code=…, where the code is traded for the ID token
// through this site's own API and removed from the address at once. Without one (the local
// server), a demo session. The token is kept in localStorage.
import { api, el } from "/static/js/common.js";

const KEY = "spellcast.session";
const config = api("/api/v1/auth/config").then((c) => c.oidc, () => null);
const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const claims = (t) => { try { return JSON.parse(atob(t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); } catch { return {}; } };
const callback = () => `${location.origin}/me`;

// Back from the provider: trade the code (once), then go back to where sign-in started.
const arrived = (async () => {
  const q = new URLSearchParams(location.search);
  const pending = JSON.parse(sessionStorage.getItem("spellcast.signin") || "null");
  if (!q.has("code") && !q.has("error")) return;
  history.replaceState(null, "", location.pathname);
  sessionStorage.removeItem("spellcast.signin");
  if (!pending || q.get("state") !== pending.state || !q.has("code")) return;
  const t = await api("/api/v1/auth/token", null, { code: q.get("code"), codeVerifier: pending.verifier, redirectUri: callback() });
  localStorage.setItem(KEY, t.token);
  if (pending.back !== location.href) location.replace(pending.back);
})();

/** Sends the browser to the provider to sign in; comes back to the page it left. */
export async function signIn() {
  const oidc = await config;
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem("spellcast.signin", JSON.stringify({ verifier, state, back: location.href }));
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const to = new URL(oidc.authorizationEndpoint);
  to.search = new URLSearchParams({
    client_id: oidc.clientId, response_type: "code", scope: "openid profile", redirect_uri: callback(),
    state, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(to);
  return new Promise(() => {}); // the page is leaving
}

/** Forgets the session; signs out of the provider too where it offers that. */
export async function signOut() {
  const oidc = await config;
  const token = localStorage.getItem(KEY);
  localStorage.removeItem(KEY);
  if (!oidc?.endSessionEndpoint) return location.reload();
  const to = new URL(oidc.endSessionEndpoint);
  to.search = new URLSearchParams({ client_id: oidc.clientId, post_logout_redirect_uri: `${location.origin}/`, ...(token ? { id_token_hint: token } : {}) });
  location.assign(to);
}

/** A usable session token: the kept one, else a sign-in (provider; null instead when `ask` is
 *  false) or a demo session (local). */
export async function session(ask = true) {
  await arrived.catch(() => {});
  const kept = localStorage.getItem(KEY);
  const oidc = await config;
  if (oidc) return kept && claims(kept).exp * 1000 > Date.now() + 30000 ? kept : ask ? signIn() : null;
  if (kept && (await api("/api/v1/me/balance", kept).then(() => true, () => false))) return kept;
  const fresh = await api("/api/v1/dev/session", null, {});
  localStorage.setItem(KEY, fresh.token);
  return fresh.token;
}

/** The header's account control: "Sign in", or the user's name and "Sign out". */
export async function header() {
  await arrived.catch((e) => console.warn("sign-in failed", e));
  const place = document.querySelector("header");
  if (!place || !(await config)) return;
  const token = localStorage.getItem(KEY);
  const signedIn = token && claims(token).exp * 1000 > Date.now();
  const button = el("button", { type: "button", id: "account", className: "secondary", textContent: signedIn ? "Sign out" : "Sign in" });
  button.onclick = signedIn ? signOut : signIn;
  const c = signedIn && claims(token);
  place.append(...[signedIn && el("span", { id: "user", textContent: c.name || c.preferred_username || c.email || "" }), button].filter(Boolean));
}
