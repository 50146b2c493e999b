// sharp doing the same renditions, the way its docs suggest: one input, a clone() per output.
// node engine_sharp.mjs IN OUT ROUNDS  (run with UV_THREADPOOL_SIZE=1 and one CPU)
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(process.env.SHARP_PREFIX + "/");
const sharp = require("sharp");
sharp.concurrency(1);
sharp.cache(false);

const RENDITIONS = [
  { name: "thumb", width: 200, format: "jpeg", quality: 80 },
  { name: "medium", width: 800, format: "webp", quality: 80 },
  { name: "large", width: 1600, format: "jpeg", quality: 85 },
];

async function render(data) {
  const input = sharp(data, { failOn: "truncated" });
  return Promise.all(RENDITIONS.map(async (r) => {
    let p = input.clone().rotate().resize({ width: r.width, withoutEnlargement: true });
    p = r.format === "jpeg"
      ? p.jpeg({ quality: r.quality, progressive: true, optimiseCoding: true })
      : p.webp({ quality: r.quality, effort: 4 });
    return { name: r.name, ext: r.format === "jpeg" ? "jpg" : "webp", data: await p.toBuffer() };
  }));
}

const [corpus, out, rounds] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const files = readdirSync(corpus).filter((f) => f.endsWith(".jpg")).sort();
const inputs = files.map((f) => readFileSync(join(corpus, f)));
await render(inputs[0]);
const started = process.hrtime.bigint();
let results = [];
for (let i = 0; i < rounds; i++) {
  results = [];
  for (const data of inputs) results.push(await render(data));
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
files.forEach((f, i) => {
  for (const r of results[i]) writeFileSync(join(out, `${f.replace(/\.jpg$/, "")}.${r.name}.${r.ext}`), r.data);
});
console.log(JSON.stringify({ images: inputs.length * rounds, seconds,
  // VmHWM: unlike ru_maxrss, it starts afresh at exec (not at the parent's peak)
  max_rss_kb: Number(readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s+(\d+)/)[1]) }));
