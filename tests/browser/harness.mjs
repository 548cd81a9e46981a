// Starts the real spellcast-local binary on 127.0.0.1 (port 0) and Debian's Chromium through
// playwright-core; everything started is stopped by the test that started it.
import { execFileSync, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, openSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const ROOT = resolve(import.meta.dirname, "../..");
export const OUT = process.env.SPELLCAST_TEST_OUTPUT || join(ROOT, "test-output");
export const SHOTS = join(OUT, "screenshots");
mkdirSync(SHOTS, { recursive: true });

function catalog() {
  const dir = mkdtempSync(join(tmpdir(), "spellcast-catalog-"));
  for (const src of [join(ROOT, "infra/spells"), join(ROOT, "tests/fixtures/spells")]) {
    for (const f of readdirSync(src)) cpSync(join(src, f), join(dir, f));
  }
  return dir;
}

// The real small model (scripts/model-server) as the `local` llm endpoint: scripts/test starts one
// for the whole run (SPELLCAST_TOOLS_FILE); a test file run on its own starts its own.
let model;
async function ensureModel() {
  if (process.env.SPELLCAST_TOOLS_FILE) return;
  model ??= (async () => {
    const port = await new Promise((ok) => {
      const probe = createServer().listen(0, "127.0.0.1", () => { const { port } = probe.address(); probe.close(() => ok(port)); });
    });
    const log = openSync(join(OUT, "browser-model-server.log"), "a");
    const proc = spawn(join(ROOT, "scripts/model-server"), ["serve", String(port)], { stdio: ["ignore", log, log] });
    process.on("exit", () => proc.kill("SIGTERM"));
    for (let i = 0; i < 6000; i++) {
      if (await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const file = join(mkdtempSync(join(tmpdir(), "spellcast-tools-")), "tools.json");
    writeFileSync(file, execFileSync(join(ROOT, "scripts/model-server"), ["tools", String(port)]));
    process.env.SPELLCAST_TOOLS_FILE = file;
  })();
  await model;
}

export async function startServer(name, ...args) {
  await ensureModel();
  const bin = process.env.SPELLCAST_BIN || join(process.env.CARGO_TARGET_DIR || join(ROOT, "target"), "debug/spellcast-local");
  const log = openSync(join(OUT, `browser-${name}.log`), "a");
  const proc = spawn(bin, ["--addr", "127.0.0.1:0", "--memory", "--catalog", catalog(), ...args], {
    cwd: ROOT, stdio: ["ignore", "pipe", log],
  });
  const line = await new Promise((ok, fail) => {
    createInterface({ input: proc.stdout }).once("line", ok);
    proc.once("exit", (code) => fail(new Error(`spellcast-local exited with ${code}`)));
  });
  const url = line.split("open ")[1].split("/spells/")[0];
  return { url, stop: () => proc.kill("SIGTERM") };
}

export async function startBrowser() {
  const profile = mkdtempSync(join(tmpdir(), "spellcast-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1000, height: 900 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  return context;
}

/// The page's overall progress and each step's status, as a person sees them.
export async function progress(page) {
  return page.evaluate(() => ({
    overall: document.getElementById("overall").value,
    steps: [...document.querySelectorAll("#steps li")].map((li) => li.dataset.status),
  }));
}

export async function waitForEnd(page, timeout = 30000) {
  await page.waitForFunction(() => {
    const a = document.getElementById("alert");
    return !a.hidden && a.textContent.length > 0;
  }, null, { timeout });
}
