#!/usr/bin/env node
'use strict';
// Side-by-side benchmark: this package and onnxruntime-node in one process,
// the same inputs, the same thread counts, medians over interleaved repeats.
// The main columns time the calls as users make them: matmul(), softmax(),
// attention() and MultiHeadAttention#forward() returning a new tensor. Our
// time writing into a preallocated `out` is the secondary column, with the
// page faults each new-result call costs (fresh multi-megabyte arrays are
// first touched inside the call). onnxruntime's figure is the faster of its
// allocating run and its run with a preallocated output. Every call, ours and
// onnxruntime's, runs in a turn of the event loop of its own, as a service's
// calls do: onnxruntime-node's run() defers its work to setImmediate, and our
// synchronous calls are timed the same way (`inTurn`), so memory that either
// side frees between turns is treated alike. Peaky rows (softmax
// logits of std 30, attention q and k of std 4, block inputs of std 6) run
// beside the ordinary ones: their speed must not depend on the data.
//
//   npm run bench                 full run (several minutes)
//   npm run bench -- --smoke      tiny sizes, few repeats (CI: checks it runs and agrees)
//   npm run bench -- --only gemm  sections: gemm, softmax, attention, mha, layers, serving (comma-separated)
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
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
/** f() called in a turn of the event loop of its own, as onnxruntime-node's run() calls its session. */
const inTurn = (f) =>
  new Promise((resolve, reject) => {
    setImmediate(() => {
      try {
        resolve(f());
      } catch (err) {
        reject(err);
      }
    });
  });

/**
 * Before each block the process is left idle until no thread of it is using
 * a CPU (`quiesce`): the other system's pool stops polling for work
 * (onnxruntime's threads poll for about 40-50 ms after a run, ours for
 * setIdleSpin's 10 ms; a polling thread holds a CPU the next system's threads
 * need: on two cores, our two-thread calls in the first 50 ms after
 * onnxruntime's took 1.3-1.9x as long). Then untimed calls for
 * BLOCK_WARMUP_S wake this system's own threads and caches.
 */
const BLOCK_WARMUP_S = SMOKE ? 0 : 0.05;
const QUIET_WINDOW_MS = 5;
const QUIET_MAX_MS = SMOKE ? 0 : 500;

/** Waits (at most QUIET_MAX_MS) for a QUIET_WINDOW_MS window in which the process used under a tenth of a CPU. */
async function quiesce() {
  const start = now();
  while ((now() - start) * 1e3 < QUIET_MAX_MS) {
    const before = process.cpuUsage();
    await sleep(QUIET_WINDOW_MS);
    const used = process.cpuUsage(before);
    if ((used.user + used.system) / 1e3 < QUIET_WINDOW_MS / 10) return;
  }
}

/**
 * Times each named async function in turn, in blocks, so all see the same
 * machine noise; returns per-call medians in seconds, the minor page faults
 * per call of each (process-wide, so only meaningful with nothing else
 * running), and the repeat count.
 */
async function compare(fns, { minTime = SMOKE ? 0.02 : 1.0, minReps = SMOKE ? 2 : 15, blocks = SMOKE ? 1 : 5 } = {}) {
  const names = Object.keys(fns);
  for (const name of names) await fns[name]();
  const samples = Object.fromEntries(names.map((n) => [n, []]));
  const faults = Object.fromEntries(names.map((n) => [n, 0]));
  for (let b = 0; b < blocks; ++b) {
    for (const name of names) {
      await quiesce();
      const warm = now();
      do await fns[name](); while (now() - warm < BLOCK_WARMUP_S);
      const start = now();
      const f0 = process.resourceUsage().minorPageFault;
      let reps = 0;
      while (reps < Math.ceil(minReps / blocks) || now() - start < minTime / blocks) {
        const t0 = now();
        await fns[name]();
        samples[name].push(now() - t0);
        reps++;
      }
      faults[name] += process.resourceUsage().minorPageFault - f0;
    }
  }
  const out = { reps: samples[names[0]].length, faults: {} };
  for (const name of names) {
    out[name] = median(samples[name]);
    out.faults[name] = faults[name] / samples[name].length;
  }
  return out;
}

