// Signing in on the page with a real OpenID provider (npm oidc-provider, OpenID Certified, on
// 127.0.0.1; SPEC §9.1): Sign in goes to the provider's own login page (Authorization Code +
// PKCE), comes back signed in with no code or token left in the address, the welcome points show,
// a spell is cast and watched, the ledger says why the points came, and Sign out signs out of
// the provider too. No page breaks its CSP on the way.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, openSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { AxeBuilder } from "@axe-core/playwright";
import { OUT, ROOT, SHOTS, startBrowser, startServer, waitForEnd } from "./harness.mjs";

let server, provider, browser;
const freePort = () => new Promise((ok) => {
  const probe = createServer().listen(0, "127.0.0.1", () => { const { port } = probe.address(); probe.close(() => ok(port)); });
});

before(async () => {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  server = await startServer("sign-in", "--oidc-issuer", issuer, "--oidc-audience", "spellcast", "--welcome-pts", "100");
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const keys = join(mkdtempSync(join(tmpdir(), "spellcast-oidc-")), "keys.json");
  writeFileSync(keys, JSON.stringify({ keys: [{ ...privateKey.export({ format: "jwk" }), kid: "k1", alg: "RS256", use: "sig" }] }));
  const log = openSync(join(OUT, "browser-oidc-provider.log"), "a");
  provider = spawn("node", [join(ROOT, "tests/oidc/provider.mjs"), String(port), keys, "spellcast", `${server.url}/me`, `${server.url}/`],
    { cwd: join(ROOT, "tests/oidc"), stdio: ["ignore", "pipe", log] });
  await new Promise((ok) => createInterface({ input: provider.stdout }).once("line", ok));
  browser = await startBrowser();
});
after(async () => {
  await browser?.close();
  provider?.kill("SIGTERM");
  server?.stop();
});

test("a user signs in with the provider, gets welcome points, casts and signs out", { timeout: 120000 }, async () => {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(e.message));
  page.on("console", (m) => { if (/Content Security Policy|Refused to/.test(m.text())) problems.push(m.text()); });

  await page.goto(`${server.url}/spells/hello-sigil`);
  await page.waitForSelector("#form:not([hidden])");
  await page.waitForSelector("#account");
  assert.equal(await page.textContent("#account"), "Sign in");
  const axe = await new AxeBuilder({ page }).analyze();
  assert.deepEqual(axe.violations.map((v) => v.id), [], "axe, signed out");

  await page.click("#account");
  await page.waitForSelector('input[name="login"]');
  assert.match(page.url(), /^http:\/\/127\.0\.0\.1:\d+\/interaction\//, "the provider's own login page");
  await page.fill('input[name="login"]', "ada");
  await page.fill('input[name="password"]', "any");
  await page.click('button[type="submit"]');
  await page.waitForSelector('input[value="consent"]', { state: "attached" });
  await page.click('button[type="submit"]');

  // Back where sign-in started, signed in, nothing of the exchange left in the address.
  await page.waitForURL(`${server.url}/spells/hello-sigil`);
  await page.waitForSelector("#user");
  assert.equal(await page.textContent("#user"), "ada");
  assert.equal(await page.textContent("#account"), "Sign out");
  assert.doesNotMatch(page.url(), /code=|token=|state=/);
  const token = await page.evaluate(() => localStorage.getItem("spellcast.session"));
  assert.equal(JSON.parse(Buffer.from(token.split(".")[0], "base64url")).alg, "RS256", "the provider's ID token");

  await page.waitForSelector("#form:not([hidden])");
  await page.fill("#f-name", "Ada");
  await page.click("#cast");
  await page.waitForURL(/\/runs\/run_[a-z0-9]+$/);
  await waitForEnd(page);
  assert.match(await page.textContent("#alert"), /done|succeeded/i);
  await page.waitForFunction(() => /Balance: \d+ points/.test(document.getElementById("balance").textContent));
  const balance = Number((await page.textContent("#balance")).match(/\d+/)[0]);
  assert.ok(balance < 100 && balance >= 0, `welcome points paid for the run: ${balance}`);
  await page.screenshot({ path: join(SHOTS, "sign-in-signed-in-run.png") });

  await page.goto(`${server.url}/me`);
  await page.waitForSelector("#ledger tbody tr:nth-child(2)");
  const what = await page.$$eval("#ledger tbody tr", (trs) => trs.map((tr) => tr.children[1].textContent.split(" (")[0]));
  assert.deepEqual(what, ["Paid for a run", "Points granted: welcome"]);

  await page.click("#account");
  // The provider asks whether to sign out of it too.
  await page.waitForSelector('button[autofocus], form button', { timeout: 10000 });
  await page.click('button[autofocus], form button');
  await page.waitForURL(`${server.url}/`);
  assert.equal(await page.evaluate(() => localStorage.getItem("spellcast.session")), null);
  await page.goto(`${server.url}/spells/hello-sigil`);
  await page.waitForSelector("#account");
  assert.equal(await page.textContent("#account"), "Sign in");
  assert.deepEqual(problems, []);
});
