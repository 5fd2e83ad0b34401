#!/usr/bin/env node
'use strict';
// Side-by-side benchmark: this package and onnxruntime-node in one process,
// the same inputs, the same thread counts, medians over interleaved repeats.
// Each side is timed at its best: ours writes into a preallocated `out`;
// onnxruntime's figure is the faster of its allocating run and its run with a
// preallocated output. Our time when it allocates a new result is reported
// too ("new-result ms"): on this kind of VM, first-touch page faults of a
// fresh multi-megabyte array can cost as much as the kernel.
//
//   npm run bench                 full run (a few minutes)
//   npm run bench -- --smoke      tiny sizes, few repeats (CI: checks it runs and agrees)
//   npm run bench -- --only gemm  sections: gemm, softmax, attention, serving (comma-separated)
//   npm run bench -- --json out.json
//   npm run bench -- --chart-from bench/out/report.json   redraw the chart only
//
// Prints tables and writes a JSON report (default bench/out/report.json).

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const ak = require('../dist');
const { native } = require('../dist/native');
const { buildModel } = require('./onnx');
const { table } = require('../examples/table');

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const value = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const SMOKE = flag('--smoke');
const ONLY = value('--only', '').split(',').filter(Boolean);
const JSON_PATH = value('--json', path.join(__dirname, 'out', 'report.json'));
const want = (section) => ONLY.length === 0 || ONLY.includes(section);

let ort;
try {
  ort = require('onnxruntime-node');
} catch (err) {
  console.error(`onnxruntime-node is not installed (it is a devDependency): ${err.message}`);
  process.exit(1);
}

const now = () => Number(process.hrtime.bigint()) / 1e9;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Times each named async function in turn, in blocks, so all see the same
 * machine noise; returns per-call medians in seconds (and the repeat count).
 */
async function compare(fns, { minTime = SMOKE ? 0.02 : 1.0, minReps = SMOKE ? 2 : 15, blocks = SMOKE ? 1 : 5 } = {}) {
  const names = Object.keys(fns);
  for (const name of names) await fns[name]();
  const samples = Object.fromEntries(names.map((n) => [n, []]));
  for (let b = 0; b < blocks; ++b) {
    for (const name of names) {
      await sleep(5); // let the other side's spinning threads settle
      const start = now();
      let reps = 0;
      while (reps < Math.ceil(minReps / blocks) || now() - start < minTime / blocks) {
        const t0 = now();
        await fns[name]();
        samples[name].push(now() - t0);
        reps++;
      }
    }
  }
  const out = { reps: samples[names[0]].length };
  for (const name of names) out[name] = median(samples[name]);
  return out;
}

async function session(model, threads) {
  return ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

const ortTensor = (t) => new ort.Tensor('float32', t.data, t.shape);

function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; ++i) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

// ---------------------------------------------------------------- FMA peak
function measurePeak() {
  // About 0.1 s per try at ~300 GFLOP/s; the best of several tries.
  const iterations = SMOKE ? 1e6 : 4e7;
  let best = 0;
  for (let i = 0; i < (SMOKE ? 2 : 7); ++i) {
    const t0 = now();
    const flops = native.fmaPeak(iterations);
    best = Math.max(best, flops / (now() - t0));
  }
  return best / 1e9;
}

