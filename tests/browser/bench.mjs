// Browser benchmark (not part of CI): images/s at batch 1 and 32 in headless system Chromium
// (WebGPU on SwiftShader here) for the engine on WebGPU and on the CPU path in wasm (the demo
// page's ?bench mode), and for onnxruntime-web (WebGPU and wasm EPs) on the float teacher and
// its int8 QDQ export. Prints a Markdown table.
//
//   bash web/build.sh && node tests/browser/bench.mjs
//   env: EFQ_TEACHER, EFQ_QDQ (default out/quant/w600k_mbf-int8-qdq.onnx), BENCH_SECONDS (3),
//        BENCH_BATCHES (1,32), BENCH_ORT_WEBGPU_BATCHES (as BENCH_BATCHES), BENCH_SKIP=engine|ort,
//        BENCH_ENGINE_BACKENDS (webgpu,cpu), BENCH_ORT_EPS (webgpu,wasm)
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, CHROMIUM_ARGS } from './e2e.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const seconds = process.env.BENCH_SECONDS || '3';
const batches = process.env.BENCH_BATCHES || '1,32';
const teacher = process.env.EFQ_TEACHER || path.join(process.env.HOME, '.cache/efquantface/models/w600k_mbf.onnx');
const qdq = process.env.EFQ_QDQ || path.join(root, 'out/quant/w600k_mbf-int8-qdq.onnx');
const skip = process.env.BENCH_SKIP || '';

const server = await serve(path.join(root, 'web/dist'), {
  '/ort/': path.join(root, 'node_modules/onnxruntime-web/dist/'),
  '/ext/teacher.onnx': teacher,
  '/ext/qdq.onnx': qdq,
});
const base = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
const rows = [];
const wait = { timeout: 0 };
try {
  if (skip !== 'engine') {
    const page = await browser.newPage();
    await page.goto(`${base}?bench=1&backends=${process.env.BENCH_ENGINE_BACKENDS || 'webgpu,cpu'}&batches=${batches}&seconds=${seconds}`);
    await page.waitForSelector('#bench-out[data-done]', wait);
    rows.push(...await page.evaluate(() => window.benchResult || document.querySelector('#bench-out').textContent));
    await page.close();
  }
  if (skip !== 'ort') {
    const page = await browser.newPage();
    page.on('console', (m) => m.type() === 'error' && console.error(`[ort page] ${m.text()}`));
    await page.goto(`${base}bench-ort.html?batches=${batches}&webgpu_batches=${process.env.BENCH_ORT_WEBGPU_BATCHES || batches}&seconds=${seconds}&eps=${process.env.BENCH_ORT_EPS || 'webgpu,wasm'}`);
    await page.waitForSelector('#out[data-done]', wait);
    rows.push(...await page.evaluate(() => window.ortResult));
    await page.close();
  }
} finally {
  await browser.close();
  server.close();
}
const ver = JSON.parse(fs.readFileSync(path.join(root, 'node_modules/onnxruntime-web/package.json'))).version;
console.log(`\nheadless Chromium (${CHROMIUM_ARGS.join(' ')}), single-threaded wasm\n`);
console.log('| runtime | model | path | batch | images/s | median ms / batch | runs |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  const runtime = r.runtime === 'onnxruntime-web' ? `onnxruntime-web ${ver}` : 'efq-engine';
  const model = r.model === 'ext/teacher.onnx' ? 'w600k_mbf fp32' : r.model === 'ext/qdq.onnx' ? 'w600k_mbf int8 QDQ' : r.model;
  const p = r.ep ? `${r.ep} EP` : r.backend === 'webgpu' ? `WebGPU (${r.arithmetic}, dot4 ${r.dot4})` : r.backend === 'cpu' ? 'CPU wasm (integer reference)' : r.backend;
  if (r.error) { console.log(`| ${runtime} | ${model} | ${p} | ${r.batch ?? ''} | error: ${r.error.replace(/\|/g, '/').slice(0, 120)} | | |`); continue; }
  console.log(`| ${runtime} | ${model} | ${p} | ${r.batch} | ${r.images_per_s.toFixed(2)} | ${r.median_ms.toFixed(0)} | ${r.runs} |`);
}
fs.mkdirSync(path.join(root, 'out/web'), { recursive: true });
fs.writeFileSync(path.join(root, 'out/web/bench.json'), JSON.stringify(rows, null, 2));
