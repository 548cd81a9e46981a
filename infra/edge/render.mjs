// Renders the CloudFront Function's code with the crawler list of crawlers.json inlined
// (CloudFront Functions cannot read files), and keeps infra/template.yaml's copy of it current.
// Usage: node infra/edge/render.mjs            print the code
//        node infra/edge/render.mjs --template write it into infra/template.yaml
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = (name) => fileURLToPath(new URL(name, import.meta.url));
export const TEMPLATE = here("../template.yaml");
const BEGIN = "      # BEGIN crawler-route.js (rendered by infra/edge/render.mjs --template)";
const END = "      # END crawler-route.js";
const INDENT = "        ";

export function render() {
  const crawlers = JSON.parse(readFileSync(here("crawlers.json"), "utf8"));
  const source = readFileSync(here("crawler-route.js"), "utf8");
  const marker = "var CRAWLERS = []; // filled in from crawlers.json";
  if (!source.includes(marker)) throw new Error("crawler-route.js lost its CRAWLERS marker");
  return source.replace(marker, `var CRAWLERS = ${JSON.stringify(crawlers)};`);
}

/** The FunctionCode block of the template as it should read. */
export function templateBlock() {
  const body = render()
    .split("\n")
    .map((line) => (line ? INDENT + line : ""))
    .join("\n")
    .replace(/\n+$/, "");
  return `${BEGIN}\n      FunctionCode: |\n${body}\n${END}`;
}

/** The block as the template has it now. */
export function templateBlockNow(text = readFileSync(TEMPLATE, "utf8")) {
  const start = text.indexOf(BEGIN);
  const end = text.indexOf(END);
  if (start < 0 || end < start) throw new Error("infra/template.yaml lost its crawler-route.js markers");
  return text.slice(start, end + END.length);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv[2] === "--template") {
    const text = readFileSync(TEMPLATE, "utf8");
    writeFileSync(TEMPLATE, text.replace(templateBlockNow(text), templateBlock()));
  } else {
    process.stdout.write(render());
  }
}
