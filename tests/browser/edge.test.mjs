// The CloudFront Function, rendered exactly as it is deployed, against the shared crawler list.
// CloudFront's `cloudfront` module is replaced by a recorder of the origin it was asked for.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";
import { render, templateBlock, templateBlockNow } from "../../infra/edge/render.mjs";

const code = render();
const IMPORT = 'import cf from "cloudfront";';
const sandbox = { cf: { selectRequestOriginById(id) { sandbox.origin = id; } } };
assert.ok(code.startsWith(IMPORT), "the function imports CloudFront's origin helpers");
vm.runInNewContext(`${code.replace(IMPORT, "")}\nthis.handler = handler;`, sandbox);
const route = (uri, agent, host = "d1.cloudfront.net") => {
  sandbox.origin = undefined;
  const headers = { host: { value: host } };
  if (agent !== undefined) headers["user-agent"] = { value: agent };
  const request = sandbox.handler({ request: { uri, method: "GET", headers, querystring: {} } });
  return { uri: request.uri, origin: sandbox.origin, forwardedHost: request.headers["x-spellcast-host"]?.value };
};
const crawlers = JSON.parse(readFileSync(new URL("../../infra/edge/crawlers.json", import.meta.url), "utf8"));
const CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

test("the deployed code carries the whole shared crawler list", () => {
  for (const c of crawlers) assert.ok(code.includes(JSON.stringify(c)), c);
  assert.ok(crawlers.length > 10);
});

test("infra/template.yaml deploys exactly this code (node infra/edge/render.mjs --template)", () => {
  assert.equal(templateBlockNow(), templateBlock());
});

test("every crawler in the list is routed to the og page on the API origin", () => {
  for (const c of crawlers) {
    const r = route("/spells/slow-scroll", `Mozilla/5.0 (compatible; ${c.toUpperCase()}/1.0)`);
    assert.deepEqual([r.uri, r.origin], ["/spells/slow-scroll/og", "api"], c);
  }
  assert.equal(route("/spells/hello-sigil/", "facebookexternalhit/1.1").uri, "/spells/hello-sigil/og");
});

test("people get the static execution page from the default origin", () => {
  for (const agent of [CHROME, undefined]) {
    const r = route("/spells/slow-scroll", agent);
    assert.deepEqual([r.uri, r.origin], ["/static/spell.html", undefined]);
  }
});

test("a shared run: crawlers get its og page from the API, people its public page", () => {
  const id = "sh_5f2c0b7e9a1d4c3b8e6f0a2d1c4b7e9a";
  assert.deepEqual(Object.values(route(`/r/${id}`, "Slackbot-LinkExpanding 1.0")).slice(0, 2), [`/r/${id}/og`, "api"]);
  assert.deepEqual(Object.values(route(`/r/${id}/`, "facebookexternalhit/1.1")).slice(0, 2), [`/r/${id}/og`, "api"]);
  assert.deepEqual(Object.values(route(`/r/${id}`, CHROME)).slice(0, 2), ["/static/share.html", undefined]);
  for (const uri of [`/r/${id}/og`, `/r/${id}/og.png`, "/r/", "/r/a.b"]) {
    assert.equal(route(uri, "Twitterbot/1.0").uri, uri);
  }
});

test("a run's page is the execution page, and /me the account page, for everyone", () => {
  for (const agent of [CHROME, "Twitterbot/1.0", undefined]) {
    assert.equal(route("/runs/run_01m8da1d0vzgn5dg0m9e71f6nj", agent).uri, "/static/spell.html");
    assert.equal(route("/runs/run_1/", agent).uri, "/static/spell.html");
    assert.equal(route("/me", agent).uri, "/static/me.html");
    assert.equal(route("/me", agent).origin, undefined);
  }
});

test("other paths are untouched, even for crawlers", () => {
  for (const uri of ["/", "/static/js/spell-execute.js", "/api/v1/spells/hello-sigil/meta", "/spells/hello-sigil/og",
    "/spells/Bad_Slug", "/spells/a/b", "/runs/", "/runs/a/b", "/runs/bad.id", "/me/x", "/api/v1/me/balance"]) {
    const r = route(uri, "Twitterbot/1.0");
    assert.deepEqual([r.uri, r.origin], [uri, undefined]);
  }
});

test("the viewer's host is forwarded for canonical URLs", () => {
  assert.equal(route("/api/v1/spells/hello-sigil/meta", CHROME, "spells.example").forwardedHost, "spells.example");
});