// ---------------------------------------------------------------- sections
async function benchGemm(report, peak) {
  const sizes = SMOKE ? [64, 96] : [256, 512, 1024, 2048];
  const rows = [];
  for (const threads of [1, 2]) {
    for (const n of sizes) {
      ak.setNumThreads(threads);
      const a = ak.Tensor.randn([n, n], { seed: 1 });
      const b = ak.Tensor.randn([n, n], { seed: 2 });
      const model = buildModel({
        opsets: [{ version: 17 }],
        nodes: [{ opType: 'MatMul', inputs: ['a', 'b'], outputs: ['c'] }],
        inputs: [
          { name: 'a', dims: [n, n] },
          { name: 'b', dims: [n, n] },
        ],
        outputs: [{ name: 'c', dims: [n, n] }],
      });
      const s = await session(model, threads);
      const feeds = { a: ortTensor(a), b: ortTensor(b) };
      const out = ak.Tensor.zeros([n, n]);
      const fetch = { c: new ort.Tensor('float32', new Float32Array(n * n), [n, n]) };
      const diff = maxAbsDiff(ak.matmul(a, b).data, (await s.run(feeds)).c.data);
      const t = await compare({
        ours: async () => ak.matmul(a, b, { out }),
        oursNew: async () => ak.matmul(a, b),
        ort: async () => s.run(feeds),
        ortPre: async () => s.run(feeds, fetch),
      });
      const ortBest = Math.min(t.ort, t.ortPre);
      const flops = 2 * n ** 3;
      const row = {
        n,
        threads,
        oursMs: t.ours * 1e3,
        oursGflops: flops / t.ours / 1e9,
        percentOfPeak: (100 * flops) / t.ours / 1e9 / (peak * threads),
        oursNewResultMs: t.oursNew * 1e3,
        ortMs: ortBest * 1e3,
        ortGflops: flops / ortBest / 1e9,
        ortAllocatingMs: t.ort * 1e3,
        ortPreallocatedMs: t.ortPre * 1e3,
        speedup: ortBest / t.ours,
        speedupNewResult: ortBest / t.oursNew,
        maxAbsDiff: diff,
        repeats: t.reps,
      };
      rows.push(row);
      await s.release();
    }
  }
  ak.setNumThreads(os.availableParallelism());
  for (const n of sizes) {
    const one = rows.find((r) => r.n === n && r.threads === 1);
    const two = rows.find((r) => r.n === n && r.threads === 2);
    two.scalingVsOneThread = one.oursMs / two.oursMs;
  }
  report.sgemm = rows;
  console.log('\nsgemm: C = A·B, square float32 (medians; speedup = onnxruntime time / our time)');
  table(
    ['n', 'threads', 'ours ms', 'GFLOP/s', '% of peak', 'ort ms', 'ort GFLOP/s', 'speedup', '2T/1T', 'new-result ms', 'max |Δ|'],
    rows.map((r) => [
      r.n,
      r.threads,
      r.oursMs.toFixed(3),
      r.oursGflops.toFixed(1),
      r.percentOfPeak.toFixed(1),
      r.ortMs.toFixed(3),
      r.ortGflops.toFixed(1),
      `${r.speedup.toFixed(2)}x`,
      r.scalingVsOneThread ? `${r.scalingVsOneThread.toFixed(2)}x` : '',
      r.oursNewResultMs.toFixed(3),
      r.maxAbsDiff.toExponential(1),
    ]),
  );
}

async function benchSoftmax(report) {
  const shapes = SMOKE
    ? [
        [64, 32],
        [16, 130],
      ]
    : [
        [4096, 512],
        [1024, 4096],
      ];
  const rows = [];
  for (const threads of [1, 2]) {
    for (const shape of shapes) {
      ak.setNumThreads(threads);
      const x = ak.Tensor.randn(shape, { seed: 3, std: 4 });
      const model = buildModel({
        opsets: [{ version: 17 }],
        nodes: [{ opType: 'Softmax', inputs: ['x'], outputs: ['y'], attrs: { axis: -1 } }],
        inputs: [{ name: 'x', dims: shape }],
        outputs: [{ name: 'y', dims: shape }],
      });
      const s = await session(model, threads);
      const feeds = { x: ortTensor(x) };
      const out = ak.Tensor.zeros(shape);
      const fetch = { y: new ort.Tensor('float32', new Float32Array(x.size), shape) };
      const diff = maxAbsDiff(ak.softmax(x).data, (await s.run(feeds)).y.data);
      const t = await compare({
        ours: async () => ak.softmax(x, { out }),
        oursNew: async () => ak.softmax(x),
        ort: async () => s.run(feeds),
        ortPre: async () => s.run(feeds, fetch),
      });
      const ortBest = Math.min(t.ort, t.ortPre);
      const elems = shape[0] * shape[1];
      rows.push({
        shape,
        threads,
        oursMs: t.ours * 1e3,
        oursGelemPerS: elems / t.ours / 1e9,
        oursNewResultMs: t.oursNew * 1e3,
        ortMs: ortBest * 1e3,
        ortAllocatingMs: t.ort * 1e3,
        ortPreallocatedMs: t.ortPre * 1e3,
        speedup: ortBest / t.ours,
        speedupNewResult: ortBest / t.oursNew,
        maxAbsDiff: diff,
        repeats: t.reps,
      });
      await s.release();
    }
  }
  ak.setNumThreads(os.availableParallelism());
  report.softmax = rows;
  console.log('\nsoftmax along the last axis, float32');
  table(
    ['shape', 'threads', 'ours ms', 'Gelem/s', 'ort ms', 'speedup', 'new-result ms', 'max |Δ|'],
    rows.map((r) => [
      r.shape.join('x'),
      r.threads,
      r.oursMs.toFixed(3),
      r.oursGelemPerS.toFixed(2),
      r.ortMs.toFixed(3),
      `${r.speedup.toFixed(2)}x`,
      r.oursNewResultMs.toFixed(3),
      r.maxAbsDiff.toExponential(1),
    ]),
  );
}

