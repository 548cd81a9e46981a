// The home page in a real Chromium (issue 13, item 1): the catalog from the API, every spell of
// the catalog directory (the sample spells and the test spells copied beside them) as a card
// with its picture, summary and price, axe-clean, and usable with the keyboard alone.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AxeBuilder } from "@axe-core/playwright";
import { ROOT, SHOTS, startBrowser, startServer } from "./harness.mjs";

let server;
let browser;
before(async () => {
  server = await startServer("home");
  browser = await startBrowser();
});
after(async () => {
  await browser?.close();
  server?.stop();
});

/** Every spell file the server was given: {slug: title}. */
function catalogFiles() {
  const spells = {};
  for (const dir of ["infra/spells", "tests/fixtures/spells"]) {
    for (const f of readdirSync(join(ROOT, dir)).filter((f) => f.endsWith(".json"))) {
      const spell = JSON.parse(readFileSync(join(ROOT, dir, f), "utf8"));
      spells[spell.slug] = spell.title;
    }
  }
  return spells;
}

test("the home page lists every spell of the catalog, each linking to its page", { timeout: 30000 }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(`${server.url}/`);
  const expected = catalogFiles();
  await page.waitForFunction((n) => document.querySelectorAll("#catalog li").length === n,
    Object.keys(expected).length);
  const cards = await page.$$eval("#catalog li", (lis) => lis.map((li) => ({
    href: li.querySelector("h2 a").getAttribute("href"),
    title: li.querySelector("h2 a").textContent,
    summary: li.querySelectorAll("p")[0].textContent,
    price: li.querySelectorAll("p")[1].textContent,
  })));
  const shown = Object.fromEntries(cards.map((c) => [c.href.replace("/spells/", ""), c.title]));
  assert.deepEqual(shown, expected, "one card per spell file, titled as the file says");
  for (const c of cards) {
    assert.ok(c.summary.length > 0, c.href);
    assert.match(c.price, /^Average cost (1 point|\d+ points)$/);
  }
  await page.waitForFunction(() => [...document.querySelectorAll("#catalog img")]
    .every((img) => img.complete && img.naturalWidth > 0));
  assert.match(await page.textContent("#catalog-status"), new RegExp(`^${cards.length} spells$`));
  await page.screenshot({ path: join(SHOTS, "home.png"), fullPage: true });
  const axe = await new AxeBuilder({ page }).analyze();
  assert.deepEqual(axe.violations.map((v) => v.id), [], "axe violations on the home page");

  // Keyboard only: Tab past the brand link to the first spell, Enter opens its page.
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement.getAttribute("href"));
  assert.equal(focused, cards[0].href);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#form:not([hidden])");
  assert.equal(new URL(page.url()).pathname, cards[0].href);
  assert.deepEqual(errors, []);
  await page.close();
});
