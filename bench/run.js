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
//   npm run bench -- --only gemm  one section (gemm, softmax)
//   npm run bench -- --json out.json
//
// Prints tables and writes a JSON report (default bench/out/report.json).

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const ak = require('../dist');
const { native } = require('../dist/native');
const { buildModel } = require('./onnx');

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
async function compare(fns, { minTime = SMOKE ? 0.02 : 0.6, minReps = SMOKE ? 2 : 9, blocks = SMOKE ? 1 : 3 } = {}) {
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

// ---------------------------------------------------------------- output
function table(header, rows) {
  const all = [header, ...rows].map((r) => r.map(String));
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const line = (r) => '| ' + r.map((c, i) => c.padStart(widths[i])).join(' | ') + ' |';
  console.log(line(all[0]));
  console.log('|' + widths.map((w) => '-'.repeat(w + 1) + ':').join('|') + '|');
  for (const r of all.slice(1)) console.log(line(r));
}

async function main() {
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

  fs.mkdirSync(path.dirname(JSON_PATH), { recursive: true });
  fs.writeFileSync(JSON_PATH, JSON.stringify(report, null, 2) + '\n');
  console.log(`\nJSON report: ${path.relative(process.cwd(), JSON_PATH)}`);
  if (SMOKE) {
    // The smoke run is also a cross-check against onnxruntime.
    const diffs = [...(report.sgemm || []), ...(report.softmax || [])].map((r) => r.maxAbsDiff);
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