// ---------------------------------------------------------------- multi-head attention
const E = 512;
const HEADS = 8;

// B and S may be names (symbolic dimensions); d_model and heads are the module's.
function mhaModel(mha, B, S, causal, past = 0) {
  const E = mha.embedDim;
  const HEADS = mha.numHeads;
  const wqkv = mha.inProjWeight.transpose().contiguous(); // ORT's Attention takes [E, 3E]
  const wo = mha.outProjWeight.transpose().contiguous();
  const inputs = [{ name: 'x', dims: [B, S, E] }];
  const attnInputs = ['x', 'wqkv', 'bqkv'];
  const attnOutputs = ['att'];
  if (past > 0) {
    inputs.push({ name: 'past', dims: [2, B, HEADS, past, E / HEADS] });
    attnInputs.push('', 'past');
    attnOutputs.push('present');
  }
  return buildModel({
    opsets: [{ version: 17 }, { domain: 'com.microsoft', version: 1 }],
    nodes: [
      { opType: 'Attention', domain: 'com.microsoft', inputs: attnInputs, outputs: attnOutputs, attrs: { num_heads: HEADS, unidirectional: causal ? 1 : 0 } },
      { opType: 'MatMul', inputs: ['att', 'wo'], outputs: ['proj'] },
      { opType: 'Add', inputs: ['proj', 'bo'], outputs: ['y'] },
    ],
    inputs,
    outputs: [{ name: 'y', dims: [B, S, E] }, ...(past > 0 ? [{ name: 'present', dims: [2, B, HEADS, past + S, E / HEADS] }] : [])],
    initializers: [
      { name: 'wqkv', dims: [E, 3 * E], data: wqkv.data },
      { name: 'bqkv', dims: [3 * E], data: mha.inProjBias.data },
      { name: 'wo', dims: [E, E], data: wo.data },
      { name: 'bo', dims: [E], data: mha.outProjBias.data },
    ],
  });
}

