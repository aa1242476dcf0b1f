// End-to-end test of the demo page in headless system Chromium (playwright-core, no browser
// download): serves web/dist (build it with web/build.sh), loads the default model, compares two
// LFW photos of one person and two of different people (the first positive and the first
// negative pair of pairs.txt) and checks the verdicts, on the CPU path and on WebGPU
// (SwiftShader here). Also checks the on-page messages for an undecodable image and a bad model
// file. Screenshots go to out/web/verify-*.png.
//
//   node tests/browser/e2e.mjs            (EFQ_LFW, CHROMIUM=/usr/bin/chromium)
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dist = path.join(root, 'web/dist');
const outDir = path.join(root, 'out/web');
const lfw = process.env.EFQ_LFW || path.join(root, '../shared/data/lfw');
const backends = (process.env.EFQ_E2E_BACKENDS || 'auto,webgpu').split(',');

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader',
  '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json' };

/** A static file server for `dir` on a free port, plus `extra` routes (path → file or folder). */
export function serve(dir, extra = {}) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const pathname = decodeURIComponent(url.pathname);
    let p = path.normalize(path.join(dir, pathname));
    // Extra routes: an exact file, or a folder prefix ending in '/'.
    for (const [route, target] of Object.entries(extra)) {
      if (pathname === route) p = target;
      else if (route.endsWith('/') && pathname.startsWith(route)) {
        p = path.normalize(path.join(target, pathname.slice(route.length)));
        if (!p.startsWith(target)) { res.writeHead(403).end(); return; }
      }
    }
    if (p === path.normalize(path.join(dir, pathname)) && !p.startsWith(dir)) { res.writeHead(403).end(); return; }
    if (p.endsWith(path.sep)) p = path.join(p, 'index.html');
    fs.stat(p, (err, st) => {
      if (err || !st.isFile()) { res.writeHead(404).end('not found'); return; }
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(p)] || 'application/octet-stream',
        'Content-Length': st.size });
      fs.createReadStream(p).pipe(res);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function raw(name, n) {
  return path.join(lfw, 'raw250-sample', name, `${name}_${String(n).padStart(4, '0')}.jpg`);
}

function crop(name, n) {
  return path.join(lfw, 'insightface112', name, `${name}_${String(n).padStart(4, '0')}.jpg`);
}

/** The first positive and the first negative pair of pairs.txt. */
function pairs() {
  const lines = fs.readFileSync(path.join(lfw, 'pairs.txt'), 'utf8').trim().split('\n').slice(1);
  const rows = lines.map((l) => l.trim().split(/\s+/));
  const pos = rows.find((r) => r.length === 3);
  const neg = rows.find((r) => r.length === 4);
  return [
    ['same', [crop(pos[0], pos[1]), crop(pos[0], pos[2])]],
    ['different', [crop(neg[0], neg[1]), crop(neg[2], neg[3])]],
    // Whole 250×250 photos: detection and alignment in the page.
    ['same', [raw('Silvio_Berlusconi', 1), raw('Silvio_Berlusconi', 2)]],
    ['different', [raw('Silvio_Berlusconi', 1), raw('Monica_Bellucci', 1)]],
  ];
}