/** Our figure against onnxruntime's best: ≥ 1.15x it, or ≥ 85% of the FMA peak of the threads used. */
function meetsTarget(speedup, percentOfPeak) {
  return speedup >= 1.15 || (percentOfPeak !== undefined && percentOfPeak >= 85);
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
const ms = (t) => (t * 1e3).toFixed(3);
const x2 = (v) => `${v.toFixed(2)}x`;
const yesNo = (v) => (v ? 'yes' : 'no');

/** Columns shared by the tables: [header, cell of a row]. */
const COL = {
  threads: ['threads', (r) => r.threads],
  data: ['data', (r) => r.data],
  oursMs: ['ours ms', (r) => r.oursMs.toFixed(3)],
  gflops: ['GFLOP/s', (r) => r.oursGflops.toFixed(1)],
  peak: ['% of peak', (r) => r.percentOfPeak.toFixed(1)],
  ortMs: ['ort ms', (r) => r.ortMs.toFixed(3)],
  ortPeak: ['ort % of peak', (r) => r.ortPercentOfPeak.toFixed(1)],
  speedup: ['speedup', (r) => x2(r.speedup)],
  target: ['target', (r) => (r.target === undefined ? '' : yesNo(r.target))],
  peaky: ['peaky/ordinary', (r) => (r.peakyOverOrdinary ? x2(r.peakyOverOrdinary) : '')],
  scaling: ['2T/1T', (r) => (r.scalingVsOneThread ? x2(r.scalingVsOneThread) : '')],
  outMs: ['out ms', (r) => r.oursOutMs.toFixed(3)],
  faults: ['faults/call', (r) => r.faultsPerCall.toFixed(0)],
  diff: ['max |Δ|', (r) => r.maxAbsDiff.toExponential(1)],
};

/** Prints rows as a table of the given columns. */
function printRows(rows, columns) {
  table(
    columns.map((c) => c[0]),
    rows.map((r) => columns.map((c) => c[1](r))),
  );
}

/** Fills r.scalingVsOneThread on 2-thread rows from the matching 1-thread row (same values of `keys`). */
function scaling(rows, keys) {
  for (const r of rows.filter((q) => q.threads === 2)) {
    const one = rows.find((q) => q.threads === 1 && keys.every((k) => String(q[k]) === String(r[k])));
    if (one) r.scalingVsOneThread = one.oursMs / r.oursMs;
  }
}

/** Fills r.peakyOverOrdinary on peaky rows from the ordinary row with the same `keys`. */
function peakyRatio(rows, keys) {
  for (const r of rows.filter((q) => q.data === 'peaky')) {
    const base = rows.find((q) => q.data === 'ordinary' && keys.every((k) => String(q[k]) === String(r[k])));
    if (base) r.peakyOverOrdinary = r.oursMs / base.oursMs;
  }
}

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
        ours: () => inTurn(() => ak.matmul(a, b)),
        oursOut: () => inTurn(() => ak.matmul(a, b, { out })),
        ort: async () => s.run(feeds),
        ortPre: async () => s.run(feeds, fetch),
      });
      const ortBest = Math.min(t.ort, t.ortPre);
      const flops = 2 * n ** 3;
      const percentOfPeak = (100 * flops) / t.ours / 1e9 / (peak * threads);
      rows.push({
        n,
        threads,
        oursMs: t.ours * 1e3,
        oursGflops: flops / t.ours / 1e9,
        percentOfPeak,
        oursOutMs: t.oursOut * 1e3,
        oursOutPercentOfPeak: (100 * flops) / t.oursOut / 1e9 / (peak * threads),
        faultsPerCall: t.faults.ours,
        ortMs: ortBest * 1e3,
        ortGflops: flops / ortBest / 1e9,
        ortPercentOfPeak: (100 * flops) / ortBest / 1e9 / (peak * threads),
        ortAllocatingMs: t.ort * 1e3,
        ortPreallocatedMs: t.ortPre * 1e3,
        speedup: ortBest / t.ours,
        speedupOut: ortBest / t.oursOut,
        target: threads === 1 && n >= 512 ? meetsTarget(ortBest / t.ours, percentOfPeak) : undefined,
        maxAbsDiff: diff,
        repeats: t.reps,
      });
      await s.release();
    }
  }
  ak.setNumThreads(os.availableParallelism());
  scaling(rows, ['n']);
  report.sgemm = rows;
  console.log('\nsgemm: C = A·B, square float32; matmul(a, b) returning a new tensor (out: into a preallocated one)');
  printRows(rows, [
    ['n', (r) => r.n],
    COL.threads, COL.oursMs, COL.gflops, COL.peak, COL.ortMs, COL.ortPeak, COL.speedup, COL.target, COL.scaling, COL.outMs,
    ['out % of peak', (r) => r.oursOutPercentOfPeak.toFixed(1)],
    COL.faults, COL.diff,
  ]);
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
        [64, 4096],
      ];
  const rows = [];
  for (const threads of [1, 2]) {
    for (const shape of shapes) {
      for (const [data, std] of [
        ['ordinary', 1],
        ['peaky', 30],
      ]) {
        ak.setNumThreads(threads);
        const x = ak.Tensor.randn(shape, { seed: 3, std });
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
          ours: () => inTurn(() => ak.softmax(x)),
          oursOut: () => inTurn(() => ak.softmax(x, { out })),
          ort: async () => s.run(feeds),
          ortPre: async () => s.run(feeds, fetch),
        });
        const ortBest = Math.min(t.ort, t.ortPre);
        const elems = shape[0] * shape[1];
        rows.push({
          shape,
          data,
          logitStd: std,
          threads,
          oursMs: t.ours * 1e3,
          oursGelemPerS: elems / t.ours / 1e9,
          oursOutMs: t.oursOut * 1e3,
          faultsPerCall: t.faults.ours,
          ortMs: ortBest * 1e3,
          ortAllocatingMs: t.ort * 1e3,
          ortPreallocatedMs: t.ortPre * 1e3,
          speedup: ortBest / t.ours,
          speedupOut: ortBest / t.oursOut,
          maxAbsDiff: diff,
          repeats: t.reps,
        });
        await s.release();
      }
    }
  }
  ak.setNumThreads(os.availableParallelism());
  peakyRatio(rows, ['shape', 'threads']);
  scaling(rows, ['shape', 'data']);
  report.softmax = rows;
  console.log('\nsoftmax along the last axis, float32; softmax(x) returning a new tensor; logits of std 1 (ordinary) and 30 (peaky)');
  printRows(rows, [
    ['shape', (r) => r.shape.join('x')],
    COL.data, COL.threads, COL.oursMs,
    ['Gelem/s', (r) => r.oursGelemPerS.toFixed(2)],
    COL.ortMs, COL.speedup, COL.peaky, COL.scaling, COL.outMs, COL.faults, COL.diff,
  ]);
}

