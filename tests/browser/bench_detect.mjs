// Browser detection benchmark (not part of CI): one raw photo through the page's detector (its
// worker, CPU path in wasm: letterbox 640×640, SCRFD, decode, NMS) against onnxruntime-web's
// wasm EP on the same detector file and letterboxed pixels (network only), in the same page,
// with 1 thread and with navigator.hardwareConcurrency threads; then what a user waits for with
// two raw photos (both detected, the crops verified by the page's default model). Prints a
// Markdown table.
//
//   bash web/build.sh && node tests/browser/bench_detect.mjs [PHOTO [PHOTO2]]
//   env: BENCH_SECONDS (5), BENCH_RELAXED=0 (the SIMD128 builds), BENCH_DIST (a built web/dist
//   to serve instead, e.g. another commit's, for an A/B in the same run); PHOTO defaults to the
//   first raw250-sample photo.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, CHROMIUM_ARGS } from './e2e.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const lfw = process.env.EFQ_LFW || path.join(root, '../shared/data/lfw');
const sample = path.join(lfw, 'raw250-sample');
// The first photo of the first two people of raw250-sample unless given.
const first = (k) => {
  const person = fs.readdirSync(sample).sort()[k];
  return path.join(sample, person, fs.readdirSync(path.join(sample, person)).sort()[0]);
};
const photo = process.argv[2] || first(0);
const photo2 = process.argv[3] || first(1);
const seconds = process.env.BENCH_SECONDS || '5';
// BENCH_RELAXED=0: the page's SIMD128 builds instead of the relaxed-SIMD ones.
const relaxed = process.env.BENCH_RELAXED === '0' ? '&relaxed=0' : '';
const server = await serve(path.resolve(process.env.BENCH_DIST || path.join(root, 'web/dist')), {
  '/ort/': path.join(root, 'node_modules/onnxruntime-web/dist/'),
  '/ext/photo.jpg': photo,
  '/ext/photo2.jpg': photo2,
}, { isolate: true });
const base = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
const rows = [];
try {
  const page = await browser.newPage();
  const cores = await page.evaluate(() => navigator.hardwareConcurrency);
  page.on('console', (m) => m.type() === 'error' && console.error(`[page] ${m.text()}`));
  for (const threads of [1, cores]) {
    await page.goto(`${base}bench-detect.html?threads=${threads}&seconds=${seconds}${relaxed}`);
    await page.waitForSelector('#out[data-done]', { timeout: 0 });
    rows.push(...await page.evaluate(() => window.detectResult));
  }
} finally {
  await browser.close();
  server.close();
}
const ver = JSON.parse(fs.readFileSync(path.join(root, 'node_modules/onnxruntime-web/package.json'))).version;
console.log(`\n${path.basename(photo)} and ${path.basename(photo2)}, headless Chromium, cross-origin isolated\n`);
console.log('| runtime | path | what is timed | faces / verdict | median ms | runs |');
console.log('|---|---|---|---:|---:|---:|');
for (const r of rows) {
  const runtime = r.runtime === 'onnxruntime-web' ? `onnxruntime-web ${ver}` : r.runtime;
  if (r.error) { console.log(`| ${runtime} | | error: ${r.error.replace(/\|/g, '/').slice(0, 160)} | | | |`); process.exitCode = 1; continue; }
  console.log(`| ${runtime} | ${r.path} | ${r.what} | ${r.faces ?? ''} | ${r.median_ms.toFixed(1)} | ${r.runs} |`);
}
