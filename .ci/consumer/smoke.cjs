// Run in a project that installed the packed package: checks that the
// prebuilt binary for this platform (or SMOKE_BINARY) is the one loaded, and runs a matmul and a
// multi-head attention forward pass against float64 references computed here.
// Prints one JSON line; exits non-zero on any mismatch.
'use strict';
const path = require('node:path');
const ak = require('attention-kernels');

const failures = [];
const check = (ok, what) => ok || failures.push(what);

const info = ak.cpuInfo();
const expected =
  process.env.SMOKE_BINARY ||
  path.join('node_modules', 'attention-kernels', 'prebuilds', `${process.platform}-${process.arch}`, 'attention_kernels.napi.glibc.node');
check(info.addon === path.resolve(expected), `loaded ${info.addon}, expected ${expected}`);
if (process.env.SMOKE_ISA) check(info.isa === process.env.SMOKE_ISA, `kernel path ${info.isa}, expected ${process.env.SMOKE_ISA}`);

// Row-major float64 helpers.
const at = (t) => Array.from(t.contiguous().data, Number);
function mm(a, b, m, k, n, bT = false) {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let p = 0; p < k; p++) s += a[i * k + p] * (bT ? b[j * k + p] : b[p * n + j]);
    c[i * n + j] = s;
  }
  return c;
}
function maxRelErr(got, ref) {
  const scale = Math.max(...ref.map(Math.abs), 1e-30);
  return Math.max(...ref.map((r, i) => Math.abs(got[i] - r))) / scale;
}

const [M, K, N] = [37, 41, 29];
const a = ak.Tensor.randn([M, K], { seed: 1 });
const b = ak.Tensor.randn([K, N], { seed: 2 });
const matmulErr = maxRelErr(Array.from(ak.matmul(a, b).data), Array.from(mm(at(a), at(b), M, K, N)));
check(matmulErr < 1e-5, `matmul error ${matmulErr}`);

// Self-attention, batch 2, 5 tokens, E = 64, 4 heads, against the state dict's weights.
const [B, S, E, H] = [2, 5, 64, 4];
const d = E / H;
const mha = new ak.MultiHeadAttention({ embedDim: E, numHeads: H, seed: 3 });
const x = ak.Tensor.randn([B, S, E], { seed: 4 });
const out = Array.from(mha.forward(x).output.contiguous().data);
const w = mha.stateDict();
const [win, bin, wout, bout] = [w.in_proj_weight, w.in_proj_bias, w['out_proj.weight'], w['out_proj.bias']].map(at);
const ref = [];
const xs = at(x);
for (let bi = 0; bi < B; bi++) {
  const xb = xs.slice(bi * S * E, (bi + 1) * S * E);
  const qkv = mm(xb, win, S, E, 3 * E, true).map((v, i) => v + bin[i % (3 * E)]);
  const heads = new Float64Array(S * E);
  for (let h = 0; h < H; h++) {
    const part = (which, s, j) => qkv[s * 3 * E + which * E + h * d + j];
    for (let i = 0; i < S; i++) {
      const scores = Array.from({ length: S }, (_, j) => {
        let sum = 0;
        for (let t = 0; t < d; t++) sum += part(0, i, t) * part(1, j, t);
        return sum / Math.sqrt(d);
      });
      const top = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - top));
      const z = e.reduce((p, q) => p + q, 0);
      for (let t = 0; t < d; t++) heads[i * E + h * d + t] = e.reduce((acc, p, j) => acc + (p / z) * part(2, j, t), 0);
    }
  }
  ref.push(...mm(Array.from(heads), wout, S, E, E, true).map((v, i) => v + bout[i % E]));
}
const mhaErr = maxRelErr(out, ref);
check(mhaErr < 1e-4, `MultiHeadAttention error ${mhaErr}`);

console.log(JSON.stringify({ node: process.version, arch: process.arch, isa: info.isa, addon: path.relative(process.cwd(), info.addon), matmulErr, mhaErr }));
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