// ---------------------------------------------------------------- attention (the fused kernel alone)
/** onnxruntime's com.microsoft MultiHeadAttention on [B, S, H d] inputs: attention alone, no projections. */
function attentionModel(B, S, H, d) {
  const D = H * d;
  return buildModel({
    opsets: [{ version: 17 }, { domain: 'com.microsoft', version: 1 }],
    nodes: [{ opType: 'MultiHeadAttention', domain: 'com.microsoft', inputs: ['q', 'k', 'v'], outputs: ['o'], attrs: { num_heads: H } }],
    inputs: ['q', 'k', 'v'].map((name) => ({ name, dims: [B, S, D] })),
    outputs: [{ name: 'o', dims: [B, S, D] }],
  });
}

async function benchAttention(report, peak) {
  const [B, H, S, d] = SMOKE ? [1, 2, 40, 16] : [4, 8, 512, 64];
  const D = H * d;
  const rows = [];
  for (const threads of [1, 2]) {
    for (const [data, std] of [
      ['ordinary', 1],
      ['peaky', 4],
    ]) {
      ak.setNumThreads(threads);
      // q, k, v as [B, S, H d] (a projection's layout), split into heads as views.
      const q = ak.Tensor.randn([B, S, D], { seed: 11, std });
      const k = ak.Tensor.randn([B, S, D], { seed: 12, std });
      const v = ak.Tensor.randn([B, S, D], { seed: 13 });
      const split = (t) => t.unflatten(2, [H, d]).permute([0, 2, 1, 3]);
      const [qh, kh, vh] = [split(q), split(k), split(v)];
      const outBSD = ak.Tensor.zeros([B, S, D]);
      const out = split(outBSD);
      const s = await session(attentionModel(B, S, H, d), threads);
      const feeds = { q: ortTensor(q), k: ortTensor(k), v: ortTensor(v) };
      const fetch = { o: new ort.Tensor('float32', new Float32Array(B * S * D), [B, S, D]) };
      ak.attention(qh, kh, vh, { out });
      const diff = maxAbsDiff(outBSD.data, (await s.run(feeds)).o.data);
      const t = await compare({
        ours: () => inTurn(() => ak.attention(qh, kh, vh)),
        oursOut: () => inTurn(() => ak.attention(qh, kh, vh, { out })),
        ort: async () => s.run(feeds),
        ortPre: async () => s.run(feeds, fetch),
      });
      const ortBest = Math.min(t.ort, t.ortPre);
      const flops = 4 * B * H * S * S * d;
      rows.push({
        shape: [B, H, S, d],
        data,
        qkStd: std,
        threads,
        oursMs: t.ours * 1e3,
        oursGflops: flops / t.ours / 1e9,
        percentOfPeak: (100 * flops) / t.ours / 1e9 / (peak * threads),
        oursOutMs: t.oursOut * 1e3,
        faultsPerCall: t.faults.ours,
        ortMs: ortBest * 1e3,
        ortAllocatingMs: t.ort * 1e3,
        ortPreallocatedMs: t.ortPre * 1e3,
        speedup: ortBest / t.ours,
        maxAbsDiff: diff,
        repeats: t.reps,
      });
      await s.release();
    }
  }
  ak.setNumThreads(os.availableParallelism());
  peakyRatio(rows, ['threads']);
  scaling(rows, ['data']);
  report.attention = rows;
  console.log(`\nfused attention softmax(QKᵀ/√d)·V, [${B}, ${H}, ${S}, ${d}], heads as views of [B, S, H·d]; attention() returning a new tensor; q and k of std 1 (ordinary) and 4 (peaky); ort: com.microsoft MultiHeadAttention`);
  printRows(rows, [COL.data, COL.threads, COL.oursMs, COL.gflops, COL.peak, COL.ortMs, COL.speedup, COL.peaky, COL.scaling, COL.outMs, COL.faults, COL.diff]);
}

