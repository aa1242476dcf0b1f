// Browser benchmark (not part of CI): images/s at batch 1 and 32 in headless system Chromium
// (WebGPU on SwiftShader here) for the engine on WebGPU and on the CPU path in wasm (the demo
// page's ?bench mode), single-threaded and with wasm threads, and for onnxruntime-web (WebGPU
// and wasm EPs; the wasm EP with 1 thread and with navigator.hardwareConcurrency threads) on the
// float teacher and its int8 QDQ export. The page is served cross-origin isolated, so both
// runtimes may use threads. Prints a Markdown table.
//
//   bash web/build.sh && node tests/browser/bench.mjs
//   env: EFQ_TEACHER, EFQ_QDQ (default out/quant/w600k_mbf-int8-qdq.onnx), BENCH_SECONDS (3),
//        BENCH_BATCHES (1,32), BENCH_ORT_WEBGPU_BATCHES (as BENCH_BATCHES), BENCH_SKIP=engine|ort,
//        BENCH_ENGINE_BACKENDS (webgpu,cpu), BENCH_ORT_EPS (webgpu,wasm),
//        BENCH_THREADS (1,max: the CPU configurations measured; 1 = single-threaded),
//        BENCH_FLOATDOT=1 (the engine's WebGPU convolutions on the f32 multiply-add path, not dot4)
//   BENCH_PROFILE=1: instead, the time of each of the engine's WebGPU dispatches (minimum of
//        BENCH_PROFILE_RUNS=2 profiles after a warm-up, at each of BENCH_BATCHES), summed per
//        kernel and the slowest layers listed; written to out/web/profile.json.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, CHROMIUM_ARGS } from './e2e.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const seconds = process.env.BENCH_SECONDS || '3';
const batches = process.env.BENCH_BATCHES || '1,32';
const teacher = process.env.EFQ_TEACHER || path.join(process.env.HOME, '.cache/efquantface/models/w600k_mbf.onnx');
const qdq = process.env.EFQ_QDQ || path.join(root, 'out/quant/w600k_mbf-int8-qdq.onnx');
const skip = process.env.BENCH_SKIP || '';
const engineBackends = (process.env.BENCH_ENGINE_BACKENDS || 'webgpu,cpu').split(',');
const ortEps = (process.env.BENCH_ORT_EPS || 'webgpu,wasm').split(',');
const threadCounts = (process.env.BENCH_THREADS || '1,max').split(',');

