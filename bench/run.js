#!/usr/bin/env node
'use strict';
// Side-by-side benchmark: this package and onnxruntime-node in one process,
// the same inputs, the same thread counts, medians over interleaved repeats.
// The main columns time the calls as users make them: matmul(), softmax(),
// attention() and MultiHeadAttention#forward() returning a new tensor. Our
// time writing into a preallocated `out` is the secondary column, with the
// page faults each new-result call costs (fresh multi-megabyte arrays are
// first touched inside the call). onnxruntime's figure is the faster of its
// allocating run and its run with a preallocated output. Peaky rows (softmax
// logits of std 30, attention q and k of std 4, block inputs of std 6) run
// beside the ordinary ones: their speed must not depend on the data.
//
//   npm run bench                 full run (several minutes)
//   npm run bench -- --smoke      tiny sizes, few repeats (CI: checks it runs and agrees)
//   npm run bench -- --only gemm  sections: gemm, softmax, attention, mha, layers (comma-separated)
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
      await sleep(5); // let the other side's spinning threads settle
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
        ours: async () => ak.matmul(a, b),
        oursOut: async () => ak.matmul(a, b, { out }),
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
          ours: async () => ak.softmax(x),
          oursOut: async () => ak.softmax(x, { out }),
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
  const peak = measurePeak();
  report.fmaPeakGflopsPerCore = peak;
  console.log(`attention-kernels benchmark: ${report.machine.cpu}, ${info.isa} path, node ${process.version}, onnxruntime-node ${ortVersion}`);
  const id = info.cpuid;
  console.log(
    `CPU: ${info.vendor} family ${id.family} model ${id.model} stepping ${id.stepping} -> tuned as ${info.family} (${info.tuning.basis}); ` +
      `caches L1d ${info.caches.l1d >> 10} KiB, L2 ${info.caches.l2 >> 10} KiB, L3 ${(info.caches.l3 / 2 ** 20).toFixed(1)} MiB; ` +
      `GEMM tile ${info.gemmBlocking.mr}x${info.gemmBlocking.nr}, mc ${info.gemmBlocking.mc} kc ${info.gemmBlocking.kc} nc ${info.gemmBlocking.nc}; ${info.logicalCpus} CPUs`,
  );
  console.log(`FMA peak (${info.isa}, measured): ${peak.toFixed(1)} GFLOP/s per core`);
  if (want('gemm')) await benchGemm(report, peak);
  if (want('softmax')) await benchSoftmax(report);
  if (want('attention')) await benchAttention(report, peak);
  if (want('mha')) await benchMha(report, peak);
  if (want('layers')) await benchLayers(report, peak);

  fs.mkdirSync(path.dirname(JSON_PATH), { recursive: true });
  fs.writeFileSync(JSON_PATH, JSON.stringify(report, null, 2) + '\n');
  console.log(`\nJSON report: ${path.relative(process.cwd(), JSON_PATH)}`);
  if (SMOKE) {
    // The smoke run is also a cross-check against onnxruntime.
    const mha = report.multiheadAttention || { rows: [], decode: [] };
    const diffs = [...(report.sgemm || []), ...(report.softmax || []), ...(report.attention || []), ...mha.rows, ...mha.decode, ...(report.encoderLayer || [])].map(
      (r) => r.maxAbsDiff,
    );
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