// ---------------------------------------------------------------- multi-head attention
function mhaModel(mha, B, S, causal, past = 0) {
  const E = mha.embedDim;
  const heads = mha.numHeads;
  const wqkv = mha.inProjWeight.transpose().contiguous(); // ORT's Attention takes [E, 3E]
  const wo = mha.outProjWeight.transpose().contiguous();
  const inputs = [{ name: 'x', dims: [B, S, E] }];
  const attnInputs = ['x', 'wqkv', 'bqkv'];
  const attnOutputs = ['att'];
  if (past > 0) {
    inputs.push({ name: 'past', dims: [2, B, heads, past, E / heads] });
    attnInputs.push('', 'past');
    attnOutputs.push('present');
  }
  return buildModel({
    opsets: [{ version: 17 }, { domain: 'com.microsoft', version: 1 }],
    nodes: [
      { opType: 'Attention', domain: 'com.microsoft', inputs: attnInputs, outputs: attnOutputs, attrs: { num_heads: heads, unidirectional: causal ? 1 : 0 } },
      { opType: 'MatMul', inputs: ['att', 'wo'], outputs: ['proj'] },
      { opType: 'Add', inputs: ['proj', 'bo'], outputs: ['y'] },
    ],
    inputs,
    outputs: [{ name: 'y', dims: [B, S, E] }, ...(past > 0 ? [{ name: 'present', dims: [2, B, heads, past + S, E / heads] }] : [])],
    initializers: [
      { name: 'wqkv', dims: [E, 3 * E], data: wqkv.data },
      { name: 'bqkv', dims: [3 * E], data: mha.inProjBias.data },
      { name: 'wo', dims: [E, E], data: wo.data },
      { name: 'bo', dims: [E], data: mha.outProjBias.data },
    ],
  });
}

function makeMha(E, heads) {
  const mha = new ak.MultiHeadAttention({ embedDim: E, numHeads: heads, seed: 1 });
  mha.inProjBias.assign(ak.Tensor.randn([3 * E], { seed: 5, std: 0.1 }));
  mha.outProjBias.assign(ak.Tensor.randn([E], { seed: 6, std: 0.1 }));
  return mha;
}

/** The rows of the block: [E, heads, batch, seq, causal, data, a target row]. */
function mhaCases() {
  if (SMOKE) {
    return [
      [512, 8, 1, 16, false, 'ordinary', true],
      [512, 8, 2, 40, true, 'ordinary', false],
      [512, 8, 2, 40, false, 'peaky', false],
      [768, 12, 1, 32, false, 'ordinary', true],
    ];
  }
  const cases = [];
  const d512 = [[1, 1], [1, 16], [8, 128], [4, 512], [1, 2048]];
  for (const [B, S] of d512) cases.push([512, 8, B, S, false, 'ordinary', S > 1]);
  for (const [B, S] of d512) if (S > 1) cases.push([512, 8, B, S, false, 'peaky', false]);
  for (const [B, S] of d512) if (S > 1) cases.push([512, 8, B, S, true, 'ordinary', false]);
  for (const [B, S] of [[1, 32], [4, 128], [2, 384]]) cases.push([768, 12, B, S, false, 'ordinary', true]);
  return cases;
}

