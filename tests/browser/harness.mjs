// Starts the real spellcast-local binary on 127.0.0.1 (port 0) and Debian's Chromium through
// playwright-core; everything started is stopped by the test that started it.
import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, openSync } from "node:fs";
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

export async function startServer(name, ...args) {
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
