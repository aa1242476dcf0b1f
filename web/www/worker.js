// Runs the wasm module off the main thread: loading a model, WebGPU set-up and the CPU path's
// forward passes never freeze the tab. Messages: {id, type, ...} in, {id, ok, result|error} out.
//
// Three builds of the module: pkg/ (single-threaded, SIMD128), pkg-relaxed/ (the same with
// relaxed SIMD: fused multiply-adds in the float convolutions, the detector's ~1.7× faster) and
// pkg-threads/ (relaxed SIMD and wasm threads: the CPU path's loops on rayon workers sharing
// this module's memory). Threads need SharedArrayBuffer, which browsers give only to
// cross-origin-isolated pages (COOP/COEP headers); elsewhere, or with ?threads=0, or where
// pkg-threads was not built, a single-threaded module runs: pkg-relaxed/ where the browser
// validates relaxed SIMD, else pkg/.
let Verifier, FaceDetector, alignFace, maxModelBytes;
let threading = 'single-threaded build';

// A module of one function using i8x16.relaxed_swizzle: valid only where relaxed SIMD exists.
const RELAXED_SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123,
  3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11]);
// ?relaxed=0 keeps to the SIMD128 build (to compare them).
const relaxedOff = new URLSearchParams(self.location.search).get('relaxed') === '0';
const relaxedSimd = !relaxedOff && WebAssembly.validate(RELAXED_SIMD_PROBE);

async function loadModule() {
  const wanted = new URLSearchParams(self.location.search).get('threads') !== '0';
  if (wanted && !relaxedSimd) {
    threading = relaxedOff
      ? 'single-threaded: ?relaxed=0, and the threaded build uses relaxed SIMD'
      : 'single-threaded: this browser has no relaxed SIMD, which the threaded build uses';
  } else if (wanted && self.crossOriginIsolated && typeof SharedArrayBuffer !== 'undefined') {
    try {
      const m = await import('./pkg-threads/efq_web.js');
      await m.default();
      await m.initThreadPool(Math.max(1, navigator.hardwareConcurrency || 1));
      ({ Verifier, FaceDetector, alignFace, maxModelBytes } = m);
      threading = 'wasm threads (cross-origin isolated)';
      return;
    } catch (e) {
      threading = `single-threaded: the threaded build failed to start (${errorText(e)})`;
    }
  } else {
    threading = wanted ? 'single-threaded: the page is not cross-origin isolated' : 'single-threaded (?threads=0)';
  }
  let m = null;
  if (relaxedSimd) {
    try {
      m = await import('./pkg-relaxed/efq_web.js');
      await m.default();
      threading += ' (relaxed SIMD)';
    } catch (e) {
      m = null;
    }
  }
  if (!m) {
    m = await import('./pkg/efq_web.js');
    await m.default();
    threading += ' (SIMD128)';
  }
  ({ Verifier, FaceDetector, alignFace, maxModelBytes } = m);
}

let verifier = null;
let detector = null;
// The last photo of each slot (RGBA, its size) and its faces, so that choosing another face
// only re-aligns.
const photos = [null, null];
const ready = loadModule();

function errorText(e) {
  return (e && e.message) ? e.message : String(e);
}

// Deterministic pseudo-random pixels for the benchmark (xorshift32).
function randomPixels(n, seed) {
  const px = new Uint8Array(n * 112 * 112 * 4);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < px.length; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    px[i] = s & 255;
  }
  return px;
}

async function bench(bytes, backends, batches, seconds, floatDot) {
  const rows = [];
  for (const backend of backends) {
    let v;
    try {
      v = await Verifier.load(new Uint8Array(bytes), backend, floatDot);
    } catch (e) {
      rows.push({ backend, error: errorText(e) });
      continue;
    }
    const info = JSON.parse(v.describe());
    for (const n of batches) {
      const px = randomPixels(n, 7 + n);
      await v.embed(px, n, 4); // warm-up: pipelines, buffers, caches
      const times = [];
      const t0 = performance.now();
      while (times.length < 2 || (performance.now() - t0) < seconds * 1000) {
        const t = performance.now();
        await v.embed(px, n, 4);
        times.push(performance.now() - t);
        postMessage({ type: 'progress', text: `${backend} batch ${n}: run ${times.length}` });
      }
      times.sort((a, b) => a - b);
      const median = times[Math.floor(times.length / 2)];
      rows.push({
        runtime: 'efq-engine', backend: info.backend, adapter: info.adapter, dot4: info.dot4,
        arithmetic: info.arithmetic, cpu_threads: info.cpu_threads, threading,
        model: info.model.name, batch: n, runs: times.length,
        median_ms: median, images_per_s: n / (median / 1000),
      });
    }
    v.free();
  }
  return rows;
}