async function benchMha(report, peak) {
  const models = new Map();
  const rows = [];
  for (const threads of [1, 2]) {
    for (const [E, heads, B, S, causal, data, targetRow] of mhaCases()) {
      ak.setNumThreads(threads);
      if (!models.has(E)) models.set(E, makeMha(E, heads));
      const mha = models.get(E);
      const x = ak.Tensor.randn([B, S, E], { seed: 2, std: data === 'peaky' ? 6 : 1 });
      const s = await session(mhaModel(mha, B, S, causal), threads);
      const feeds = { x: ortTensor(x) };
      const diff = maxAbsDiff(mha.forward(x, x, x, { causal }).output.data, (await s.run(feeds)).y.data);
      const t = await compare({
        ours: () => inTurn(() => mha.forward(x, x, x, { causal })),
        ort: async () => s.run(feeds),
      });
      const flops = 2 * B * S * E * 4 * E + 4 * B * S * S * E * (causal ? 0.5 : 1);
      const percentOfPeak = (100 * flops) / t.ours / 1e9 / (peak * threads);
      rows.push({
        embedDim: E,
        heads,
        batch: B,
        seq: S,
        causal,
        data,
        inputStd: data === 'peaky' ? 6 : 1,
        threads,
        oursMs: t.ours * 1e3,
        ortMs: t.ort * 1e3,
        speedup: t.ort / t.ours,
        oursTokensPerS: (B * S) / t.ours,
        ortTokensPerS: (B * S) / t.ort,
        oursGflops: flops / t.ours / 1e9,
        percentOfPeak,
        ortPercentOfPeak: (100 * flops) / t.ort / 1e9 / (peak * threads),
        faultsPerCall: t.faults.ours,
        target: targetRow ? meetsTarget(t.ort / t.ours, percentOfPeak) : undefined,
        maxAbsDiff: diff,
        repeats: t.reps,
      });
      await s.release();
    }
  }
  ak.setNumThreads(os.availableParallelism());
  scaling(rows, ['embedDim', 'batch', 'seq', 'causal', 'data']);
  peakyRatio(rows, ['embedDim', 'batch', 'seq', 'causal', 'threads']);

  // One decoding step: one new query over a cache of `past` keys.
  const E = 512;
  const HEADS = 8;
  const mha = models.get(E) ?? makeMha(E, HEADS);
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
      ours: () =>
        inTurn(() => {
          cache.truncate(past);
          return mha.forward(step, undefined, undefined, { kvCache: cache });
        }),
      ort: async () => s.run(feeds),
    });
    decode.push({ past, threads, oursMs: t.ours * 1e3, ortMs: t.ort * 1e3, speedup: t.ort / t.ours, maxAbsDiff: diff, repeats: t.reps });
    await s.release();
  }
  ak.setNumThreads(os.availableParallelism());

  // Requests a few milliseconds apart, as a service gets them: each call
  // follows an idle gap, in which the pools' threads may go to sleep (see
  // setIdleSpin). Each system in blocks, after the other's threads stopped.
  const GAP_MS = 5;
  const spacedShape = [1, 16];
  const spaced = [];
  const xs = ak.Tensor.randn([...spacedShape, E], { seed: 5 });
  for (const threads of [1, 2]) {
    ak.setNumThreads(threads);
    const s = await session(mhaModel(mha, ...spacedShape, false), threads);
    const feeds = { x: ortTensor(xs) };
    const fns = { ours: () => inTurn(() => mha.forward(xs, xs, xs)), ort: () => s.run(feeds) };
    const samples = { ours: [], ort: [] };
    for (let round = 0; round < (SMOKE ? 1 : 3); ++round) {
      for (const name of Object.keys(fns)) {
        await sleep(SMOKE ? 1 : 100);
        for (let i = 0; i < (SMOKE ? 2 : 30); ++i) {
          await sleep(GAP_MS);
          const t0 = now();
          await fns[name]();
          samples[name].push(now() - t0);
        }
      }
    }
    const ours = median(samples.ours), ortT = median(samples.ort);
    spaced.push({ batch: spacedShape[0], seq: spacedShape[1], gapMs: GAP_MS, threads, oursMs: ours * 1e3, ortMs: ortT * 1e3, speedup: ortT / ours, repeats: samples.ours.length });
    await s.release();
  }
  ak.setNumThreads(os.availableParallelism());
  report.multiheadAttention = { rows, decode, spaced };

  console.log('\nmulti-head attention block (QKV projection, attention, output projection); forward() as users call it; inputs of std 1 (ordinary) and 6 (peaky)');
  printRows(rows, [
    ['d_model', (r) => r.embedDim],
    ['heads', (r) => r.heads],
    ['batch', (r) => r.batch],
    ['seq', (r) => r.seq],
    ['causal', (r) => yesNo(r.causal)],
    COL.data, COL.threads, COL.oursMs, COL.gflops, COL.peak, COL.ortMs, COL.ortPeak, COL.speedup, COL.target, COL.peaky, COL.scaling, COL.faults, COL.diff,
  ]);
  console.log(`\none decoding step: 1 query over ${past} cached keys, d_model ${E}, ${HEADS} heads`);
  table(
    ['cached', 'threads', 'ours ms', 'ort ms', 'speedup', 'max |Δ|'],
    decode.map((r) => [r.past, r.threads, r.oursMs.toFixed(3), r.ortMs.toFixed(3), x2(r.speedup), r.maxAbsDiff.toExponential(1)]),
  );
  console.log(`\nrequests ${GAP_MS} ms apart: forward() of (${spacedShape.join(', ')}), d_model ${E}, ${HEADS} heads, after an idle gap each (median)`);
  table(
    ['batch', 'seq', 'threads', 'ours ms', 'ort ms', 'speedup'],
    spaced.map((r) => [r.batch, r.seq, r.threads, r.oursMs.toFixed(3), r.ortMs.toFixed(3), x2(r.speedup)]),
  );
  if (!SMOKE) writeChart(rows.filter((r) => r.embedDim === E && r.data === 'ordinary' && r.seq > 1));
}

