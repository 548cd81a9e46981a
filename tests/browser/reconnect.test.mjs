// The server drops every stream after a second: the page reconnects with Last-Event-ID and ends
// with every step shown once.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { progress, startBrowser, startServer, waitForEnd } from "./harness.mjs";

let server;
let browser;
before(async () => {
  server = await startServer("reconnect", "--stream-limit-secs", "1");
  browser = await startBrowser();
});
after(async () => {
  await browser?.close();
  server?.stop();
});

test("a dropped stream is resumed without loss or repeats", { timeout: 60000 }, async () => {
  const page = await browser.newPage();
  const streams = [];
  page.on("request", (r) => r.url().includes("/stream") && streams.push(r.allHeaders().then((h) => h["last-event-id"] ?? null)));
  await page.goto(`${server.url}/spells/slow-scroll`);
  await page.waitForSelector("#form:not([hidden])");
  await page.click("#cast");
  await waitForEnd(page);
  streams.splice(0, streams.length, ...(await Promise.all(streams)));
  assert.ok(streams.length >= 2, `the stream was opened ${streams.length} times`);
  assert.ok(streams.slice(1).every((id) => Number(id) > 0), `reconnects resume: ${streams}`);
  const p = await progress(page);
  assert.deepEqual(p.steps, Array(5).fill("succeeded"));
  assert.equal(p.overall, 1);
  assert.equal(await page.locator("#outputs figure").count(), 2);
});
