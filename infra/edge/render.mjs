// Renders the CloudFront Function's code with the crawler list of crawlers.json inlined
// (CloudFront Functions cannot read files). Usage: node infra/edge/render.mjs > crawler-route.out.js
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = (name) => fileURLToPath(new URL(name, import.meta.url));

export function render() {
  const crawlers = JSON.parse(readFileSync(here("crawlers.json"), "utf8"));
  const source = readFileSync(here("crawler-route.js"), "utf8");
  const marker = "var CRAWLERS = []; // filled in from crawlers.json";
  if (!source.includes(marker)) throw new Error("crawler-route.js lost its CRAWLERS marker");
  return source.replace(marker, `var CRAWLERS = ${JSON.stringify(crawlers)};`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(render());
