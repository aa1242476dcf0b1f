// End-to-end test of the demo page in headless system Chromium (playwright-core, no browser
// download): serves web/dist (build it with web/build.sh), loads the default model, compares two
// LFW photos of one person and two of different people (the first positive and the first
// negative pair of pairs.txt) and checks the verdicts, on the CPU path and on WebGPU
// (SwiftShader here), and on the CPU path of the threaded build (page served cross-origin
// isolated), whose similarities must equal the single-threaded ones exactly. Also checks the on-page messages for an undecodable image, a photo without
// a face, a missing camera and a bad model file, and takes one photo with the camera: Chromium's
// fake capture device plays a raw LFW photo (written as a Y4M video), and the frame must verify as
// the same person as another photo of him. The raw photos go to the page as PNGs of the
// pixels the native decoder reads (`web-tool decode`: JPEG decoders differ by a grey level here
// and there, enough to add or drop a borderline background face), and the page's result is
// checked against `trainer verify` (the engine's face pipeline natively, CPU backend) on the
// same files, model and detector: as many faces in each photo, the same similarity within 5e-3.
// Not bit for bit: the float detector rounds differently in wasm than natively (keypoints
// 2e-5 px apart), which moved one grey level of one crop pixel, and that moved the w8a8
// similarity of Silvio_Berlusconi 1 vs 2 by 9e-4 (0.61522 vs 0.61432; the page's code fed the
// native keypoints gives the native similarity exactly, checked 2026-12-06). Screenshots go to
// out/web/verify-*.png.
//
//   node tests/browser/e2e.mjs            (EFQ_LFW, CHROMIUM=/usr/bin/chromium,
//                                           target/release/{trainer,web-tool})
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dist = path.join(root, 'web/dist');
const outDir = path.join(root, 'out/web');
const lfw = process.env.EFQ_LFW || path.join(root, '../shared/data/lfw');
const backends = (process.env.EFQ_E2E_BACKENDS || 'auto,webgpu,cpu-threads').split(',');
const bin = path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), 'release');
const trainer = process.env.EFQ_TRAINER || path.join(bin, 'trainer');

/** `trainer verify --json` on two photos with the page's own model and detector files. */
function nativeVerify(a, b) {
  const out = execFileSync(trainer, ['verify', a, b, '--backend', 'cpu', '--json',
    '--model', path.join(dist, 'models/default.efq'),
    '--detector', path.join(dist, 'models/detector.onnx')]);
  return JSON.parse(out);
}

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader',
  '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json' };

/** A static file server for `dir` on a free port, plus `extra` routes (path → file or folder);
 * `isolate`: send the COOP/COEP headers of a cross-origin-isolated page (wasm threads). */
export function serve(dir, extra = {}, { isolate = false } = {}) {
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
      const headers = { 'Content-Type': TYPES[path.extname(p)] || 'application/octet-stream',
        'Content-Length': st.size };
      if (isolate) {
        headers['Cross-Origin-Opener-Policy'] = 'same-origin';
        headers['Cross-Origin-Embedder-Policy'] = 'require-corp';
      }
      res.writeHead(200, headers);
      fs.createReadStream(p).pipe(res);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function raw(name, n) {
  return path.join(lfw, 'raw250-sample', name, `${name}_${String(n).padStart(4, '0')}.jpg`);
}

/** A raw photo as a PNG of the pixels the native decoder reads (out/web/raw-png/). */
function rawPng(name, n) {
  const jpg = raw(name, n);
  const png = path.join(outDir, 'raw-png', path.basename(jpg).replace(/\.jpg$/, '.png'));
  fs.mkdirSync(path.dirname(png), { recursive: true });
  execFileSync(path.join(bin, 'web-tool'), ['decode', '--photo', jpg, '--out', png]);
  return png;
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
    ['same', [rawPng('Silvio_Berlusconi', 1), rawPng('Silvio_Berlusconi', 2)]],
    ['different', [rawPng('Silvio_Berlusconi', 1), rawPng('Monica_Bellucci', 1)]],
  ];
}