// ---------------------------------------------------------------- Transformer encoder layer
// A post-norm encoder layer with exact GELU, against the graph onnxruntime's
// optimizer makes of one on CPU (what its BERT fusions produce): com.microsoft
// Attention (QKV projection and attention) -> MatMul (output projection) ->
// SkipLayerNormalization (residual, output bias, norm1) -> MatMul (linear1) ->
// BiasGelu -> MatMul (linear2) -> SkipLayerNormalization (residual, bias, norm2).
function encoderLayerModel(layer, B, S) {
  const E = layer.dModel;
  const F = layer.dimFeedforward;
  const t = (x) => x.transpose().contiguous(); // ONNX MatMul and Attention take [in, out]
  const a = layer.selfAttn;
  return buildModel({
    opsets: [{ version: 17 }, { domain: 'com.microsoft', version: 1 }],
    nodes: [
      { opType: 'Attention', domain: 'com.microsoft', inputs: ['x', 'wqkv', 'bqkv'], outputs: ['att'], attrs: { num_heads: layer.numHeads } },
      { opType: 'MatMul', inputs: ['att', 'wo'], outputs: ['proj'] },
      { opType: 'SkipLayerNormalization', domain: 'com.microsoft', inputs: ['proj', 'x', 'g1', 'b1', 'bo'], outputs: ['x1'], attrs: { epsilon: layer.layerNormEps } },
      { opType: 'MatMul', inputs: ['x1', 'w1'], outputs: ['h'] },
      { opType: 'BiasGelu', domain: 'com.microsoft', inputs: ['h', 'bf1'], outputs: ['g'] },
      { opType: 'MatMul', inputs: ['g', 'w2'], outputs: ['f'] },
      { opType: 'SkipLayerNormalization', domain: 'com.microsoft', inputs: ['f', 'x1', 'g2', 'b2', 'bf2'], outputs: ['y'], attrs: { epsilon: layer.layerNormEps } },
    ],
    inputs: [{ name: 'x', dims: [B, S, E] }],
    outputs: [{ name: 'y', dims: [B, S, E] }],
    initializers: [
      { name: 'wqkv', dims: [E, 3 * E], data: t(a.inProjWeight).data },
      { name: 'bqkv', dims: [3 * E], data: a.inProjBias.data },
      { name: 'wo', dims: [E, E], data: t(a.outProjWeight).data },
      { name: 'bo', dims: [E], data: a.outProjBias.data },
      { name: 'g1', dims: [E], data: layer.norm1.weight.data },
      { name: 'b1', dims: [E], data: layer.norm1.bias.data },
      { name: 'w1', dims: [E, F], data: t(layer.linear1.weight).data },
      { name: 'bf1', dims: [F], data: layer.linear1.bias.data },
      { name: 'w2', dims: [F, E], data: t(layer.linear2.weight).data },
      { name: 'bf2', dims: [E], data: layer.linear2.bias.data },
      { name: 'g2', dims: [E], data: layer.norm2.weight.data },
      { name: 'b2', dims: [E], data: layer.norm2.bias.data },
    ],
  });
}

/** A post-norm, exact-GELU encoder layer with every bias and norm parameter set to random values. */
function encoderLayer({ E, heads, F, eps }, seed) {
  const layer = new ak.TransformerEncoderLayer({ dModel: E, numHeads: heads, dimFeedforward: F, activation: 'gelu', layerNormEps: eps, seed });
  const params = [layer.selfAttn.inProjBias, layer.selfAttn.outProjBias, layer.linear1.bias, layer.linear2.bias, layer.norm1.bias, layer.norm2.bias];
  params.forEach((p, i) => p.assign(ak.Tensor.randn(p.shape, { seed: seed * 16 + i, std: 0.1 })));
  for (const [i, n] of [layer.norm1, layer.norm2].entries()) n.weight.assign(ak.Tensor.uniform(n.weight.shape, { seed: seed * 16 + 8 + i, low: 0.5, high: 1.5 }));
  layer.refreshWeights();
  return layer;
}