async function benchAttention(report) {
  const mha = new ak.MultiHeadAttention({ embedDim: E, numHeads: HEADS, seed: 1 });
  mha.inProjBias.assign(ak.Tensor.randn([3 * E], { seed: 5, std: 0.1 }));
  mha.outProjBias.assign(ak.Tensor.randn([E], { seed: 6, std: 0.1 }));
  const shapes = SMOKE ? [[1, 16], [2, 40]] : [[1, 16], [8, 128], [4, 512], [1, 2048]];
  const rows = [];
  for (const threads of [1, 2]) {
    for (const causal of [false, true]) {
      for (const [B, S] of shapes) {
        ak.setNumThreads(threads);
        const x = ak.Tensor.randn([B, S, E], { seed: 2 });
        const s = await session(mhaModel(mha, B, S, causal), threads);
        const feeds = { x: ortTensor(x) };
        const diff = maxAbsDiff(mha.forward(x, x, x, { causal }).output.data, (await s.run(feeds)).y.data);
        const t = await compare({
          ours: async () => mha.forward(x, x, x, { causal }),
          ort: async () => s.run(feeds),
        });
        const flops = 2 * B * S * E * 4 * E + 4 * B * S * S * E * (causal ? 0.5 : 1);
        rows.push({ batch: B, seq: S, causal, threads, oursMs: t.ours * 1e3, ortMs: t.ort * 1e3, speedup: t.ort / t.ours, oursTokensPerS: (B * S) / t.ours, ortTokensPerS: (B * S) / t.ort, oursGflops: flops / t.ours / 1e9, maxAbsDiff: diff, repeats: t.reps });
        await s.release();
      }
    }
  }
  for (const r of rows.filter((r) => r.threads === 2)) {
    const one = rows.find((o) => o.threads === 1 && o.batch === r.batch && o.seq === r.seq && o.causal === r.causal);
    r.scalingVsOneThread = one.oursMs / r.oursMs;
  }

  // One decoding step: one new query over a cache of `past` keys.
  const past = SMOKE ? 64 : 4096;
  const decode = [];
  for (const threads of [1, 2]) {
    ak.setNumThreads(threads);
    const history = ak.Tensor.randn([1, past, E], { seed: 3 });
    const cache = mha.createKVCache({ capacity: past + 8 });
    mha.forward(history, undefined, undefined, { kvCache: cache });
    const step = ak.Tensor.randn([1, 1, E], { seed: 4 });
    // ORT's past state holds the same keys and values, [2, B, h, past, d]:
    // the K and V parts of the history's projection, split into heads.
    const pastState = new Float32Array(2 * HEADS * past * (E / HEADS));
    const qkv = ak.matmul(history, mha.inProjWeight, { transposeB: true, bias: mha.inProjBias }); // [1, past, 3E]
    for (let which = 0; which < 2; ++which) {
      const part = qkv.narrow(2, (which + 1) * E, E).unflatten(2, [HEADS, E / HEADS]).permute([0, 2, 1, 3]).contiguous();
      pastState.set(part.data, which * HEADS * past * (E / HEADS));
    }
    const s = await session(mhaModel(mha, 1, 1, true, past), threads);
    const feeds = { x: ortTensor(step), past: new ort.Tensor('float32', pastState, [2, 1, HEADS, past, E / HEADS]) };
    cache.truncate(past);
    const ours = mha.forward(step, undefined, undefined, { kvCache: cache }).output.data;
    const diff = maxAbsDiff(ours, (await s.run(feeds)).y.data);
    const t = await compare({
      ours: async () => {
        cache.truncate(past);
        return mha.forward(step, undefined, undefined, { kvCache: cache });
      },
      ort: async () => s.run(feeds),
    });
    decode.push({ past, threads, oursMs: t.ours * 1e3, ortMs: t.ort * 1e3, speedup: t.ort / t.ours, maxAbsDiff: diff, repeats: t.reps });
    await s.release();
  }
  ak.setNumThreads(os.availableParallelism());
  report.multiheadAttention = { embedDim: E, numHeads: HEADS, rows, decode };

  console.log(`\nmulti-head attention block (QKV projection, attention, output projection), d_model ${E}, ${HEADS} heads`);
  table(
    ['batch', 'seq', 'causal', 'threads', 'ours ms', 'ort ms', 'speedup', '2T/1T', 'ours GFLOP/s', 'max |Δ|'],
    rows.map((r) => [
      r.batch,
      r.seq,
      r.causal ? 'yes' : 'no',
      r.threads,
      r.oursMs.toFixed(3),
      r.ortMs.toFixed(3),
      `${r.speedup.toFixed(2)}x`,
      r.scalingVsOneThread ? `${r.scalingVsOneThread.toFixed(2)}x` : '',
      r.oursGflops.toFixed(1),
      r.maxAbsDiff.toExponential(1),
    ]),
  );
  console.log(`\none decoding step: 1 query over ${past} cached keys`);
  table(
    ['cached', 'threads', 'ours ms', 'ort ms', 'speedup', 'max |Δ|'],
    decode.map((r) => [r.past, r.threads, r.oursMs.toFixed(3), r.ortMs.toFixed(3), `${r.speedup.toFixed(2)}x`, r.maxAbsDiff.toExponential(1)]),
  );
  if (!SMOKE) writeChart(rows);
}