/** RGBA pixels as a one-frame Y4M video (I420, BT.601 limited range): what Chromium's fake
 *  capture device plays with --use-file-for-fake-video-capture. */
function y4m(w, h, rgba) {
  const cw = Math.ceil(w / 2);
  const ch = Math.ceil(h / 2);
  const y = Buffer.alloc(w * h);
  const u = Buffer.alloc(cw * ch);
  const v = Buffer.alloc(cw * ch);
  const px = (i, j) => { const o = 4 * (Math.min(j, h - 1) * w + Math.min(i, w - 1)); return [rgba[o], rgba[o + 1], rgba[o + 2]]; };
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      const [r, g, b] = px(i, j);
      y[j * w + i] = Math.round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255);
    }
  }
  for (let j = 0; j < ch; j++) {
    for (let i = 0; i < cw; i++) {
      let [r, g, b] = [0, 0, 0];
      for (const [di, dj] of [[0, 0], [1, 0], [0, 1], [1, 1]]) {
        const p = px(2 * i + di, 2 * j + dj);
        r += p[0] / 4; g += p[1] / 4; b += p[2] / 4;
      }
      u[j * cw + i] = Math.round(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255);
      v[j * cw + i] = Math.round(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255);
    }
  }
  const header = Buffer.from(`YUV4MPEG2 W${w} H${h} F30:1 Ip A1:1 C420jpeg\n`);
  return Buffer.concat([header, Buffer.from('FRAME\n'), y, u, v]);
}

let cameraVideo = '';