async function benchLayers(report, peak) {
  const models = SMOKE
    ? [{ name: 'tiny', E: 64, heads: 4, F: 128, eps: 1e-12 }]
    : [
        { name: 'BERT-base', E: 768, heads: 12, F: 3072, eps: 1e-12 },
        { name: 'MiniLM', E: 384, heads: 12, F: 1536, eps: 1e-12 },
      ];
  const shapes = SMOKE ? [[1, 16], [2, 20]] : [[1, 128], [8, 128], [1, 512]];
  const rows = [];
  for (const [mi, cfg] of models.entries()) {
    const layer = encoderLayer(cfg, 40 + mi);
    for (const threads of [1, 2]) {
      for (const [B, S] of shapes) {
        ak.setNumThreads(threads);
        const { E, F } = cfg;
        const x = ak.Tensor.randn([B, S, E], { seed: 7 });
        const s = await session(encoderLayerModel(layer, B, S), threads);
        const feeds = { x: ortTensor(x) };
        const fetch = { y: new ort.Tensor('float32', new Float32Array(B * S * E), [B, S, E]) };
        const diff = maxAbsDiff(layer.forward(x).data, (await s.run(feeds)).y.data);
        const t = await compare({
          ours: () => inTurn(() => layer.forward(x)),
          ort: async () => s.run(feeds),
          ortPre: async () => s.run(feeds, fetch),
        });
        const ortBest = Math.min(t.ort, t.ortPre);
        const flops = 2 * B * S * E * (4 * E + 2 * F) + 4 * B * S * S * E;
        const percentOfPeak = (100 * flops) / t.ours / 1e9 / (peak * threads);
        rows.push({
          model: cfg.name,
          dModel: E,
          heads: cfg.heads,
          dimFeedforward: F,
          batch: B,
          seq: S,
          threads,
          oursMs: t.ours * 1e3,
          ortMs: ortBest * 1e3,
          ortAllocatingMs: t.ort * 1e3,
          ortPreallocatedMs: t.ortPre * 1e3,
          speedup: ortBest / t.ours,
          oursGflops: flops / t.ours / 1e9,
          percentOfPeak,
          ortPercentOfPeak: (100 * flops) / ortBest / 1e9 / (peak * threads),
          faultsPerCall: t.faults.ours,
          target: meetsTarget(ortBest / t.ours, percentOfPeak),
          maxAbsDiff: diff,
          repeats: t.reps,
        });
        await s.release();
      }
    }
  }
  ak.setNumThreads(os.availableParallelism());
  scaling(rows, ['model', 'batch', 'seq']);
  report.encoderLayer = rows;
  console.log(
    '\nTransformer encoder layer (post-norm, exact GELU, eps 1e-12): forward() returning a new tensor, against onnxruntime\'s fused graph' +
      ' (Attention, MatMul, SkipLayerNormalization, MatMul, BiasGelu, MatMul, SkipLayerNormalization)',
  );
  printRows(rows, [
    ['model', (r) => `${r.model} (${r.dModel}, ${r.heads}, ${r.dimFeedforward})`],
    ['batch', (r) => r.batch],
    ['seq', (r) => r.seq],
    COL.threads, COL.oursMs, COL.gflops, COL.peak, COL.ortMs, COL.ortPeak, COL.speedup, COL.target, COL.scaling, COL.faults, COL.diff,
  ]);
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
    `<text x="${(W - pad.r + pad.l) / 2}" y="24" text-anchor="middle" font-size="15">Multi-head attention block, d_model 512, 8 heads, 1 thread</text>`,
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
// one place (servingModel): a BERT-base encoder layer (768, 12 heads, 3072,
// exact GELU, post-norm) against onnxruntime's fused graph of it.
const SERVING = { clients: 32, minTokens: 8, maxTokens: 128, threads: 2 };

/** Our module, onnxruntime's graph of the same weights, and the useful flops of a request of S tokens. */
function servingModel() {
  const cfg = SMOKE ? { name: 'tiny', E: 64, heads: 4, F: 128, eps: 1e-12 } : { name: 'BERT-base', E: 768, heads: 12, F: 3072, eps: 1e-12 };
  const layer = encoderLayer(cfg, 60);
  const { E, F } = cfg;
  return {
    name: `${cfg.name} encoder layer (${E}, ${cfg.heads} heads, ${F}, GELU)`,
    embedDim: E,
    module: layer,
    forwardAsync: (x) => layer.forwardAsync(x),
    onnx: encoderLayerModel(layer, 1, 'S'),
    flops: (S) => 2 * S * E * (4 * E + 2 * F) + 4 * S * S * E,
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
      // The other system idle, then untimed calls (see BLOCK_WARMUP_S).
      await quiesce();
      if (BLOCK_WARMUP_S > 0) await closedLoops(answer, requests, BLOCK_WARMUP_S, { latencies: [], tokens: 0, flops: 0, flopsOf: model.flops });
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
  // The target: ≥ 1.5x onnxruntime's throughput (or ≥ 85% of the 2-core peak) at no worse p99 latency.
  const ours = rows.find((r) => r.system === 'batcher');
  ours.target = (ours.throughputVsOrt >= 1.5 || ours.percentOfPeak >= 85) && ours.p99Ms <= ortRow.p99Ms;
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
    ['system', 'requests', 'tokens/s', 'vs ort', 'p50 ms', 'p99 ms', 'useful GFLOP/s', '% of peak', 'CPU ms / 1k tokens', 'target', 'max |Δ| vs ort'],
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
      r.target === undefined ? '' : yesNo(r.target),
      r.system === 'ortOneByOne' ? '' : r.maxAbsDiff.toExponential(1),
    ]),
  );
}

