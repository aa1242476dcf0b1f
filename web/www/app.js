// The demo page: the UI thread only decodes photos and draws; the model runs in worker.js.
const $ = (s) => document.querySelector(s);
const params = new URLSearchParams(location.search);
const backend = params.get('backend') || 'auto';
const SIZE = 112;
// ?floatdot=1 tries the engine's f32 multiply-add convolutions (default: dot4, exact everywhere).
const floatDot = params.has('floatdot') ? params.get('floatdot') === '1' : undefined;

// ?threads=0 keeps the single-threaded module even on a cross-origin-isolated page; ?relaxed=0
// the SIMD128 one even where relaxed SIMD exists.
const workerParams = new URLSearchParams();
for (const k of ['threads', 'relaxed']) if (params.get(k) === '0') workerParams.set(k, '0');
const worker = new Worker(new URL(`./worker.js${workerParams.size ? `?${workerParams}` : ''}`, import.meta.url), { type: 'module' });
let nextId = 1;
const pending = new Map();
worker.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === 'progress') { setStatus(m.text, 'loading'); return; }
  const p = pending.get(m.id);
  if (!p) return;
  pending.delete(m.id);
  m.ok ? p.resolve(m.result) : p.reject(new Error(m.error));
};
worker.onerror = (e) => showError(`the worker failed: ${e.message || 'could not start (is this served over http?)'}`);
function call(type, payload = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, type, ...payload }, transfer);
  });
}

function setStatus(text, state) {
  const el = $('#load-status');
  el.textContent = text;
  el.dataset.state = state;
}
function showError(text) {
  $('#error').textContent = text;
}
function clearError() { $('#error').textContent = ''; }
const mb = (b) => `${(b / 1e6).toFixed(2)} MB`;

let maxModelBytes = 256 << 20;
let modelReady = false;
const faces = [null, null]; // RGBA Uint8ClampedArray per slot
const faceNames = ['', ''];

