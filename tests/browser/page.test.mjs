// The execution page in a real Chromium, as a person meets it (SPEC §3.7).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { AxeBuilder } from "@axe-core/playwright";
import { SHOTS, progress, startBrowser, startServer, waitForEnd } from "./harness.mjs";

let server;
let browser;
before(async () => {
  server = await startServer("page");
  browser = await startBrowser();
});
after(async () => {
  await browser?.close();
  server?.stop();
  // The server sends a strict Content-Security-Policy (no inline script or style): the page
  // must work within it, in every state every test reached.
  assert.deepEqual(cspViolations, [], "Content-Security-Policy violations");
});

const cspViolations = [];

async function open(slug, base = server.url) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  await page.goto(`${base}/spells/${slug}`);
  await page.waitForSelector("#form:not([hidden])");
  page.errors = errors;
  return page;
}

async function noAxeViolations(page, state) {
  const result = await new AxeBuilder({ page }).analyze();
  const found = result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(", ")}`);
  assert.deepEqual(found, [], `axe violations in the ${state} state`);
}

test("a new user casts slow-scroll and watches it progress live", { timeout: 60000 }, async () => {
  const page = await open("slow-scroll");
  await page.screenshot({ path: join(SHOTS, "slow-scroll-form.png"), fullPage: true });
  await noAxeViolations(page, "form");
  await page.click("#cast");
  const seen = new Set();
  let shotRunning = false;
  for (let i = 0; i < 300; i++) {
    const p = await progress(page);
    if (p.overall > 0 && p.overall < 1) seen.add(p.overall.toFixed(3));
    if (!shotRunning && p.steps.filter((s) => s === "succeeded").length >= 2) {
      await page.screenshot({ path: join(SHOTS, "slow-scroll-running.png"), fullPage: true });
      await noAxeViolations(page, "running");
      shotRunning = true;
    }
    if (p.steps.length && p.steps.every((s) => s === "succeeded")) break;
    await page.waitForTimeout(50);
  }
  assert.ok(seen.size >= 2, `intermediate progress states seen: ${[...seen]}`);
  await waitForEnd(page);
  assert.match(await page.textContent("#outputs"), /dragons/);
  assert.equal(await page.locator("#outputs figure").count(), 2);
  await page.screenshot({ path: join(SHOTS, "slow-scroll-finished.png"), fullPage: true });
  await noAxeViolations(page, "finished");
  assert.deepEqual(page.errors, []);
});

test("hello-sigil shows the decoded image and the text", { timeout: 30000 }, async () => {
  const page = await open("hello-sigil");
  await page.fill("#f-name", "Grace");
  await page.click("#cast");
  await waitForEnd(page);
  await page.waitForFunction(() => {
    const img = document.querySelector("#outputs img");
    return img && img.complete && img.naturalWidth > 0;
  });
  const img = await page.evaluate(() => {
    const i = document.querySelector("#outputs img");
    return { w: i.naturalWidth, h: i.naturalHeight, alt: i.alt };
  });
  assert.deepEqual(img, { w: 512, h: 512, alt: "The sigil of Grace" }, "twice the size it is shown at");
  assert.match(await page.textContent("#outputs"), /Hello, Grace!/);
  assert.equal(await page.getAttribute("#outputs a", "target"), "_blank");
});

test("fizzle shows the error, the refund and the balance back", { timeout: 30000 }, async () => {
  const page = await open("fizzle");
  await page.waitForFunction(() => /Balance: \d+/.test(document.getElementById("balance").textContent));
  const before = await page.textContent("#balance");
  await page.click("#cast");
  await waitForEnd(page);
  const alert = await page.textContent("#alert");
  assert.match(alert, /failed at “Strike the spark”: The spark fizzled: the powder was damp\./);
  assert.equal(alert.split("Strike the spark").length, 2, "the step is named once");
  assert.match(alert, /\d+ points were refunded/);
  await page.waitForFunction((b) => document.getElementById("balance").textContent === b, before);
  assert.equal((await progress(page)).steps[1], "failed");
  await page.screenshot({ path: join(SHOTS, "fizzle-error.png"), fullPage: true });
  await noAxeViolations(page, "error");
});

test("a reload mid-run restores the steps done and finishes", { timeout: 60000 }, async () => {
  const page = await open("slow-scroll");
  await page.click("#cast");
  await page.waitForFunction(() => document.querySelectorAll('#steps li[data-status="succeeded"]').length >= 2);
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll("#steps li").length === 5);
  const restored = await progress(page);
  assert.ok(restored.steps.filter((s) => s === "succeeded").length >= 2, `restored: ${restored.steps}`);
  await waitForEnd(page);
  assert.deepEqual((await progress(page)).steps, Array(5).fill("succeeded"));
  assert.match(await page.textContent("#outputs"), /dragons/);
});

test("cancel from the keyboard: asked to confirm, stopped mid-step, the steps not done refunded", { timeout: 60000 }, async () => {
  const page = await open("long-wait");
  await page.waitForFunction(() => /Balance: \d+/.test(document.getElementById("balance").textContent));
  const points = async (id) => Number((await page.textContent(id)).match(/(\d+) points?/)[1]);
  const before = await points("#balance");
  await page.click("#cast");
  // Inside the second step, a 30 s wait.
  await page.waitForFunction(() => document.querySelector("#s1")?.dataset.status === "running");
  const cost = await points("#quote");
  assert.equal(await page.isVisible("#cancel"), true);
  await noAxeViolations(page, "running, cancelable");
  for (let i = 0; i < 20 && (await page.evaluate(() => document.activeElement?.id)) !== "cancel"; i++) {
    await page.keyboard.press("Tab");
  }
  assert.equal(await page.evaluate(() => document.activeElement.id), "cancel", "the cancel button is reachable by Tab");
  // Declining the confirmation changes nothing.
  page.once("dialog", (d) => d.dismiss());
  await page.keyboard.press("Enter");
  await page.waitForTimeout(300);
  assert.equal(await page.textContent("#cancel"), "Cancel the run");
  assert.equal((await progress(page)).steps[1], "running");
  // Accepting it cancels the run.
  page.once("dialog", (d) => {
    assert.match(d.message(), /refunded/);
    d.accept();
  });
  const asked = Date.now();
  await page.keyboard.press("Enter");
  await waitForEnd(page);
  assert.ok(Date.now() - asked < 10000, "the wait was cut short");
  const alert = await page.textContent("#alert");
  assert.match(alert, /canceled/);
  const refunded = Number(alert.match(/(\d+) points were refunded/)[1]);
  assert.equal(refunded, Math.floor((cost * 2) / 3), "two of three steps not done");
  assert.deepEqual((await progress(page)).steps, ["succeeded", "canceled", "canceled"]);
  assert.equal(await page.isVisible("#cancel"), false);
  await page.waitForFunction((b) => document.getElementById("balance").textContent === `Balance: ${b} points`,
    before - cost + refunded);
  await page.screenshot({ path: join(SHOTS, "long-wait-canceled.png"), fullPage: true });
  await noAxeViolations(page, "canceled");
  assert.deepEqual(page.errors, []);
});

test("a long wait counts down on the page, holding no runner, then the run goes on", { timeout: 60000 }, async () => {
  const napping = await startServer("nap", "--durable-wait-after-ms", "2000");
  try {
    const page = await open("nap", napping.url);
    await page.click("#cast");
    const label = () => page.textContent("#s1 .st");
    await page.waitForFunction(() => /waiting, 0:0\d left/.test(document.querySelector("#s1 .st")?.textContent ?? ""));
    const first = await label();
    await page.waitForTimeout(2100);
    const later = await label();
    const secs = (text) => Number(/0:0(\d) left/.exec(text)[1]);
    assert.ok(secs(later) < secs(first), `the countdown moves: ${first} then ${later}`);
    await page.screenshot({ path: join(SHOTS, "nap-waiting.png"), fullPage: true });
    await noAxeViolations(page, "waiting");
    await waitForEnd(page);
    assert.deepEqual((await progress(page)).steps, ["succeeded", "succeeded", "succeeded"]);
    assert.deepEqual(page.errors, []);
  } finally {
    napping.stop();
  }
});

test("keyboard only: fill and submit without the mouse", { timeout: 30000 }, async () => {
  const page = await open("hello-sigil");
  for (let i = 0; i < 10 && (await page.evaluate(() => document.activeElement?.id)) !== "f-name"; i++) {
    await page.keyboard.press("Tab");
  }
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-name");
  await page.keyboard.press("Control+A");
  await page.keyboard.type("Keys");
  await page.keyboard.press("Tab"); // into the mood radios
  await page.keyboard.press("ArrowRight"); // bright -> calm
  for (let i = 0; i < 10 && (await page.evaluate(() => document.activeElement?.id)) !== "cast"; i++) {
    await page.keyboard.press("Tab");
  }
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, "none", "focus is visible");
  await page.keyboard.press("Enter");
  await waitForEnd(page);
  assert.match(await page.textContent("#outputs"), /Be at peace, Keys\./);
});

test("client-side validation points at the field, like the server", { timeout: 30000 }, async () => {
  const page = await open("slow-scroll");
  await page.fill("#f-topic", "");
  await page.fill("#f-lines", "42");
  await page.click("#cast");
  assert.equal(await page.isVisible("#f-topic-e"), true);
  assert.equal(await page.isVisible("#f-lines-e"), true);
  assert.equal(await page.getAttribute("#f-topic", "aria-invalid"), "true");
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-topic");
  assert.equal(await page.isVisible("#run"), false, "nothing was cast");
  await page.screenshot({ path: join(SHOTS, "slow-scroll-invalid.png"), fullPage: true });
});

test("markup in spell text and inputs is never injected", { timeout: 30000 }, async () => {
  const page = await open("evil-markup");
  await page.click("#cast");
  await waitForEnd(page);
  const found = await page.evaluate(() => ({
    pwned: window.pwned,
    scripts: document.scripts.length,
    injected: document.querySelectorAll("main b, main i, main iframe, main img[src='x'], main script").length,
    title: document.getElementById("title").textContent,
    output: document.querySelector("#outputs pre").textContent,
  }));
  assert.equal(found.pwned, undefined);
  assert.equal(found.scripts, 1, "only the page's own module");
  assert.equal(found.injected, 0);
  assert.equal(found.title, '<script>window.pwned=1</script>"><b>Bold</b>');
  assert.equal(found.output, "<script>window.pwned=5</script>");
});

test("the deprecation banner shows for preview users until dismissed", { timeout: 30000 }, async () => {
  const page = await open("hello-sigil?preview=1");
  assert.equal(await page.isVisible("#banner"), true);
  await page.click("#dismiss");
  assert.equal(await page.isVisible("#banner"), false);
  await page.reload();
  await page.waitForSelector("#form:not([hidden])");
  assert.equal(await page.isVisible("#banner"), false, "the dismissal is remembered");
  const other = await browser.newPage();
  await other.goto(`${server.url}/spells/hello-sigil`);
  await other.waitForSelector("#form:not([hidden])");
  assert.equal(await other.isVisible("#banner"), false);
});

test("the oracle's answer grows on the page as the model writes it, nothing moving", { timeout: 120000 }, async () => {
  const page = await open("oracle");
  await page.fill("#f-question", "Why do leaves fall?");
  await page.click("#cast");
  await page.waitForSelector("#s0 .answer");
  // Every change of the answer box, seen from inside the page: its length, its height and where
  // the next step sits (a shift would move it).
  await page.evaluate(() => {
    const box = document.querySelector("#s0 .answer");
    window.answerSeen = [];
    new MutationObserver(() => window.answerSeen.push({
      length: box.textContent.length,
      height: box.getBoundingClientRect().height,
      next: document.querySelector("#s1").getBoundingClientRect().top,
      step: document.querySelector("#s0").dataset.status,
    })).observe(box, { childList: true, characterData: true, subtree: true });
  });
  const live = await page.getAttribute("#s0 .answer", "aria-live");
  assert.equal(live, "polite", "screen readers are told, politely");
  await page.waitForFunction(() => window.answerSeen.length >= 2, null, { timeout: 60000 });
  await noAxeViolations(page, "answering");
  await page.screenshot({ path: join(SHOTS, "oracle-answering.png"), fullPage: true });
  await waitForEnd(page);
  const seen = await page.evaluate(() => window.answerSeen);
  const lengths = seen.map((s) => s.length);
  assert.ok(lengths.length >= 2, `the answer arrived in pieces: ${lengths}`);
  assert.deepEqual([...lengths].sort((a, b) => a - b), lengths, "it only grows");
  assert.ok(seen.some((s) => s.step === "running"), "text arrived while the step ran");
  assert.equal(new Set(seen.map((s) => s.height)).size, 1, "the box keeps its height");
  assert.equal(new Set(seen.map((s) => s.next)).size, 1, "nothing below it moves");
  const answer = await page.textContent("#s0 .answer");
  const shown = await page.locator("#outputs figure pre").first().textContent();
  assert.equal(answer, shown, "the box holds the whole answer, as the gallery shows it");
  assert.ok(answer.trim().length > 0);
  await page.screenshot({ path: join(SHOTS, "oracle-finished.png"), fullPage: true });
  await noAxeViolations(page, "finished");
  assert.deepEqual(page.errors, []);
});

// A real PNG (signature, IHDR, IDAT, IEND) of `w`×`h` RGB pixels.
function png(w, h) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (kind, data) => {
    const body = Buffer.concat([Buffer.from(kind), data]);
    const out = Buffer.alloc(8 + data.length + 4);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const rows = Buffer.concat(Array.from({ length: h }, (_, y) =>
    Buffer.from([0, ...Array.from({ length: w * 3 }, (_, x) => (x * 20 + y * 40) % 256)])));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr), chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0))]);
}

test("a picture is picked, previewed, uploaded and shown in the gallery", { timeout: 60000 }, async () => {
  const page = await open("looking-glass");
  const input = page.locator("#f-picture");
  assert.equal(await input.getAttribute("type"), "file");
  assert.equal(await input.getAttribute("accept"), "image/*");
  // Too large: refused before anything is sent, pointing at the field.
  await input.setInputFiles({ name: "huge.png", mimeType: "image/png", buffer: Buffer.alloc(5 * 1024 * 1024 + 1) });
  await page.waitForSelector("#f-picture-e:not([hidden])");
  assert.match(await page.textContent("#f-picture-e"), /largest allowed is 5\.0 MB/);
  assert.equal(await input.getAttribute("aria-invalid"), "true");
  await noAxeViolations(page, "too large");
  // A real picture: previewed from the machine (a blob: URL the page's policy allows).
  const picture = png(24, 16);
  await input.setInputFiles({ name: "tiny.png", mimeType: "image/png", buffer: picture });
  await page.waitForFunction(() => document.querySelector(".preview img")?.naturalWidth === 24);
  assert.match(await page.textContent(".preview figcaption"), /tiny\.png · \d+ bytes/);
  assert.equal(await page.isHidden("#f-picture-e"), true);
  await noAxeViolations(page, "picked");
  await page.screenshot({ path: join(SHOTS, "looking-glass-picked.png"), fullPage: true });
  await page.click("#cast");
  await waitForEnd(page);
  assert.match(await page.textContent("#alert"), /done|succeeded|finished/i);
  // The gallery shows the very picture, by reference, and the reading of its bytes.
  await page.waitForFunction(() => [...document.querySelectorAll("#outputs img")].some((i) => i.naturalWidth === 24));
  assert.match(await page.textContent("#outputs"), new RegExp(`image/png, ${picture.length} bytes`));
  await noAxeViolations(page, "finished");
  await page.screenshot({ path: join(SHOTS, "looking-glass-finished.png"), fullPage: true });
  assert.deepEqual(page.errors, []);
});