async function main() {
  if (!fs.existsSync(path.join(dist, 'models/default.efq'))) {
    throw new Error(`${dist} is not built: run web/build.sh first`);
  }
  fs.mkdirSync(outDir, { recursive: true });
  const server = await serve(dist);
  const base = `http://127.0.0.1:${server.address().port}/`;
  // The same page served cross-origin isolated: the worker loads the threaded build.
  const isolated = await serve(dist, {}, { isolate: true });
  const isolatedBase = `http://127.0.0.1:${isolated.address().port}/`;
  const similarities = {};
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS,
  });
  const failures = [];
  const check = (ok, what) => { console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`); if (!ok) failures.push(what); };
  const p = pairs();
  try {
    for (const run of backends) {
      // cpu-threads: the CPU path of the threaded build; its embeddings must equal the
      // single-threaded ones bit for bit (integer sums, element-wise float work split by rows).
      const threaded = run === 'cpu-threads';
      const backend = threaded ? 'cpu' : run;
      const page = await browser.newPage({ viewport: { width: 900, height: 1000 } });
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${threaded ? isolatedBase : base}?backend=${backend}`);
      await page.waitForSelector('#load-status[data-state="ready"], #load-status[data-state="error"]', { timeout: 120_000 });
      const status = await page.textContent('#load-status');
      check(await page.getAttribute('#load-status', 'data-state') === 'ready', `${backend}: model loaded (${status})`);
      const used = await page.getAttribute('#backend', 'data-backend');
      // Auto picks the CPU on a software adapter such as SwiftShader; webgpu/cpu are obeyed.
      if (backend !== 'auto') check(used === backend, `${backend}: path in use is ${used}`);
      const info = await page.$$eval('#engine-info dt', (dts) => dts.map((dt) => `${dt.textContent}: ${dt.nextElementSibling.textContent}`));
      console.log(info.map((l) => `       ${l}`).join('\n'));
      const threading = await page.textContent('#threading');
      check(threaded === threading.startsWith('wasm threads'), `${run}: ${threading}`);
      for (const [want, [a, b]] of p) {
        const isRaw = a.includes('raw-png');
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
        check(verdict === want, `${run} (${used}): ${path.basename(a)} vs ${path.basename(b)}: ${verdict}, similarity ${Number(sim).toFixed(4)}, ${Number(ms).toFixed(0)} ms (want ${want})`);
        if (used === 'cpu') {
          const key = `${pair}|${isRaw}`;
          if (key in similarities) {
            check(similarities[key] === sim, `${run}: ${pair} similarity ${sim} equals the other CPU run's ${similarities[key]} exactly`);
          } else similarities[key] = sim;
        }
        if (isRaw) {
          const found = await page.$$eval('.face canvas.photo', (cs) => cs.map((c) => Number(c.dataset.faces || 0)));
          const detMs = await page.$$eval('.face .face-msg', (ms) => ms.map((m) => Number(m.dataset.detectMs || 0).toFixed(0)));
          const det = await page.getAttribute('#detector-info', 'data-backend');
          // What a user waits for a raw pair: both photos' detection (each as it is
          // chosen) and the verification of the two crops.
          const total = detMs.reduce((s, m) => s + Number(m), 0) + Number(ms);
          check(found.every((n) => n >= 1), `${backend}: faces found in both raw photos: ${found.join(', ')} (detector on ${det}, ${detMs.join(' / ')} ms; raw pair ${total.toFixed(0)} ms with the verification)`);
          const native = nativeVerify(a, b);
          const delta = Math.abs(Number(sim) - native.similarity);
          check(found[0] === native.a_face.faces && found[1] === native.b_face.faces && delta <= 5e-3,
            `${run}: ${pair} as trainer verify has it natively: faces ${found.join(', ')} vs ${native.a_face.faces}, ${native.b_face.faces}; similarity ${Number(sim).toFixed(5)} vs ${native.similarity.toFixed(5)} (|Δ| ${delta.toExponential(2)})`);
        }
        await page.screenshot({ path: path.join(outDir, `verify-${threaded ? 'cpu-threads' : used}-${isRaw ? 'raw-' : ''}${want}.png`), fullPage: true });
        if (isRaw) {
          // Both photos picked at once (one file input, two files): detected in one call,
          // they must give the same faces and the very same similarity.
          await page.evaluate(() => { document.querySelector('#result').dataset.pair = ''; });
          await page.setInputFiles('#face-a input', [a, b]);
          await page.waitForFunction((want) => {
            const r = document.querySelector('#result');
            return r.dataset.state === 'error' || (r.dataset.state === 'done' && r.dataset.pair === want);
          }, pair, { timeout: 120_000 });
          const together = await page.getAttribute('#result', 'data-similarity');
          const found = await page.$$eval('.face canvas.photo', (cs) => cs.map((c) => Number(c.dataset.faces || 0)));
          check(together === sim && found.every((n) => n >= 1),
            `${run}: ${pair} picked together (detected in one batch): similarity ${together} equals one at a time's ${sim}; faces ${found.join(', ')}`);
        }
      }
      check(errors.length === 0, `${run}: no page errors ${errors.join('; ')}`);
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
    // The same photo picked together with a raw photo of a face: the face is used in the other
    // slot, and the error still names the photo without one.
    const rawPhoto = p.map(([, [a]]) => a).find((a) => a.includes('raw-png'));
    await page.setInputFiles('#face-a input', [
      { name: 'wall.png', mimeType: 'image/png', buffer: Buffer.from(grey) },
      { name: path.basename(rawPhoto), mimeType: 'image/png', buffer: fs.readFileSync(rawPhoto) }]);
    await page.waitForFunction(() => /no face|failed/.test(document.querySelector('#face-a .face-msg').textContent)
      && /face \(|faces,|failed/.test(document.querySelector('#face-b .face-msg').textContent), null, { timeout: 120_000 });
    const [msgA, msgB, banner, loadedB] = await page.evaluate(() => [
      document.querySelector('#face-a .face-msg').textContent, document.querySelector('#face-b .face-msg').textContent,
      document.querySelector('#error').textContent, document.querySelector('#face-b').dataset.loaded]);
    check(msgA.includes('no face found in wall.png') && banner.includes('no face found in wall.png') && loadedB === path.basename(rawPhoto),
      `picked together, the face-less one first: "${msgA}" / "${msgB}", error "${banner}", slot B holds ${loadedB}`);
    // No camera in this browser (no fake capture device): a clear message, no exception.
    await page.click('#face-a button.camera');
    await page.waitForFunction(() => /camera/.test(document.querySelector('#face-a .face-msg').textContent)
      && !/starting/.test(document.querySelector('#face-a .face-msg').textContent), null, { timeout: 30_000 });
    const camMsg = await page.textContent('#face-a .face-msg');
    check(/no camera found|permission was denied/.test(camMsg), `no camera: "${camMsg}"`);
    // The camera photo's source: a raw LFW photo decoded by the browser, as a Y4M video file.
    const photo = raw('Silvio_Berlusconi', 1);
    const rgba = await page.evaluate(async (bytes) => {
      const bmp = await createImageBitmap(new Blob([new Uint8Array(bytes)]));
      const c = new OffscreenCanvas(bmp.width, bmp.height);
      const ctx = c.getContext('2d');
      ctx.drawImage(bmp, 0, 0);
      return { w: bmp.width, h: bmp.height, data: Array.from(ctx.getImageData(0, 0, bmp.width, bmp.height).data) };
    }, Array.from(fs.readFileSync(photo)));
    cameraVideo = path.join(outDir, 'camera.y4m');
    fs.writeFileSync(cameraVideo, y4m(rgba.w, rgba.h, rgba.data));
    await page.setInputFiles('#model-file', { name: 'bad.efq', mimeType: 'application/octet-stream', buffer: Buffer.from('definitely not safetensors') });
    await page.waitForSelector('#load-status[data-state="error"]', { timeout: 60_000 });
    const modelMsg = await page.textContent('#load-status');
    check(modelMsg.includes('not a usable EfQuantFace model'), `bad model file: "${modelMsg}"`);
    await page.close();
    // A photo taken with the (fake) camera against another photo of the same man.
    const camBrowser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
      args: [...CHROMIUM_ARGS, '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
        `--use-file-for-fake-video-capture=${cameraVideo}`],
    });
    try {
      const cam = await camBrowser.newPage({ viewport: { width: 900, height: 1000 } });
      const errors = [];
      cam.on('pageerror', (e) => errors.push(e.message));
      await cam.goto(`${base}?backend=cpu`);
      await cam.waitForSelector('#load-status[data-state="ready"]', { timeout: 120_000 });
      await cam.click('#face-a button.camera');
      await cam.waitForFunction(() => document.querySelector('#face-a video.live').videoWidth > 0, null, { timeout: 30_000 });
      await cam.click('#face-a button.snap');
      const other = raw('Silvio_Berlusconi', 2);
      await cam.setInputFiles('#face-b input', other);
      const pair = `camera A|${path.basename(other)}`;
      await cam.waitForFunction((want) => {
        const r = document.querySelector('#result');
        return r.dataset.state === 'error' || (r.dataset.state === 'done' && r.dataset.pair === want);
      }, pair, { timeout: 120_000 });
      const verdict = await cam.getAttribute('#verdict', 'data-verdict');
      const sim = Number(await cam.getAttribute('#result', 'data-similarity'));
      const found = await cam.getAttribute('#face-a canvas.photo', 'data-faces');
      const live = await cam.$eval('#face-a video.live', (v) => v.hidden && v.srcObject === null);
      check(verdict === 'same' && Number(found) >= 1,
        `camera frame of ${path.basename(photo)} vs ${path.basename(other)}: ${verdict}, similarity ${sim.toFixed(4)}, ${found} face(s) in the frame (want same)`);
      check(live, 'the camera stops after the photo is taken');
      check(errors.length === 0, `camera page: no page errors ${errors.join('; ')}`);
      await cam.screenshot({ path: path.join(outDir, 'verify-camera-same.png'), fullPage: true });
    } finally {
      await camBrowser.close();
    }
  } finally {
    await browser.close();
    server.close();
    isolated.close();
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