// ---- Model loading, with progress.
async function fetchWithProgress(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot download ${url}: HTTP ${res.status}`);
  const total = Number(res.headers.get('Content-Length')) || 0;
  if (total > maxModelBytes) throw new Error(`model file is ${mb(total)}, more than the ${mb(maxModelBytes)} this page accepts`);
  const reader = res.body.getReader();
  const chunks = [];
  let got = 0;
  const bar = $('#load-progress');
  bar.hidden = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    if (got > maxModelBytes) throw new Error(`model file is larger than the ${mb(maxModelBytes)} this page accepts`);
    if (total) bar.value = got / total;
    setStatus(`Downloading model… ${mb(got)}${total ? ` of ${mb(total)}` : ''}`, 'loading');
  }
  const bytes = new Uint8Array(got);
  let o = 0;
  for (const c of chunks) { bytes.set(c, o); o += c.length; }
  return bytes.buffer;
}

function describeEngine(info, ms) {
  const dl = $('#engine-info');
  dl.innerHTML = '';
  const add = (k, v) => {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = v;
    dl.append(dt, dd);
  };
  const m = info.model;
  add('path', info.backend === 'webgpu' ? 'WebGPU (efq-engine, WGSL integer kernels)'
    : `CPU (integer backend in wasm, ${info.cpu_threads} thread${info.cpu_threads === 1 ? '' : 's'})`);
  dl.lastChild.id = 'backend';
  dl.lastChild.dataset.backend = info.backend;
  add('why', info.reason);
  add('threads', info.threading);
  dl.lastChild.id = 'threading';
  if (info.adapter) {
    const a = info.adapter;
    add('adapter', `${a.name || '(name hidden by the browser)'} — ${a.device_type}${a.software ? ', software' : ''}`);
    add('dot4I8Packed', info.dot4 === 'native' ? 'native' : 'polyfill (shifts)');
    add('convolutions', info.arithmetic);
  }
  add('model', `${m.name} — ${m.quant || 'float'}${m.bits && m.bits.first_last_8bit ? ' (first and last layer 8-bit)' : ''}`);
  add('size', `${mb(m.file_bytes)} file, ${mb(m.parameter_bytes)} parameters`);
  if (info.gpu_memory) add('GPU memory', `${mb(info.gpu_memory.parameters)} parameters, ${mb(info.gpu_memory.activations)} activations (batch ${info.gpu_memory.max_batch})`);
  add('threshold', info.threshold ? `${info.threshold.cosine.toFixed(4)}${info.threshold.far ? ` (FAR ${info.threshold.far})` : ''}` : 'none: similarity only (add ?threshold=0.23)');
  add('load time', `${ms.toFixed(0)} ms`);
}

async function loadModel(getBytes, label) {
  modelReady = false;
  clearError();
  setStatus(`Loading ${label}…`, 'loading');
  try {
    const bytes = await getBytes();
    setStatus(`Compiling ${label} (${mb(bytes.byteLength)})…`, 'loading');
    const { info, ms } = await call('load', { bytes, backend, floatDot }, [bytes]);
    let shown = info;
    const t = params.get('threshold');
    if (t !== null) shown = await call('setThreshold', { cosine: Number(t) });
    describeEngine(shown, ms);
    $('#load-progress').hidden = true;
    setStatus(`Ready: ${info.model.name} on ${info.backend === 'webgpu' ? 'WebGPU' : 'the CPU'}`, 'ready');
    modelReady = true;
    await maybeVerify();
  } catch (e) {
    $('#load-progress').hidden = true;
    setStatus(`Could not load ${label}: ${e.message}`, 'error');
    showError(e.message);
  }
}

$('#model-file').addEventListener('change', (ev) => {
  const f = ev.target.files[0];
  if (!f) return;
  if (f.size > maxModelBytes) {
    const msg = `${f.name} is ${mb(f.size)}, more than the ${mb(maxModelBytes)} this page accepts`;
    setStatus(msg, 'error');
    showError(msg);
    return;
  }
  loadModel(() => f.arrayBuffer(), f.name);
});

// ---- Face detection (SCRFD in the worker), loaded beside the model.
let detectorReady = false;
let detectorError = '';
async function loadDetector() {
  const url = params.get('detector') || 'models/detector.onnx';
  try {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`cannot download ${url}: HTTP ${res.status}`);
    const bytes = await res.arrayBuffer();
    const { info, ms } = await call('loadDetector', { bytes, backend }, [bytes]);
    detectorReady = true;
    const el = $('#detector-info');
    el.textContent = `Face detector: SCRFD on ${info.backend === 'webgpu' ? 'WebGPU' : 'the CPU (wasm)'}, loaded in ${ms.toFixed(0)} ms`;
    el.dataset.backend = info.backend;
  } catch (e) {
    detectorError = e.message;
    $('#detector-info').textContent = `No face detector (${e.message}): photos are centre-cropped.`;
  }
}
const detectorLoaded = loadDetector();

// Photos larger than this (longer side) are scaled down before detection: the detector sees
// 640×640 anyway, and the aligned crop is 112×112.
const MAX_PHOTO = 1024;
const PREVIEW = 240;

function drawFaces(box, photo, faces, chosen) {
  const canvas = box.querySelector('canvas.photo');
  const scale = Math.min(PREVIEW / photo.width, PREVIEW / photo.height);
  canvas.width = Math.round(photo.width * scale);
  canvas.height = Math.round(photo.height * scale);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(photo.bitmap, 0, 0, canvas.width, canvas.height);
  faces.forEach((f, i) => {
    const [x1, y1, x2, y2] = f.bbox.map((v) => v * scale);
    ctx.lineWidth = i === chosen ? 3 : 1.5;
    ctx.strokeStyle = i === chosen ? '#1a7f37' : '#d0d7de';
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = i === chosen ? '#cf222e' : '#8c959f';
    for (const [kx, ky] of f.kps) {
      ctx.beginPath();
      ctx.arc(kx * scale, ky * scale, 2, 0, 2 * Math.PI);
      ctx.fill();
    }
  });
  canvas.dataset.faces = String(faces.length);
  canvas.dataset.chosen = chosen === null ? '' : String(chosen);
  canvas.hidden = false;
  return scale;
}

function showCrop(box, rgba) {
  const ctx = box.querySelector('canvas.crop').getContext('2d');
  ctx.putImageData(new ImageData(new Uint8ClampedArray(rgba), SIZE, SIZE), 0, 0);
}

// The faces found in each slot's photo and the scale of its preview, for choosing by click.
const detected = [null, null];

// ---- Photos: decode; 112×112 images are taken as aligned crops, anything larger goes through
// face detection and five-point alignment (centre crop when no detector could be loaded).
// `source`: a File/Blob (picked, dropped) or a canvas (a camera frame); `name` labels it.
async function setFace(slot, source, name = source.name) {
  const p = await preparePhoto(slot, source, name);
  if (p && p.pixels) {
    p.msg.textContent = 'finding the face…';
    let r;
    try {
      r = await call('detect', { slot, pixels: p.pixels, width: p.width, height: p.height }, [p.pixels]);
    } catch (e) {
      return failDetection(p, e);
    }
    showFaces(p, r);
  }
  await maybeVerify();
}

// Two photos picked or dropped together: both detected in one call (on the CPU path they
// share each network pass, one photo per thread), then verified.
async function setFaces(sources) {
  const ps = await Promise.all(sources.slice(0, 2).map((f, slot) => preparePhoto(slot, f, f.name)));
  const todo = ps.filter((p) => p && p.pixels);
  for (const p of todo) p.msg.textContent = 'finding the face…';
  if (todo.length === 1) {
    const [p] = todo;
    try {
      showFaces(p, await call('detect', { slot: p.slot, pixels: p.pixels, width: p.width, height: p.height }, [p.pixels]));
    } catch (e) {
      return failDetection(p, e);
    }
  } else if (todo.length === 2) {
    let rs;
    try {
      rs = await call('detectBatch', {
        photos: todo.map((p) => ({ slot: p.slot, pixels: p.pixels, width: p.width, height: p.height })),
      }, todo.map((p) => p.pixels));
    } catch (e) {
      for (const p of todo) failDetection(p, e);
      return;
    }
    // A photo without a face keeps its error shown, whichever slot it is in.
    const faceless = todo.filter((p, i) => !showFaces(p, rs[i]));
    if (faceless.length) showError(faceless[0].msg.textContent);
  }
  await maybeVerify();
}

// Resets `slot` and decodes `source`. A 112×112 image, or any photo when there is no detector,
// becomes the slot's face at once; a photo for the detector comes back with its RGBA pixels
// (scaled to at most MAX_PHOTO). Null when it cannot be decoded.
async function preparePhoto(slot, source, name) {
  const box = slot === 0 ? $('#face-a') : $('#face-b');
  const msg = box.querySelector('.face-msg');
  msg.textContent = '';
  if (streams[slot]) stopCamera(slot);
  faces[slot] = null;
  detected[slot] = null;
  box.dataset.loaded = '';
  box.querySelector('canvas.photo').hidden = true;
  resetResult();
  let bmp;
  try {
    bmp = await createImageBitmap(source, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    msg.textContent = `cannot decode ${name || 'this file'} as an image`;
    showError(msg.textContent);
    return null;
  }
  faceNames[slot] = name || 'photo';
  const ctx = box.querySelector('canvas.crop').getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingQuality = 'high';
  ctx.clearRect(0, 0, SIZE, SIZE);
  await detectorLoaded;
  const p = { slot, box, msg, ctx, bmp };
  if (bmp.width === SIZE && bmp.height === SIZE) {
    ctx.drawImage(bmp, 0, 0);
    msg.textContent = '112×112: used as an aligned crop';
  } else if (!detectorReady) {
    const s = Math.min(bmp.width, bmp.height);
    ctx.drawImage(bmp, (bmp.width - s) / 2, (bmp.height - s) / 2, s, s, 0, 0, SIZE, SIZE);
    msg.textContent = `centre crop (no face detector: ${detectorError})`;
  } else {
    const k = Math.min(1, MAX_PHOTO / Math.max(bmp.width, bmp.height));
    p.width = Math.round(bmp.width * k);
    p.height = Math.round(bmp.height * k);
    const work = new OffscreenCanvas(p.width, p.height);
    const wctx = work.getContext('2d', { willReadFrequently: true });
    wctx.drawImage(bmp, 0, 0, p.width, p.height);
    p.pixels = wctx.getImageData(0, 0, p.width, p.height).data.buffer;
    return p;
  }
  bmp.close();
  useFace(p);
  return p;
}

function failDetection(p, e) {
  p.msg.textContent = `face detection failed: ${e.message}`;
  showError(p.msg.textContent);
}

// The detector's report `r` on photo `p`: its faces drawn, the chosen one's crop as the face.
// False when it found none.
function showFaces(p, r) {
  const { box, msg, slot } = p;
  const photo = { bitmap: p.bmp, width: p.width, height: p.height };
  if (r.faces.length === 0) {
    drawFaces(box, photo, [], null);
    msg.textContent = `no face found in ${faceNames[slot]}`;
    showError(msg.textContent);
    return false;
  }
  const scale = drawFaces(box, photo, r.faces, r.chosen);
  detected[slot] = { photo, faces: r.faces, scale };
  showCrop(box, r.crop);
  msg.textContent = r.faces.length === 1
    ? `1 face (${r.ms.toFixed(0)} ms)`
    : `${r.faces.length} faces, the most central is used: click another to choose it (${r.ms.toFixed(0)} ms)`;
  msg.dataset.detectMs = String(r.ms);
  useFace(p);
  return true;
}

// The slot's crop canvas becomes its face.
function useFace({ slot, box, ctx }) {
  faces[slot] = ctx.getImageData(0, 0, SIZE, SIZE).data;
  box.dataset.loaded = faceNames[slot];
  clearError();
}

// Choosing another face: the smallest box under the click.
async function chooseFace(slot, ev) {
  const d = detected[slot];
  if (!d) return;
  const canvas = ev.currentTarget;
  const rect = canvas.getBoundingClientRect();
  const x = (ev.clientX - rect.left) * (canvas.width / rect.width) / d.scale;
  const y = (ev.clientY - rect.top) * (canvas.height / rect.height) / d.scale;
  let best = -1;
  let area = Infinity;
  d.faces.forEach((f, i) => {
    const [x1, y1, x2, y2] = f.bbox;
    const a = (x2 - x1) * (y2 - y1);
    if (x >= x1 && x <= x2 && y >= y1 && y <= y2 && a < area) { best = i; area = a; }
  });
  if (best < 0) return;
  const box = slot === 0 ? $('#face-a') : $('#face-b');
  drawFaces(box, d.photo, d.faces, best);
  const crop = await call('align', { slot, index: best });
  showCrop(box, crop);
  faces[slot] = new Uint8ClampedArray(crop);
  resetResult();
  await maybeVerify();
}

// ---- Camera: a live preview per slot; "Take photo" freezes the current frame and sends it
// through the same detection and alignment as a photo file. The stream stops right after.
const streams = [null, null];
function stopCamera(slot) {
  const box = slot === 0 ? $('#face-a') : $('#face-b');
  if (streams[slot]) for (const t of streams[slot].getTracks()) t.stop();
  streams[slot] = null;
  const video = box.querySelector('video.live');
  video.srcObject = null;
  video.hidden = true;
  box.querySelector('button.snap').hidden = true;
  box.querySelector('button.camera').textContent = 'Camera';
}
function cameraError(e) {
  switch (e && e.name) {
    case 'NotAllowedError': return 'the camera permission was denied';
    case 'NotFoundError': case 'OverconstrainedError': return 'no camera found';
    case 'NotReadableError': return 'the camera is in use by another program';
    default: return `the camera could not start (${e && e.message ? e.message : e})`;
  }
}
async function startCamera(slot) {
  const box = slot === 0 ? $('#face-a') : $('#face-b');
  const msg = box.querySelector('.face-msg');
  if (streams[slot]) { stopCamera(slot); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    msg.textContent = 'no camera access here: the page must be served over https or from localhost';
    showError(msg.textContent);
    return;
  }
  msg.textContent = 'starting the camera…';
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: 'user' }, audio: false,
    });
    streams[slot] = stream;
    const video = box.querySelector('video.live');
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    box.querySelector('button.snap').hidden = false;
    box.querySelector('button.camera').textContent = 'Stop camera';
    msg.textContent = 'camera on: take a photo when the face is in view';
    box.dataset.camera = 'live';
  } catch (e) {
    stopCamera(slot);
    msg.textContent = cameraError(e);
    showError(msg.textContent);
  }
}
async function snapCamera(slot) {
  const box = slot === 0 ? $('#face-a') : $('#face-b');
  const video = box.querySelector('video.live');
  if (!streams[slot] || !video.videoWidth) return;
  const frame = document.createElement('canvas');
  frame.width = video.videoWidth;
  frame.height = video.videoHeight;
  frame.getContext('2d').drawImage(video, 0, 0);
  stopCamera(slot);
  box.dataset.camera = 'taken';
  await setFace(slot, frame, `camera ${slot === 0 ? 'A' : 'B'}`);
}

for (const box of [$('#face-a'), $('#face-b')]) {
  const input = box.querySelector('input');
  const slot = Number(input.dataset.slot);
  // Two files picked at once fill both slots, detected together.
  input.addEventListener('change', () => {
    const files = [...input.files];
    if (files.length > 1) setFaces(files);
    else if (files.length === 1) setFace(slot, files[0]);
  });
  box.querySelector('canvas.photo').addEventListener('click', (ev) => chooseFace(slot, ev));
  box.querySelector('button.camera').addEventListener('click', () => startCamera(slot));
  box.querySelector('button.snap').addEventListener('click', () => snapCamera(slot));
  box.addEventListener('dragover', (e) => { e.preventDefault(); box.classList.add('over'); });
  box.addEventListener('dragleave', () => box.classList.remove('over'));
  box.addEventListener('drop', (e) => {
    e.preventDefault();
    box.classList.remove('over');
    const files = [...e.dataTransfer.files];
    if (files.length > 1) setFaces(files);
    else if (files.length === 1) setFace(slot, files[0]);
  });
}

function resetResult() {
  $('#result').textContent = 'Load two photos.';
  $('#result').dataset.state = 'idle';
  $('#result').dataset.pair = '';
  $('#verdict').textContent = '';
  $('#verdict').dataset.verdict = '';
  $('#result-details').innerHTML = '';
}

let generation = 0;
async function maybeVerify() {
  if (!modelReady || !faces[0] || !faces[1]) return;
  const mine = ++generation;
  $('#result').textContent = 'Comparing…';
  $('#result').dataset.state = 'busy';
  try {
    const pair = `${faceNames[0]}|${faceNames[1]}`;
    const a = faces[0].slice().buffer;
    const b = faces[1].slice().buffer;
    const r = await call('verify', { a, b }, [a, b]);
    if (mine !== generation) return; // a newer photo arrived meanwhile
    $('#result').textContent = `Similarity ${r.similarity.toFixed(4)}`;
    $('#result').dataset.state = 'done';
    $('#result').dataset.similarity = String(r.similarity);
    $('#result').dataset.pair = pair;
    const v = $('#verdict');
    if (r.same === null || r.same === undefined) {
      v.textContent = 'No verdict: this model file stores no threshold to decide at. Files made by `trainer quantize` or `trainer finetune` carry one.';
      v.dataset.verdict = 'none';
    } else {
      v.textContent = r.same ? 'Same person' : 'Different people';
      v.dataset.verdict = r.same ? 'same' : 'different';
    }
    const dl = $('#result-details');
    dl.innerHTML = '';
    for (const [k, val] of [['cosine similarity', r.similarity.toFixed(5)],
      ['threshold', r.threshold === null ? '—' : r.threshold.toFixed(4)],
      ['latency (2 images)', `${r.ms.toFixed(1)} ms on ${r.backend === 'webgpu' ? 'WebGPU' : 'the CPU'}`]]) {
      const dt = document.createElement('dt'); dt.textContent = k;
      const dd = document.createElement('dd'); dd.textContent = val;
      dl.append(dt, dd);
    }
    dl.lastChild.id = 'latency';
    dl.lastChild.dataset.ms = String(r.ms);
  } catch (e) {
    $('#result').textContent = `Could not compare: ${e.message}`;
    $('#result').dataset.state = 'error';
    showError(e.message);
  }
}

// ---- Benchmark mode (?bench=1): images/s at batch 1 and 32 on each path; with &profile=1,
// the time of each WebGPU dispatch instead.
async function runBench() {
  $('#bench-panel').hidden = false;
  const out = $('#bench-out');
  const backends = (params.get('backends') || 'webgpu,cpu').split(',');
  const batches = (params.get('batches') || '1,32').split(',').map(Number);
  const seconds = Number(params.get('seconds') || 3);
  out.textContent = 'running…';
  try {
    const bytes = await fetchWithProgress(params.get('model') || 'models/default.efq');
    const rows = params.has('profile')
      ? await call('profile', { bytes, batches, runs: Number(params.get('runs') || 2), floatDot }, [bytes])
      : await call('bench', { bytes, backends, batches, seconds, floatDot }, [bytes]);
    window.benchResult = rows;
    out.textContent = JSON.stringify(rows, null, 2);
    out.dataset.done = '1';
    setStatus('Benchmark done', 'ready');
  } catch (e) {
    out.textContent = `benchmark failed: ${e.message}`;
    out.dataset.done = 'error';
  }
}

(async () => {
  try {
    ({ maxModelBytes } = await call('init'));
  } catch (e) {
    setStatus(`Could not start the engine: ${e.message}`, 'error');
    showError(e.message);
    return;
  }
  if (params.has('bench')) { await runBench(); return; }
  const url = params.get('model') || 'models/default.efq';
  loadModel(() => fetchWithProgress(url), url.split('/').pop());
})();
