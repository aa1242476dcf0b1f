// Where the page's CPU path spends its time in wasm, with the page's single-threaded build in
// node's V8 (the engine Chromium runs the page's worker with): the browser fixture's photo (a
// raw LFW photo, written by `web-tool fixture --detector`, which web/test.sh runs) through
// letterbox, normalisation, SCRFD's layers by kind, decoding and NMS; then the fixture's first
// crop through the page's default model (web/dist/models/default.efq) by kind of layer (the
// page embeds each crop and its mirror image: a pair of photos costs four). pkg-relaxed/ where
// V8 validates relaxed SIMD (node 20: --experimental-wasm-relaxed-simd), else pkg/; EFQ_PKG
// names another. Medians of RUNS.
//
//   bash web/build.sh && node --experimental-wasm-relaxed-simd bench/profile_wasm.mjs [RUNS]   (10)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const runs = Number(process.argv[2] || 10);
const fixture = path.join(root, 'out/web/fixture');
const relaxed = WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0,
  1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11]));
const pkg = path.resolve(process.env.EFQ_PKG || path.join(root, 'web/dist', relaxed ? 'pkg-relaxed' : 'pkg'));
const m = await import(path.join(pkg, 'efq_web.js'));
await m.default({ module_or_path: fs.readFileSync(path.join(pkg, 'efq_web_bg.wasm')) });
const meta = JSON.parse(fs.readFileSync(path.join(fixture, 'faces.json'), 'utf8'));
const photo = new Uint8Array(fs.readFileSync(path.join(fixture, 'photo.rgb')));
const detector = new Uint8Array(fs.readFileSync(path.join(root, 'web/dist/models/detector.onnx')));
m.profileDetector(detector, photo, meta.width, meta.height, 3, 2); // warm-up
const r = JSON.parse(m.profileDetector(detector, photo, meta.width, meta.height, 3, runs));
console.log(`${meta.photo} (${meta.width}×${meta.height}), SCRFD at 640, median of ${r.runs} runs, one thread, ${path.relative(root, pkg)}`);
const rows = [...Object.entries(r.stages), ['', null], ...Object.entries(r.layers).sort((a, b) => b[1] - a[1])];
for (const [k, v] of rows) console.log(v === null ? '  network by kind of layer:' : `  ${k.padEnd(32)} ${v.toFixed(1).padStart(7)} ms`);

const model = new Uint8Array(fs.readFileSync(path.join(root, 'web/dist/models/default.efq')));
const crop = new Uint8Array(fs.readFileSync(path.join(fixture, 'images.rgb'))).subarray(0, 112 * 112 * 3);
m.profileRecognizer(model, crop, 2); // warm-up
const e = JSON.parse(m.profileRecognizer(model, crop, runs));
console.log(`\none 112×112 crop through models/default.efq, median of ${e.runs} runs, one thread`);
console.log(`  network${' '.repeat(25)} ${e.network.toFixed(1).padStart(7)} ms`);
console.log('  network by kind of layer:');
for (const [k, v] of Object.entries(e.layers).sort((a, b) => b[1] - a[1])) console.log(`  ${k.padEnd(32)} ${v.toFixed(1).padStart(7)} ms`);