/** Throughput (tokens/s) against sequence length, one thread, ours and onnxruntime's. */
function writeChart(rows) {
  const W = 820;
  const H = 420;
  const pad = { l: 80, r: 250, t: 50, b: 60 };
  const series = [];
  for (const causal of [false, true]) {
    const pts = rows.filter((r) => r.threads === 1 && r.causal === causal).sort((a, b) => a.seq - b.seq);
    series.push({ name: `attention-kernels${causal ? ', causal' : ''}`, color: causal ? '#5b8def' : '#1f4fbf', dash: causal ? '6 4' : '', pts: pts.map((r) => [r.seq, r.oursTokensPerS]) });
    series.push({ name: `onnxruntime-node${causal ? ', causal' : ''}`, color: causal ? '#f0a15b' : '#d2691e', dash: causal ? '6 4' : '', pts: pts.map((r) => [r.seq, r.ortTokensPerS]) });
  }
  const xs = series.flatMap((s) => s.pts.map((p) => p[0]));
  const ys = series.flatMap((s) => s.pts.map((p) => p[1]));
  const lx = (v) => Math.log2(v);
  const x0 = lx(Math.min(...xs));
  const x1 = lx(Math.max(...xs));
  const yMax = Math.max(...ys) * 1.1;
  const X = (v) => pad.l + ((lx(v) - x0) / (x1 - x0 || 1)) * (W - pad.l - pad.r);
  const Y = (v) => H - pad.b - (v / yMax) * (H - pad.t - pad.b);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${(W - pad.r + pad.l) / 2}" y="24" text-anchor="middle" font-size="15">Multi-head attention block, d_model ${E}, ${HEADS} heads, 1 thread</text>`,
  ];
  for (let i = 0; i <= 5; ++i) {
    const v = (yMax * i) / 5;
    out.push(`<line x1="${pad.l}" x2="${W - pad.r}" y1="${Y(v)}" y2="${Y(v)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${pad.l - 8}" y="${Y(v) + 4}" text-anchor="end">${Math.round(v / 1000)}k</text>`);
  }
  for (const r of [...new Set(xs)].sort((a, b) => a - b)) {
    const b = rows.find((q) => q.seq === r).batch;
    out.push(`<text x="${X(r)}" y="${H - pad.b + 18}" text-anchor="middle">${r}</text>`);
    out.push(`<text x="${X(r)}" y="${H - pad.b + 32}" text-anchor="middle" fill="#777777">batch ${b}</text>`);
  }
  out.push(`<text x="${(W - pad.r + pad.l) / 2}" y="${H - 12}" text-anchor="middle">sequence length</text>`);
  out.push(`<text transform="translate(18 ${(H - pad.b + pad.t) / 2}) rotate(-90)" text-anchor="middle">tokens per second</text>`);
  series.forEach((s, i) => {
    const d = s.pts.map((p, j) => `${j ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2.5" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''}/>`);
    for (const p of s.pts) out.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
    const ly = pad.t + 10 + i * 22;
    out.push(`<line x1="${W - pad.r + 16}" x2="${W - pad.r + 44}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2.5" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''}/>`);
    out.push(`<text x="${W - pad.r + 50}" y="${ly + 4}">${s.name}</text>`);
  });
  out.push('</svg>');
  const file = path.join(__dirname, 'attention-throughput.svg');
  fs.writeFileSync(file, out.join('\n') + '\n');
  console.log(`chart: ${path.relative(process.cwd(), file)}`);
}

// ---------------------------------------------------------------- serving
// Many small requests: CLIENTS clients in closed loops (each sends its next
// request when the answer arrives), in this process, sequences of 8 to 128
// tokens from a fixed seed, 2 threads. Ours through a Batcher (packed
// batches), ours one request at a time, and onnxruntime one request at a time
// (as a Node service calls it today: session.run per request). The model is
// one place (servingModel): the multi-head attention block for now.
const SERVING = { clients: 32, minTokens: 8, maxTokens: 128, threads: 2 };

/** Our module, onnxruntime's graph of the same weights, and the useful flops of a request of S tokens. */
function servingModel() {
  const d = 768;
  const mha = new ak.MultiHeadAttention({ embedDim: d, numHeads: 12, seed: 1 });
  mha.inProjBias.assign(ak.Tensor.randn([3 * d], { seed: 5, std: 0.1 }));
  mha.outProjBias.assign(ak.Tensor.randn([d], { seed: 6, std: 0.1 }));
  return {
    name: `multi-head attention block, d_model ${d}, 12 heads`,
    embedDim: d,
    module: mha,
    forwardAsync: async (x) => (await mha.forwardAsync(x)).output,
    onnx: mhaModel(mha, 1, 'S', false),
    flops: (S) => 8 * d * d * S + 4 * S * S * d,
  };
}