// Per-dispatch times of one WebGPU forward pass (?bench=1&profile=1): the minimum over
// `runs` profiles of each dispatch, after a warm-up that compiles the shaders.
async function profile(bytes, batches, runs, floatDot) {
  const v = await Verifier.load(new Uint8Array(bytes), 'webgpu', floatDot);
  const info = JSON.parse(v.describe());
  const out = [];
  try {
    for (const n of batches) {
      const px = randomPixels(n, 7 + n);
      await v.embed(px, n, 4);
      let best = null;
      for (let r = 0; r < runs; r++) {
        const steps = JSON.parse(await v.profile(px, n, 4, () => performance.now()));
        best = best ? best.map((s, i) => (steps[i].ms < s.ms ? steps[i] : s)) : steps;
        postMessage({ type: 'progress', text: `profile batch ${n}: run ${r + 1}` });
      }
      out.push({ adapter: info.adapter, arithmetic: info.arithmetic, batch: n, steps: best });
    }
  } finally {
    v.free();
  }
  return out;
}

const handlers = {
  async init() {
    await ready;
    return { maxModelBytes: maxModelBytes() };
  },
  async load({ bytes, backend, floatDot }) {
    await ready;
    if (verifier) { verifier.free(); verifier = null; }
    const t = performance.now();
    verifier = await Verifier.load(new Uint8Array(bytes), backend || 'auto', floatDot);
    const info = JSON.parse(verifier.describe());
    info.threading = threading;
    return { info, ms: performance.now() - t };
  },
  async loadDetector({ bytes, backend }) {
    await ready;
    if (detector) { detector.free(); detector = null; }
    const t = performance.now();
    detector = await FaceDetector.load(new Uint8Array(bytes), backend || 'auto');
    return { info: JSON.parse(detector.describe()), ms: performance.now() - t };
  },
  // Faces in a photo, and the aligned crop of the chosen one (transferred back).
  async detect({ slot, pixels, width, height }) {
    if (!detector) throw new Error('the face detector is not loaded');
    const px = new Uint8Array(pixels);
    const t = performance.now();
    const r = JSON.parse(await detector.detect(px, width, height, 4));
    r.ms = performance.now() - t;
    photos[slot] = { px, width, height, faces: r.faces };
    r.crop = r.chosen === null ? null : alignFace(px, width, height, 4, r.faces[r.chosen].kps.flat()).buffer;
    return r;
  },
  // Several photos ({slot, pixels, width, height} each) detected in one call: on the CPU path
  // they share each network pass, one photo per thread. The same reports as `detect`, in order.
  async detectBatch({ photos: list }) {
    if (!detector) throw new Error('the face detector is not loaded');
    const px = list.map((p) => new Uint8Array(p.pixels));
    const all = new Uint8Array(px.reduce((n, p) => n + p.length, 0));
    px.reduce((at, p) => { all.set(p, at); return at + p.length; }, 0);
    const t = performance.now();
    const reports = JSON.parse(await detector.detectBatch(all,
      Uint32Array.from(list, (p) => p.width), Uint32Array.from(list, (p) => p.height), 4));
    const ms = performance.now() - t;
    return reports.map((r, i) => {
      const { slot, width, height } = list[i];
      photos[slot] = { px: px[i], width, height, faces: r.faces };
      r.ms = ms;
      r.crop = r.chosen === null ? null : alignFace(px[i], width, height, 4, r.faces[r.chosen].kps.flat()).buffer;
      return r;
    });
  },
  async align({ slot, index }) {
    const p = photos[slot];
    if (!p || !p.faces[index]) throw new Error(`no face ${index} in photo ${slot}`);
    return alignFace(p.px, p.width, p.height, 4, p.faces[index].kps.flat()).buffer;
  },
  async setThreshold({ cosine }) {
    verifier.setThreshold(cosine);
    return JSON.parse(verifier.describe());
  },
  async verify({ a, b }) {
    if (!verifier) throw new Error('no model is loaded');
    const t = performance.now();
    const r = JSON.parse(await verifier.verify(new Uint8Array(a), new Uint8Array(b), 4));
    r.ms = performance.now() - t;
    r.backend = verifier.backend();
    return r;
  },
  async bench({ bytes, backends, batches, seconds, floatDot }) {
    await ready;
    return bench(bytes, backends, batches, seconds, floatDot);
  },
  async profile({ bytes, batches, runs, floatDot }) {
    await ready;
    return profile(bytes, batches, runs, floatDot);
  },
};

// One request at a time, in arrival order: a model has one set of GPU buffers.
let queue = Promise.resolve();
onmessage = (ev) => {
  queue = queue.then(async () => {
    const { id, type } = ev.data;
    try {
      const result = await handlers[type](ev.data);
      postMessage({ id, ok: true, result });
    } catch (e) {
      postMessage({ id, ok: false, error: errorText(e) });
    }
  });
};
