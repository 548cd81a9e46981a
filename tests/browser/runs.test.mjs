// A run's own page and the account page in a real Chromium (issue 13, items 2 and 3): a cast moves
// the address to /runs/{runId}; the same user, signed in from a fresh browser profile (nothing
// of the first one's storage carried over), finds the run again from /me and opens it, restored
// from the server; the ledger links to the run; axe-clean; keyboard-usable.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AxeBuilder } from "@axe-core/playwright";
import { SHOTS, progress, startBrowser, startServer, waitForEnd } from "./harness.mjs";

let server;
const browsers = [];
before(async () => {
  server = await startServer("runs");
});
after(async () => {
  for (const b of browsers) await b.close();
  server?.stop();
});

async function browser(token) {
  const b = await startBrowser();
  browsers.push(b);
  // Signed in by a host site (SPEC: window.spellcastSession), not by this browser's storage.
  if (token) await b.addInitScript((t) => { window.spellcastSession = async () => t; }, token);
  return b;
}

async function noAxeViolations(page, state) {
  const result = await new AxeBuilder({ page }).analyze();
  assert.deepEqual(result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(", ")}`), [],
    `axe violations on ${state}`);
}

test("a run is found again from /me in a fresh profile, restored from the server", { timeout: 90000 }, async () => {
  const first = await (await browser()).newPage();
  await first.goto(`${server.url}/spells/hello-sigil`);
  await first.waitForSelector("#form:not([hidden])");
  await first.fill("#f-name", "Ada");
  await first.click("#cast");
  await first.waitForURL(/\/runs\/run_[a-z0-9]+$/);
  const runPath = new URL(first.url()).pathname;
  await waitForEnd(first);
  const token = await first.evaluate(() => localStorage.getItem("spellcast.session"));
  assert.ok(token, "the first profile's demo session");

  const page = await (await browser(token)).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  assert.equal(await page.evaluate(() => localStorage.length).catch(() => 0), 0);
  await page.goto(`${server.url}/me`);
  await page.waitForSelector("#runs li");
  const runs = await page.$$eval("#runs li a", (as) => as.map((a) => [a.getAttribute("href"), a.textContent]));
  assert.deepEqual(runs, [[runPath, "Hello, Sigil"]]);
  assert.match(await page.textContent("#runs li"), /done, \d+ points/);
  await page.waitForSelector("#ledger tbody tr:nth-child(2)");
  const ledger = await page.$$eval("#ledger tbody tr", (trs) => trs.map((tr) => ({
    what: tr.children[1].textContent, pts: tr.children[2].textContent, href: tr.querySelector("a")?.getAttribute("href"),
  })));
  assert.deepEqual(ledger.map((e) => e.what.split(" (")[0]), ["Paid for a run", "Points granted: demo"]);
  assert.equal(ledger[0].href, runPath, "the debit links to its run");
  assert.match(ledger[0].pts, /^−\d+$/);
  assert.match(await page.textContent("#balance"), /Balance: \d+ points/);
  await page.screenshot({ path: join(SHOTS, "me.png"), fullPage: true });
  await noAxeViolations(page, "/me");

  // Keyboard only: Tab to the run's link, Enter opens its page.
  await page.locator("#runs li a").focus();
  await page.keyboard.press("Enter");
  await page.waitForURL(`${server.url}${runPath}`);
  await waitForEnd(page);
  assert.deepEqual((await progress(page)).steps, ["succeeded", "succeeded"]);
  assert.equal(await page.textContent("#title"), "Hello, Sigil");
  assert.equal(await page.isVisible("#form"), false, "a run's page shows the run, not the form");
  assert.equal(await page.getAttribute("#again", "href"), "/spells/hello-sigil");
  await page.waitForFunction(() => {
    const img = document.querySelector("#outputs img");
    return img && img.complete && img.naturalWidth > 0;
  });
  assert.match(await page.textContent("#outputs"), /Ada/);
  await page.screenshot({ path: join(SHOTS, "run-page.png"), fullPage: true });
  await noAxeViolations(page, "the run's page");
  assert.deepEqual(errors, []);
});

test("a run's page follows a run live, and someone else's run is not shown", { timeout: 90000 }, async () => {
  const b = await browser();
  const page = await b.newPage();
  await page.goto(`${server.url}/spells/slow-scroll`);
  await page.waitForSelector("#form:not([hidden])");
  await page.click("#cast");
  await page.waitForURL(/\/runs\//);
  const runUrl = page.url();
  // Opened in another tab mid-run: restored from the server, then live to the end.
  const other = await b.newPage();
  await other.goto(runUrl);
  await other.waitForFunction(() => document.querySelectorAll("#steps li").length === 5);
  assert.equal(await other.isVisible("#cancel"), true, "Cancel while it goes");
  await waitForEnd(other);
  assert.deepEqual((await progress(other)).steps, Array(5).fill("succeeded"));
  assert.match(await other.textContent("#outputs"), /dragons/);
  // Back goes to the spell's page.
  await page.goBack();
  await page.waitForSelector("#form:not([hidden])");
  assert.equal(new URL(page.url()).pathname, "/spells/slow-scroll");

  const stranger = await (await browser()).newPage();
  await stranger.goto(runUrl);
  await stranger.waitForFunction(() => document.getElementById("title").textContent !== "Loading the spell…");
  assert.equal(await stranger.textContent("#title"), "This run is someone else's");
  await stranger.goto(`${server.url}/runs/run_doesnotexist`);
  await stranger.waitForFunction(() => document.getElementById("title").textContent === "Run not found");
  await noAxeViolations(stranger, "a run not found");
});

test("the owner shares a run; anyone opens the link; a crawler gets its card; unshare ends it", { timeout: 90000 }, async () => {
  const page = await (await browser()).newPage();
  await page.goto(`${server.url}/`);
  await page.click('#catalog a[href="/spells/hello-sigil"]');
  await page.waitForSelector("#form:not([hidden])");
  await page.fill("#f-name", "Grace");
  await page.click("#cast");
  await waitForEnd(page);
  await page.waitForSelector("#share:not([hidden])");
  await page.click("#share");
  await page.waitForSelector("#share-link:not([hidden])");
  const link = await page.textContent("#share-link");
  assert.match(link, new RegExp(`^${server.url}/r/sh_[0-9a-f]{32}$`));
  await noAxeViolations(page, "a shared run's owner page");

  // Someone else, signed in nowhere, opens the link.
  const visitor = await (await browser()).newPage();
  await visitor.goto(link);
  await visitor.waitForSelector("#gallery:not([hidden])");
  assert.equal(await visitor.textContent("#title"), "Hello, Sigil");
  assert.match(await visitor.textContent("#outputs"), /Grace/);
  await visitor.waitForFunction(() => {
    const img = document.querySelector("#outputs img");
    return img && img.complete && img.naturalWidth > 0;
  });
  assert.equal(await visitor.getAttribute("#cast-link", "href"), "/spells/hello-sigil");
  assert.equal(await visitor.isVisible("#inputs-box"), false, "inputs stay private");
  await visitor.screenshot({ path: join(SHOTS, "shared-run.png"), fullPage: true });
  await noAxeViolations(visitor, "a shared run's public page");

  // A crawler fetching the link gets the og page; its image is the run's card.
  const og = await fetch(link, { headers: { "user-agent": "Slackbot-LinkExpanding 1.0" } });
  const html = await og.text();
  const image = html.match(/<meta property="og:image" content="([^"]+)">/)[1];
  assert.equal(image, `${link}/og.png`);
  const card = Buffer.from(await (await fetch(image)).arrayBuffer());
  assert.deepEqual([card.readUInt32BE(16), card.readUInt32BE(20)], [1200, 630]);
  const shot = await visitor.context().newPage();
  await shot.goto(image);
  await shot.screenshot({ path: join(SHOTS, "shared-run-card.png") });

  // Unshared: the link is dead.
  await page.click("#unshare");
  await page.waitForSelector("#share:not([hidden])");
  await visitor.reload();
  await visitor.waitForFunction(() => document.getElementById("title").textContent === "This shared run is gone");
  assert.equal((await fetch(link, { headers: { "user-agent": "Slackbot-LinkExpanding 1.0" } })).status, 404);
  assert.equal((await fetch(image)).status, 404);
});