/** Request inputs [S, E], S uniform in [minTokens, maxTokens], from a fixed seed. */
function servingRequests(count, E) {
  let state = 2024;
  const next = () => (state = (state * 48271) % 2147483647) / 2147483647;
  const span = SERVING.maxTokens - SERVING.minTokens + 1;
  return Array.from({ length: count }, (_, i) => ak.Tensor.randn([SERVING.minTokens + Math.floor(next() * span), E], { seed: 100 + i }));
}

/** f, one call at a time: each waits for the one before it. */
function oneAtATime(f) {
  let tail = Promise.resolve();
  return (x) => {
    const run = tail.then(() => f(x));
    tail = run.catch(() => {});
    return run;
  };
}

/**
 * CLIENTS closed loops over `requests` for `seconds` (client c's i-th request
 * is requests[(c · 7 + i) mod n]): latencies in ms and tokens answered.
 */
async function closedLoops(answer, requests, seconds, stats) {
  const end = now() + seconds;
  await Promise.all(
    Array.from({ length: SERVING.clients }, async (_, c) => {
      for (let i = 0; now() < end; ++i) {
        const x = requests[(c * 7 + i) % requests.length];
        const t0 = now();
        await answer(x);
        stats.latencies.push((now() - t0) * 1e3);
        stats.tokens += x.shape[0];
        stats.flops += stats.flopsOf(x.shape[0]);
      }
    }),
  );
}

const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};

async function benchServing(report, peak) {
  ak.setNumThreads(SERVING.threads);
  const model = servingModel();
  const E = model.embedDim;
  const requests = servingRequests(SMOKE ? 40 : 256, E);
  const s = await session(model.onnx, SERVING.threads);
  const ortAnswer = async (x) => (await s.run({ x: new ort.Tensor('float32', x.data, [1, x.shape[0], E]) })).y.data;
  const batcher = new ak.Batcher(model.module, { maxBatchTokens: 8192, maxDelayMs: 1 });
  const systems = {
    batcher: (x) => batcher.run(x),
    oursOneByOne: oneAtATime(model.forwardAsync),
    ortOneByOne: oneAtATime(ortAnswer),
  };

  // Outputs: the first CLIENTS requests at once through the batcher (packed
  // together), and one at a time through each side, against onnxruntime's.
  const sample = requests.slice(0, SERVING.clients);
  const packed = await Promise.all(sample.map((x) => batcher.run(x)));
  const diffs = { batcher: 0, oursOneByOne: 0 };
  for (let i = 0; i < sample.length; ++i) {
    const ref = await ortAnswer(sample[i]);
    diffs.batcher = Math.max(diffs.batcher, maxAbsDiff(packed[i].data, ref));
    diffs.oursOneByOne = Math.max(diffs.oursOneByOne, maxAbsDiff((await model.forwardAsync(sample[i])).data, ref));
  }

  // Warm up, then rounds in which each system takes its turn (the same machine noise for all).
  const rounds = SMOKE ? 1 : 3;
  const seconds = SMOKE ? 0.3 : 4;
  const stats = Object.fromEntries(Object.keys(systems).map((k) => [k, { latencies: [], tokens: 0, flops: 0, time: 0, cpu: 0, flopsOf: model.flops }]));
  for (const answer of Object.values(systems)) await closedLoops(answer, requests, SMOKE ? 0.05 : 1, { latencies: [], tokens: 0, flops: 0, flopsOf: model.flops });
  const before = batcher.stats();
  for (let r = 0; r < rounds; ++r) {
    for (const [name, answer] of Object.entries(systems)) {
      await sleep(5);
      const t0 = now();
      const c0 = process.cpuUsage();
      await closedLoops(answer, requests, seconds / rounds, stats[name]);
      const c = process.cpuUsage(c0);
      stats[name].time += now() - t0;
      stats[name].cpu += (c.user + c.system) / 1e6;
    }
  }
  const after = batcher.stats();
  await batcher.close();
  await s.release();
  ak.setNumThreads(os.availableParallelism());

  const rows = Object.entries(stats).map(([name, st]) => ({
    system: name,
    requests: st.latencies.length,
    tokensPerS: st.tokens / st.time,
    requestsPerS: st.latencies.length / st.time,
    p50Ms: percentile(st.latencies, 50),
    p99Ms: percentile(st.latencies, 99),
    usefulGflops: st.flops / st.time / 1e9,
    percentOfPeak: (100 * st.flops) / st.time / 1e9 / (peak * SERVING.threads),
    // Every thread of the process (both sides' pools, spinning included): less sensitive to other load than wall time.
    cpuMsPer1kTokens: (1e6 * st.cpu) / st.tokens,
    maxAbsDiff: name === 'ortOneByOne' ? 0 : diffs[name],
  }));
  const ortRow = rows.find((r) => r.system === 'ortOneByOne');
  for (const r of rows) r.throughputVsOrt = r.tokensPerS / ortRow.tokensPerS;
  const batches = after.batches - before.batches;
  report.serving = {
    model: model.name,
    ...SERVING,
    seconds,
    rounds,
    meanBatchRequests: batches ? (after.requests - before.requests) / batches : 0,
    meanBatchTokens: batches ? (after.tokens - before.tokens) / batches : 0,
    rows,
  };

  const labels = { batcher: 'ours, Batcher', oursOneByOne: 'ours, one at a time', ortOneByOne: 'onnxruntime, one at a time' };
  console.log(
    `\nserving: ${SERVING.clients} clients in closed loops, ${SERVING.minTokens}-${SERVING.maxTokens} tokens per request, ` +
      `${model.name}, ${SERVING.threads} threads; Batcher: ${report.serving.meanBatchRequests.toFixed(1)} requests ` +
      `(${report.serving.meanBatchTokens.toFixed(0)} tokens) per batch`,
  );
  table(
    ['system', 'requests', 'tokens/s', 'vs ort', 'p50 ms', 'p99 ms', 'useful GFLOP/s', '% of peak', 'CPU ms / 1k tokens', 'max |Δ| vs ort'],
    rows.map((r) => [
      labels[r.system],
      r.requests,
      r.tokensPerS.toFixed(0),
      `${r.throughputVsOrt.toFixed(2)}x`,
      r.p50Ms.toFixed(2),
      r.p99Ms.toFixed(2),
      r.usefulGflops.toFixed(1),
      r.percentOfPeak.toFixed(1),
      r.cpuMsPer1kTokens.toFixed(1),
      r.system === 'ortOneByOne' ? '' : r.maxAbsDiff.toExponential(1),
    ]),
  );
}