async function main() {
  if (!fs.existsSync(path.join(dist, 'models/default.efq'))) {
    throw new Error(`${dist} is not built: run web/build.sh first`);
  }
  fs.mkdirSync(outDir, { recursive: true });
  const server = await serve(dist);
  const base = `http://127.0.0.1:${server.address().port}/`;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS,
  });
  const failures = [];
  const check = (ok, what) => { console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`); if (!ok) failures.push(what); };
  const p = pairs();
  try {
    for (const backend of backends) {
      const page = await browser.newPage({ viewport: { width: 900, height: 1000 } });
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${base}?backend=${backend}`);
      await page.waitForSelector('#load-status[data-state="ready"], #load-status[data-state="error"]', { timeout: 120_000 });
      const status = await page.textContent('#load-status');
      check(await page.getAttribute('#load-status', 'data-state') === 'ready', `${backend}: model loaded (${status})`);
      const used = await page.getAttribute('#backend', 'data-backend');
      // Auto picks the CPU on a software adapter such as SwiftShader; webgpu/cpu are obeyed.
      if (backend !== 'auto') check(used === backend, `${backend}: path in use is ${used}`);
      const info = await page.$$eval('#engine-info dt', (dts) => dts.map((dt) => `${dt.textContent}: ${dt.nextElementSibling.textContent}`));
      console.log(info.map((l) => `       ${l}`).join('\n'));
      for (const [want, [a, b]] of p) {
        const isRaw = a.includes('raw250-sample');
        await page.setInputFiles('#face-a input', a);
        await page.setInputFiles('#face-b input', b);
        // Wait for the result of exactly this pair (an earlier one may still be on screen).
        const pair = `${path.basename(a)}|${path.basename(b)}`;
        await page.waitForFunction((want) => {
          const r = document.querySelector('#result');
          return r.dataset.state === 'error' || (r.dataset.state === 'done' && r.dataset.pair === want);
        }, pair, { timeout: 120_000 });
        if (await page.getAttribute('#result', 'data-state') === 'error') {
          check(false, `${backend}: ${pair}: ${await page.textContent('#result')}`);
          continue;
        }
        const verdict = await page.getAttribute('#verdict', 'data-verdict');
        const sim = await page.getAttribute('#result', 'data-similarity');
        const ms = await page.getAttribute('#latency', 'data-ms');
        check(verdict === want, `${backend} (${used}): ${path.basename(a)} vs ${path.basename(b)}: ${verdict}, similarity ${Number(sim).toFixed(4)}, ${Number(ms).toFixed(0)} ms (want ${want})`);
        if (isRaw) {
          const found = await page.$$eval('.face canvas.photo', (cs) => cs.map((c) => Number(c.dataset.faces || 0)));
          const detMs = await page.$$eval('.face .face-msg', (ms) => ms.map((m) => Number(m.dataset.detectMs || 0).toFixed(0)));
          const det = await page.getAttribute('#detector-info', 'data-backend');
          check(found.every((n) => n >= 1), `${backend}: faces found in both raw photos: ${found.join(', ')} (detector on ${det}, ${detMs.join(' / ')} ms)`);
        }
        await page.screenshot({ path: path.join(outDir, `verify-${used}-${isRaw ? 'raw-' : ''}${want}.png`), fullPage: true });
      }
      check(errors.length === 0, `${backend}: no page errors ${errors.join('; ')}`);
      await page.close();
    }
    // Bad inputs: an undecodable photo and a file that is not a model.
    const page = await browser.newPage();
    await page.goto(`${base}?backend=cpu`);
    await page.waitForSelector('#load-status[data-state="ready"]', { timeout: 120_000 });
    await page.setInputFiles('#face-a input', { name: 'notes.jpg', mimeType: 'image/jpeg', buffer: Buffer.from('not an image') });
    await page.waitForFunction(() => document.querySelector('#face-a .face-msg').textContent !== '');
    const imgMsg = await page.textContent('#face-a .face-msg');
    check(imgMsg.includes('cannot decode notes.jpg'), `undecodable image: "${imgMsg}"`);
    // A photo without a face: a flat grey 250×250 PNG, made with a canvas in the page.
    const grey = await page.evaluate(async () => {
      const c = new OffscreenCanvas(250, 250);
      const ctx = c.getContext('2d');
      ctx.fillStyle = '#808080';
      ctx.fillRect(0, 0, 250, 250);
      const blob = await c.convertToBlob({ type: 'image/png' });
      return Array.from(new Uint8Array(await blob.arrayBuffer()));
    });
    await page.setInputFiles('#face-b input', { name: 'wall.png', mimeType: 'image/png', buffer: Buffer.from(grey) });
    await page.waitForFunction(() => /no face|failed/.test(document.querySelector('#face-b .face-msg').textContent), null, { timeout: 120_000 });
    const noFace = await page.textContent('#face-b .face-msg');
    check(noFace.includes('no face found in wall.png'), `photo without a face: "${noFace}"`);
    await page.setInputFiles('#model-file', { name: 'bad.efq', mimeType: 'application/octet-stream', buffer: Buffer.from('definitely not safetensors') });
    await page.waitForSelector('#load-status[data-state="error"]', { timeout: 60_000 });
    const modelMsg = await page.textContent('#load-status');
    check(modelMsg.includes('not a usable EfQuantFace model'), `bad model file: "${modelMsg}"`);
    await page.close();
  } finally {
    await browser.close();
    server.close();
  }
  if (failures.length) {
    console.error(`${failures.length} check(s) failed`);
    process.exit(1);
  }
  console.log(`all browser checks passed; screenshots in ${path.relative(root, outDir)}/verify-*.png`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => { console.error(e); process.exit(1); });
}