const server = await serve(path.join(root, 'web/dist'), {
  '/ort/': path.join(root, 'node_modules/onnxruntime-web/dist/'),
  '/ext/teacher.onnx': teacher,
  '/ext/qdq.onnx': qdq,
}, { isolate: true });
const base = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
const rows = [];
const wait = { timeout: 0 };
async function open(url, selector, result) {
  const page = await browser.newPage();
  page.on('console', (m) => m.type() === 'error' && console.error(`[page] ${m.text()}`));
  await page.goto(url);
  await page.waitForSelector(selector, wait);
  rows.push(...await page.evaluate(result));
  await page.close();
}
if (process.env.BENCH_PROFILE) {
  const floatdot = process.env.BENCH_FLOATDOT ? `&floatdot=${process.env.BENCH_FLOATDOT}` : '';
  const runs = process.env.BENCH_PROFILE_RUNS || '2';
  try {
    await open(`${base}?bench=1&profile=1&threads=0&batches=${batches}&runs=${runs}${floatdot}`,
      '#bench-out[data-done]', () => window.benchResult || [{ error: document.querySelector('#bench-out').textContent }]);
  } finally {
    await browser.close();
    server.close();
  }
  for (const r of rows) {
    if (r.error) { console.log(r.error); process.exitCode = 1; continue; }
    const total = r.steps.reduce((a, s) => a + s.ms, 0);
    console.log(`\n${r.adapter.name || `${r.adapter.backend} (${r.adapter.device_type}${r.adapter.software ? ", software" : ""})`}, ${r.arithmetic}, batch ${r.batch}: ${r.steps.length} dispatches, ${total.toFixed(0)} ms summed\n`);
    const byKernel = new Map();
    for (const s of r.steps) {
      const k = byKernel.get(s.kernel) || { n: 0, ms: 0 };
      k.n += 1; k.ms += s.ms; byKernel.set(s.kernel, k);
    }
    console.log('| kernel | dispatches | ms | share |\n|---|---:|---:|---:|');
    for (const [k, v] of [...byKernel].sort((a, b) => b[1].ms - a[1].ms)) {
      console.log(`| ${k} | ${v.n} | ${v.ms.toFixed(1)} | ${(100 * v.ms / total).toFixed(1)} % |`);
    }
    console.log('\n| slowest dispatches | kernel | ms |\n|---|---|---:|');
    for (const s of [...r.steps].sort((a, b) => b.ms - a.ms).slice(0, 12)) {
      console.log(`| ${s.node} | ${s.kernel} | ${s.ms.toFixed(1)} |`);
    }
  }
  fs.mkdirSync(path.join(root, 'out/web'), { recursive: true });
  fs.writeFileSync(path.join(root, 'out/web/profile.json'), JSON.stringify(rows, null, 2));
  process.exit();
}
let cores = os.cpus().length;
{
  const page = await browser.newPage();
  cores = await page.evaluate(() => navigator.hardwareConcurrency);
  await page.close();
}
try {
  for (const t of threadCounts) {
    const single = t === '1';
    if (skip !== 'engine') {
      // The GPU path does not depend on the CPU threads: measured with the single-threaded run.
      const backends = engineBackends.filter((b) => single || b === 'cpu');
      if (backends.length) {
        const floatdot = process.env.BENCH_FLOATDOT ? `&floatdot=${process.env.BENCH_FLOATDOT}` : '';
        await open(`${base}?bench=1&threads=${single ? 0 : 1}&backends=${backends}&batches=${batches}&seconds=${seconds}${floatdot}`,
          '#bench-out[data-done]', () => window.benchResult || document.querySelector('#bench-out').textContent);
      }
    }
    if (skip !== 'ort') {
      const eps = ortEps.filter((e) => single || e === 'wasm');
      if (eps.length) {
        await open(`${base}bench-ort.html?batches=${batches}&webgpu_batches=${process.env.BENCH_ORT_WEBGPU_BATCHES || batches}&seconds=${seconds}&eps=${eps}&threads=${single ? 1 : cores}`,
          '#out[data-done]', () => window.ortResult);
      }
    }
  }
} finally {
  await browser.close();
  server.close();
}
const ver = JSON.parse(fs.readFileSync(path.join(root, 'node_modules/onnxruntime-web/package.json'))).version;
console.log(`\nheadless Chromium (${CHROMIUM_ARGS.join(' ')}), cross-origin isolated, ${cores} hardware threads\n`);
console.log('| runtime | model | path | threads | batch | images/s | median ms / batch | runs |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const runtime = r.runtime === 'onnxruntime-web' ? `onnxruntime-web ${ver}` : 'efq-engine';
  const model = r.model === 'ext/teacher.onnx' ? 'w600k_mbf fp32' : r.model === 'ext/qdq.onnx' ? 'w600k_mbf int8 QDQ' : r.model;
  const p = r.ep ? `${r.ep} EP` : r.backend === 'webgpu' ? `WebGPU (${r.arithmetic}, dot4 ${r.dot4})` : r.backend === 'cpu' ? 'CPU wasm (integer reference)' : r.backend;
  const threads = r.ep ? (r.threads ?? '') : r.backend === 'cpu' ? r.cpu_threads : '';
  if (r.error) { console.log(`| ${runtime} | ${model} | ${p} | ${threads} | ${r.batch ?? ''} | error: ${r.error.replace(/\|/g, '/').slice(0, 120)} | | |`); continue; }
  console.log(`| ${runtime} | ${model} | ${p} | ${threads} | ${r.batch} | ${r.images_per_s.toFixed(2)} | ${r.median_ms.toFixed(0)} | ${r.runs} |`);
}
fs.mkdirSync(path.join(root, 'out/web'), { recursive: true });
fs.writeFileSync(path.join(root, 'out/web/bench.json'), JSON.stringify(rows, null, 2));