async function main() {
  const chartFrom = value('--chart-from', '');
  if (chartFrom) {
    // Redraw the chart from a saved report, without running anything.
    writeChart(JSON.parse(fs.readFileSync(chartFrom, 'utf8')).multiheadAttention.rows);
    return;
  }
  const info = ak.cpuInfo();
  const ortVersion = require('onnxruntime-node/package.json').version;
  const report = {
    date: new Date().toISOString(),
    smoke: SMOKE,
    machine: {
      cpu: info.model || os.cpus()[0]?.model,
      isa: info.isa,
      logicalCpus: info.logicalCpus,
      caches: info.caches,
      node: process.version,
      onnxruntimeNode: ortVersion,
    },
  };
  const peak = measurePeak();
  report.fmaPeakGflopsPerCore = peak;
  console.log(`attention-kernels benchmark: ${report.machine.cpu}, ${info.isa} path, node ${process.version}, onnxruntime-node ${ortVersion}`);
  console.log(`FMA peak (${info.isa}, measured): ${peak.toFixed(1)} GFLOP/s per core`);
  if (want('gemm')) await benchGemm(report, peak);
  if (want('softmax')) await benchSoftmax(report);
  if (want('attention')) await benchAttention(report);
  if (want('serving')) await benchServing(report, peak);

  fs.mkdirSync(path.dirname(JSON_PATH), { recursive: true });
  fs.writeFileSync(JSON_PATH, JSON.stringify(report, null, 2) + '\n');
  console.log(`\nJSON report: ${path.relative(process.cwd(), JSON_PATH)}`);
  if (SMOKE) {
    // The smoke run is also a cross-check against onnxruntime.
    const mha = report.multiheadAttention || { rows: [], decode: [] };
    const serving = report.serving ? report.serving.rows : [];
    const diffs = [...(report.sgemm || []), ...(report.softmax || []), ...mha.rows, ...mha.decode, ...serving].map((r) => r.maxAbsDiff);
    const worst = Math.max(0, ...diffs);
    if (!(worst < 1e-3)) {
      console.error(`outputs differ from onnxruntime by ${worst}`);
      process.exit(1);
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