async function main() {
  const chartFrom = value('--chart-from', '');
  if (chartFrom) {
    // Redraw the chart from a saved report, without running anything.
    const saved = JSON.parse(fs.readFileSync(chartFrom, 'utf8')).multiheadAttention.rows;
    writeChart(saved.filter((r) => (r.embedDim ?? 512) === 512 && (r.data ?? 'ordinary') === 'ordinary' && r.seq > 1));
    return;
  }
  const info = ak.cpuInfo();
  const ortVersion = require('onnxruntime-node/package.json').version;
  const report = {
    date: new Date().toISOString(),
    smoke: SMOKE,
    machine: {
      cpu: info.model || os.cpus()[0]?.model,
      vendor: info.vendor,
      family: info.family,
      cpuid: info.cpuid,
      tuning: info.tuning,
      gemmBlocking: info.gemmBlocking,
      isa: info.isa,
      logicalCpus: info.logicalCpus,
      caches: info.caches,
      node: process.version,
      onnxruntimeNode: ortVersion,
    },
  };
  // The peak is the machine's: a try during a burst of load on the host
  // measures less, which would inflate every "% of peak". So it is measured
  // again before each section, and each section uses the best so far.
  let peak = measurePeak();
  const bestPeak = () => {
    const again = measurePeak();
    if (again > peak) console.log(`\nFMA peak measured again: ${again.toFixed(1)} GFLOP/s per core (was ${peak.toFixed(1)})`);
    peak = Math.max(peak, again);
    return peak;
  };
  console.log(`attention-kernels benchmark: ${report.machine.cpu}, ${info.isa} path, node ${process.version}, onnxruntime-node ${ortVersion}`);
  const id = info.cpuid;
  console.log(
    `CPU: ${info.vendor} family ${id.family} model ${id.model} stepping ${id.stepping} -> tuned as ${info.family} (${info.tuning.basis}); ` +
      `caches L1d ${info.caches.l1d >> 10} KiB, L2 ${info.caches.l2 >> 10} KiB, L3 ${(info.caches.l3 / 2 ** 20).toFixed(1)} MiB; ` +
      `GEMM tile ${info.gemmBlocking.mr}x${info.gemmBlocking.nr}, mc ${info.gemmBlocking.mc} kc ${info.gemmBlocking.kc} nc ${info.gemmBlocking.nc}; ${info.logicalCpus} CPUs`,
  );
  console.log(`FMA peak (${info.isa}, measured): ${peak.toFixed(1)} GFLOP/s per core`);
  if (info.isa === 'amx') {
    console.log('  (products against packed weights and large matmuls run on the tile unit, whose rate is not bound by the FMA peak: their "% of peak" can pass 100)');
  }
  if (want('gemm')) await benchGemm(report, bestPeak());
  if (want('softmax')) await benchSoftmax(report);
  if (want('attention')) await benchAttention(report, bestPeak());
  if (want('mha')) await benchMha(report, bestPeak());
  if (want('layers')) await benchLayers(report, bestPeak());
  if (want('serving')) await benchServing(report, bestPeak());
  report.fmaPeakGflopsPerCore = peak;

  fs.mkdirSync(path.dirname(JSON_PATH), { recursive: true });
  fs.writeFileSync(JSON_PATH, JSON.stringify(report, null, 2) + '\n');
  console.log(`\nJSON report: ${path.relative(process.cwd(), JSON_PATH)}`);
  if (SMOKE) {
    // The smoke run is also a cross-check against onnxruntime.
    const mha = report.multiheadAttention || { rows: [], decode: [] };
    const serving = report.serving ? report.serving.rows : [];
    const diffs = [
      ...(report.sgemm || []),
      ...(report.softmax || []),
      ...(report.attention || []),
      ...mha.rows,
      ...mha.decode,
      ...(report.encoderLayer || []),
      ...serving,
    ].map((r) => r.maxAbsDiff);
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
