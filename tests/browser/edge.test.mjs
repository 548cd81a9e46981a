// The CloudFront Function, rendered exactly as it is deployed, against the shared crawler list.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";
import { render } from "../../infra/edge/render.mjs";

const code = render();
const sandbox = {};
vm.runInNewContext(`${code}\nthis.handler = handler;`, sandbox);
const route = (uri, agent) => {
  const headers = agent === undefined ? {} : { "user-agent": { value: agent } };
  return sandbox.handler({ request: { uri, method: "GET", headers, querystring: {} } }).uri;
};
const crawlers = JSON.parse(readFileSync(new URL("../../infra/edge/crawlers.json", import.meta.url), "utf8"));
const CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

test("the deployed code carries the whole shared crawler list", () => {
  for (const c of crawlers) assert.ok(code.includes(JSON.stringify(c)), c);
  assert.ok(crawlers.length > 10);
});

test("every crawler in the list is routed to the og page", () => {
  for (const c of crawlers) {
    assert.equal(route("/spells/slow-scroll", `Mozilla/5.0 (compatible; ${c.toUpperCase()}/1.0)`), "/spells/slow-scroll/og", c);
  }
  assert.equal(route("/spells/hello-sigil/", "facebookexternalhit/1.1"), "/spells/hello-sigil/og");
});

test("people get the execution page", () => {
  assert.equal(route("/spells/slow-scroll", CHROME), "/spells/slow-scroll");
  assert.equal(route("/spells/slow-scroll", undefined), "/spells/slow-scroll");
});

test("other paths are untouched, even for crawlers", () => {
  for (const uri of ["/", "/static/js/spell-execute.js", "/api/v1/spells/hello-sigil/meta", "/spells/hello-sigil/og",
    "/spells/Bad_Slug", "/spells/a/b"]) {
    assert.equal(route(uri, "Twitterbot/1.0"), uri);
  }
});
