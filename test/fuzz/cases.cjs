// The fuzz cases: makeCase(seed, i) builds call i of a seed from a generator
// seeded with (seed, i) alone. A case is { name, what, run }: `what` describes
// the arguments (shapes, options, parameter blocks: enough to read the call),
// run() makes the call and returns null or what is wrong with its outcome.
//
// Outcomes checked:
//  - a valid call succeeds, and its result matches the float64 reference;
//  - an invalid call fails with a TypeError or RangeError (a rejection for the
//    async forms), nothing else;
//  - a call that may go either way does one or the other;
//  - a raw addon call that succeeds changed no byte outside the elements it
//    writes (every array is carved from arenas whose other bytes are compared
//    before and after), and wrote the reference values there.
'use strict';
const path = require('node:path');

const dist = process.env.FUZZ_DIST || path.resolve(__dirname, '..', '..', 'dist');
const ak = require(dist);
const { native } = require(path.join(dist, 'native.js'));
const P = require(path.join(dist, 'params.js'));
const ref = require(process.env.FUZZ_REFERENCES);
const { Tensor: T } = ak;

// ------------------------------------------------------------ random numbers

function mix(a, b) {
  let h = (Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  return Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
}

class Rng {
  constructor(seed) {
    this.s = seed >>> 0;
  }
  next() {
    // mulberry32
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo, hi) {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p) {
    return this.next() < p;
  }
  pick(a) {
    return a[Math.floor(this.next() * a.length)];
  }
  normal() {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  seed() {
    return this.int(0, 2 ** 30);
  }
}

/** A small dimension, awkward sizes first. */
const dim = (R, max = 40) => Math.min(max, R.pick([0, 1, 1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 31, 33, 40]));
const shapeStr = (s) => `[${s.join(',')}]`;
const tdesc = (t) => (t instanceof T ? `${t.dtype}${shapeStr(t.shape)}${t.isContiguous() && t.offset === 0 ? '' : `/s${shapeStr(t.strides)}+${t.offset}`}` : typeof t);

// Values that break integer slots: negative, fractional, past 2^53, infinite, NaN.
const WILD = [-1, 0.5, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 63, 1e300, Infinity, -Infinity, NaN, -0];

// ------------------------------------------------------------ outcome checks

const isArgError = (e) => e instanceof TypeError || e instanceof RangeError;

function describeError(e) {
  return e && e.constructor ? `${e.constructor.name}: ${e.message}` : String(e);
}

/**
 * Runs f (sync or async); `expect` is 'valid', 'invalid' or 'either'. A valid
 * outcome goes to check(result), which returns a problem or null.
 */
async function outcome(expect, f, check) {
  let result;
  try {
    result = await f();
  } catch (e) {
    if (expect === 'valid') return `a valid call failed: ${describeError(e)}\n${e && e.stack}`;
    if (!isArgError(e)) return `failed with ${describeError(e)}, expected a TypeError or RangeError`;
    if (!e.message) return 'an error without a message';
    return null;
  }
  if (expect === 'invalid') return 'an invalid call succeeded';
  return check ? check(result) : null;
}

/** Compares got (Tensor or array of numbers) with want (float64), tolerance per element; NaN must match NaN. */
function compare(got, want, tol, label) {
  const g = got instanceof T ? ref.values(got) : got;
  if (g.length !== want.length) return `${label}: ${g.length} elements, want ${want.length}`;
  for (let i = 0; i < g.length; ++i) {
    const w = want[i];
    const t = typeof tol === 'number' ? tol * (1 + Math.abs(w)) : tol[i];
    if (Number.isNaN(w) ? !Number.isNaN(g[i]) : !(Math.abs(g[i] - w) <= t)) {
      return `${label}: element ${i} is ${g[i]}, want ${w} (tolerance ${t})`;
    }
  }
  return null;
}

/**
 * Softmax tolerance (relative): the float32 rounding of a logit scale * x +
 * mask is relative to its magnitude, and becomes that much error in exp.
 */
function softmaxTolerance(x, scale, maskT) {
  const maxAbs = (t) => (t ? ref.values(t).reduce((m, v) => (Number.isFinite(v) ? Math.max(m, Math.abs(v)) : m), 0) : 0);
  const logit = Math.abs(scale ?? 1) * maxAbs(x) + (maskT && maskT.dtype === 'float32' ? maxAbs(maskT) : 0);
  return 2e-6 + 2 ** -21 * logit;
}

/** A tensor with t's values in an ordinary Float32Array / Uint8Array of the caller's. */
function callers(t, resizable = false) {
  const c = t.contiguous();
  const bytes = c.size * (t.dtype === 'float32' ? 4 : 1);
  const ab = resizable ? new ArrayBuffer(bytes, { maxByteLength: bytes + 64 }) : new ArrayBuffer(bytes);
  const data = t.dtype === 'float32' ? new Float32Array(ab) : new Uint8Array(ab);
  data.set(c.data.subarray(c.offset, c.offset + c.size));
  return new T(data, t.shape);
}

/** A random float32 tensor of `shape`, as a view of several layouts, in the library's memory or the caller's. */
function tensor(R, shape, opts = {}) {
  const layout = opts.contiguous ? 'plain' : R.pick(opts.layouts ?? ['plain', 'plain', 'transposed', 'narrowed', 'expanded', 'padded']);
  let t;
  const seed = R.seed();
  const std = opts.std ?? 1;
  if (layout === 'transposed' && shape.length >= 2) {
    const s = shape.slice();
    [s[s.length - 1], s[s.length - 2]] = [s[s.length - 2], s[s.length - 1]];
    t = T.randn(s, { seed, std }).transpose();
  } else if (layout === 'narrowed' && shape.length >= 1) {
    const s = shape.slice();
    s[0] += 2;
    t = T.randn(s, { seed, std }).narrow(0, 1, shape[0]);
  } else if (layout === 'expanded' && shape.length >= 1 && !opts.noExpand) {
    const s = shape.map((d, i) => (i === 0 || R.chance(0.3) ? 1 : d));
    t = T.randn(s, { seed, std }).expand(shape);
  } else if (layout === 'padded' && shape.length >= 1) {
    const s = shape.slice();
    s[s.length - 1] += 3;
    t = T.randn(s, { seed, std }).narrow(s.length - 1, 1, shape[shape.length - 1]);
  } else {
    t = T.randn(shape, { seed, std });
  }
  if (!opts.ownedOnly && R.chance(0.3) && t.size > 0) t = callers(t, R.chance(0.3));
  return t;
}

function mask(R, shape, dtype) {
  const t = dtype === 'uint8' ? T.zeros(shape, 'uint8') : T.randn(shape, { seed: R.seed(), std: 2 });
  if (dtype === 'uint8') for (let i = 0; i < t.size; ++i) t.data[i] = R.chance(0.25) ? 1 : 0;
  return t;
}

// ------------------------------------------------------------ public API

function pubMatmul(R) {
  const ta = R.chance(0.3);
  const tb = R.chance(0.3);
  const [m, n, k] = [dim(R), dim(R), dim(R)];
  const lead = R.pick([[], [], [2], [3, 2], [1]]);
  const side = R.pick(['both', 'a', 'b']);
  const packed = R.chance(0.15);
  const leadA = side === 'b' || packed ? [] : lead;
  const leadB = side === 'a' || packed ? [] : lead;
  const A = tensor(R, [...leadA, ...(ta ? [k, m] : [m, k])]);
  let B = tensor(R, [...leadB, ...(tb ? [n, k] : [k, n])]);
  const outShape = [...(leadA.length ? leadA : leadB), m, n];
  const opts = {};
  let expect = 'valid';
  if (ta) opts.transposeA = true;
  let bArg = B;
  let bLogical = B;
  if (packed) {
    bArg = ak.packMatrix(B, { transpose: tb });
    bLogical = tb ? B.transpose() : B;
  } else if (tb) {
    opts.transposeB = true;
  }
  if (R.chance(0.3)) opts.alpha = R.pick([0, 0.5, -2, 3]);
  const outKind = R.pick(['none', 'none', 'fresh', 'strided', 'expanded', 'wrong', 'aliasA']);
  let outBefore = null;
  if (outKind === 'fresh') opts.out = tensor(R, outShape, { layouts: ['plain', 'narrowed', 'padded'] });
  if (outKind === 'strided') opts.out = T.randn([...outShape.slice(0, -1), n + 3], { seed: R.seed() }).narrow(-1, 2, n);
  if (outKind === 'expanded' && m > 1 && n > 0) {
    opts.out = T.zeros([...outShape.slice(0, -2), 1, n]).expand(outShape);
    expect = 'invalid';
  }
  if (outKind === 'wrong') {
    opts.out = T.zeros([...outShape.slice(0, -1), n + 1]);
    expect = 'invalid';
  }
  if (outKind === 'aliasA' && A.size > 0 && A.shape.join() === outShape.join() && A.isContiguous()) {
    opts.out = A; // out is an input
    expect = 'invalid';
  }
  if (opts.out && expect === 'valid' && R.chance(0.4)) opts.beta = R.pick([1, 0.5]);
  if (opts.out) outBefore = ref.values(opts.out);
  const biasKind = R.pick(['none', 'none', 'ok', 'strided', 'wrong']);
  if (biasKind === 'ok') opts.bias = T.randn([n], { seed: R.seed() });
  if (biasKind === 'strided') opts.bias = T.randn([2 * n + 1], { seed: R.seed() }).narrow(0, 1, 2 * n).unflatten(0, [n, 2]).select(1, 0);
  if (biasKind === 'wrong') {
    opts.bias = T.randn([n + 1], { seed: R.seed() });
    expect = 'invalid';
  }
  if (R.chance(0.05)) {
    opts.alpha = NaN;
    expect = 'invalid';
  }
  const isAsync = R.chance(0.4);
  const what = `${isAsync ? 'async ' : ''}a ${tdesc(A)} b ${packed ? 'packed ' : ''}${tdesc(B)} ${JSON.stringify({ ...opts, out: opts.out && tdesc(opts.out), bias: opts.bias && tdesc(opts.bias) })}`;
  const run = () =>
    outcome(expect, () => (isAsync ? ak.matmulAsync(A, bArg, opts) : ak.matmul(A, bArg, opts)), (r) => {
      if (opts.out && r !== opts.out) return 'did not return out';
      const want = ref.matmulRef(A, bLogical, {
        transposeA: ta,
        transposeB: !packed && tb,
        alpha: opts.alpha ?? 1,
        beta: opts.beta ?? 0,
        c: outBefore ? new T(Float32Array.from(outBefore), outShape) : undefined,
      });
      const tol = ref.gemmTolerance(want, k);
      if (opts.bias) {
        const bv = ref.values(opts.bias);
        for (let i = 0; i < want.value.length; ++i) {
          want.value[i] += bv[i % n];
          tol[i] += Math.abs(bv[i % n]) * 2 ** -22;
        }
      }
      return compare(r, want.value, tol, 'matmul');
    });
  return { name: 'matmul', what, run };
}

function pubSoftmax(R) {
  const rank = R.int(1, 4);
  const shape = Array.from({ length: rank }, () => dim(R, 24));
  const X = tensor(R, shape, { std: R.pick([1, 1, 5, 30]) });
  const opts = {};
  let expect = 'valid';
  if (R.chance(0.4)) opts.scale = R.pick([0.5, 2, -1, 0]);
  if (rank >= 2 && R.chance(0.4)) opts.causal = true;
  if (R.chance(0.4)) {
    const ms = shape.slice(R.int(0, rank - 1)).map((d) => (R.chance(0.4) ? 1 : d));
    opts.mask = mask(R, ms, R.pick(['uint8', 'float32']));
  }
  const outKind = R.pick(['none', 'none', 'inplace', 'fresh', 'expanded', 'overlap', 'wrong']);
  let x = X;
  if (outKind === 'inplace') {
    x = X.clone();
    if (R.chance(0.3) && x.size > 0) x = callers(x);
    opts.out = x;
  }
  if (outKind === 'fresh') opts.out = T.zeros(shape);
  if (outKind === 'expanded' && rank >= 2 && shape[0] > 1 && X.size > 0) {
    opts.out = T.zeros([1, ...shape.slice(1)]).expand(shape);
    expect = 'invalid';
  }
  if (outKind === 'overlap' && X.size > 1 && shape[rank - 1] > 1) {
    const base = T.zeros([X.size + 1]);
    x = X.clone();
    const data = base.data;
    data.set(ref.values(x), 0);
    x = new T(data, shape, { strides: x.strides, offset: 0 });
    opts.out = new T(data, shape, { offset: 1, strides: x.strides });
    expect = 'invalid';
  }
  if (outKind === 'wrong') {
    opts.out = T.zeros([...shape, 1]);
    expect = 'invalid';
  }
  if (R.chance(0.04)) {
    opts.scale = R.pick([NaN, Infinity]);
    expect = 'invalid';
  }
  const xSnapshot = new T(Float32Array.from(ref.values(x)), shape);
  const isAsync = R.chance(0.4);
  const what = `${isAsync ? 'async ' : ''}x ${tdesc(x)} ${JSON.stringify({ ...opts, out: opts.out && tdesc(opts.out), mask: opts.mask && tdesc(opts.mask) })}`;
  const run = () =>
    outcome(expect, () => (isAsync ? ak.softmaxAsync(x, opts) : ak.softmax(x, opts)), (r) => {
      const want = ref.softmaxRef(xSnapshot, { scale: opts.scale, mask: opts.mask, causal: opts.causal });
      return compare(r, want, softmaxTolerance(xSnapshot, opts.scale, opts.mask), 'softmax');
    });
  return { name: 'softmax', what, run };
}

function pubAttention(R) {
  const rank = R.int(2, 4);
  const lead = rank === 4 ? [dim(R, 3), dim(R, 3)] : rank === 3 ? [dim(R, 4)] : [];
  const sq = dim(R, 70);
  const sk = dim(R, 70);
  const score = R.pick(['scaled_dot', 'scaled_dot', 'dot', 'cosine', 'additive']);
  const dk = dim(R, 24);
  const dq = score === 'additive' ? dim(R, 24) : dk;
  const dv = dim(R, 24);
  const q = tensor(R, [...lead, sq, dq]);
  const k = tensor(R, [...lead, sk, dk]);
  const v = tensor(R, [...lead, sk, dv]);
  const opts = { score };
  let expect = 'valid';
  if (score !== 'additive' && (R.chance(0.3) || dk === 0)) opts.scale = R.pick([0.25, 1, 2]);
  if (score === 'additive') {
    const h = dim(R, 12);
    opts.additive = { wq: T.randn([h, dq], { seed: R.seed(), std: 0.3 }), wk: T.randn([h, dk], { seed: R.seed(), std: 0.3 }), w: T.randn([h], { seed: R.seed() }) };
    if (R.chance(0.5)) opts.additive.bias = T.randn([h], { seed: R.seed() });
  }
  if (R.chance(0.3)) opts.causal = true;
  if (R.chance(0.3)) {
    const full = [...lead, sq, sk];
    const ms = full.slice(R.int(0, full.length - 1)).map((d) => (R.chance(0.4) ? 1 : d));
    opts.attnMask = mask(R, ms, R.pick(['uint8', 'float32']));
  }
  if (R.chance(0.25)) opts.keyPaddingMask = mask(R, rank >= 3 ? [lead[0], sk] : [sk], R.pick(['uint8', 'float32']));
  if (R.chance(0.4)) opts.needWeights = true;
  const outKind = R.pick(['none', 'none', 'fresh', 'headsplit', 'expanded']);
  if (outKind === 'fresh') opts.out = T.zeros([...lead, sq, dv]);
  if (outKind === 'headsplit' && rank === 4) {
    opts.out = T.zeros([lead[0], sq, lead[1], dv]).permute([0, 2, 1, 3]);
  }
  if (outKind === 'expanded' && rank >= 3 && lead[0] > 1 && lead.every((d) => d > 0) && sq * dv > 0) {
    opts.out = T.zeros([1, ...lead.slice(1), sq, dv]).expand([...lead, sq, dv]);
    expect = 'invalid';
  }
  const isAsync = R.chance(0.4);
  const what = `${isAsync ? 'async ' : ''}q ${tdesc(q)} k ${tdesc(k)} v ${tdesc(v)} ${JSON.stringify({ ...opts, out: opts.out && tdesc(opts.out), attnMask: opts.attnMask && tdesc(opts.attnMask), keyPaddingMask: opts.keyPaddingMask && tdesc(opts.keyPaddingMask), additive: opts.additive && Object.keys(opts.additive) })}`;
  const run = () =>
    outcome(expect, () => (isAsync ? ak.attentionAsync(q, k, v, opts) : ak.attention(q, k, v, opts)), (r) => {
      const want = ref.attentionRef(q, k, v, opts);
      const tol = score === 'additive' || score === 'cosine' ? 1e-4 : 2e-5;
      if (opts.out && r.output !== opts.out) return 'did not return out';
      return compare(r.output, want.output, tol, 'output') || (opts.needWeights ? compare(r.weights, want.weights, tol, 'weights') : null);
    });
  return { name: 'attention', what, run };
}

function pubMultihead(R) {
  const h = R.pick([1, 2, 3, 4]);
  const E = h * R.int(1, 6);
  const cross = R.chance(0.4);
  const kdim = cross && R.chance(0.5) ? R.int(1, 12) : E;
  const vdim = cross && R.chance(0.5) ? R.int(1, 12) : E;
  const config = { embedDim: E, numHeads: h, kdim, vdim, bias: R.chance(0.7), addBiasKV: R.chance(0.25), addZeroAttn: R.chance(0.2), seed: R.seed() };
  const mha = new ak.MultiHeadAttention(config);
  if (mha.inProjBias) mha.inProjBias.assign(T.randn([3 * E], { seed: R.seed(), std: 0.1 }));
  const batched = R.chance(0.7);
  const B = dim(R, 3) || 1;
  const L = dim(R, 20) || 1;
  const S = cross ? dim(R, 20) : L;
  const lift = (s) => (batched ? [B, ...s] : s);
  const query = tensor(R, lift([L, E]));
  const key = cross ? tensor(R, lift([S, kdim])) : undefined;
  const value = cross ? tensor(R, lift([S, vdim])) : undefined;
  const opts = {};
  if (R.chance(0.4)) opts.causal = true;
  if (R.chance(0.4)) opts.needWeights = true;
  if (opts.needWeights && R.chance(0.3)) opts.averageWeights = false;
  if (R.chance(0.2)) opts.attnMask = mask(R, [L, S], R.pick(['uint8', 'float32']));
  if (R.chance(0.2)) opts.keyPaddingMask = mask(R, batched ? [B, S] : [S], 'uint8');
  const what = `${JSON.stringify(config)} query ${tdesc(query)} key ${key ? tdesc(key) : '-'} value ${value ? tdesc(value) : '-'} ${JSON.stringify({ ...opts, attnMask: opts.attnMask && tdesc(opts.attnMask), keyPaddingMask: opts.keyPaddingMask && tdesc(opts.keyPaddingMask) })}`;
  if (!cross && !config.addBiasKV && !config.addZeroAttn && R.chance(0.3)) {
    // Incremental decoding: the same steps through a cache, sync and async, against the full causal pass.
    const steps = [];
    for (let done = 0; done < L; ) {
      const n = Math.min(L - done, R.pick([1, 1, 2, 5]));
      steps.push(query.narrow(query.rank - 2, done, n));
      done += n;
    }
    const run = async () => {
      const full = mha.forward(query, undefined, undefined, { causal: true });
      for (const isAsync of [false, true]) {
        const cache = mha.createKVCache({ batch: batched ? B : 1, capacity: R.int(1, 4) });
        const outs = T.zeros(full.output.shape);
        let done = 0;
        for (const step of steps) {
          const r = isAsync ? await mha.forwardAsync(step, undefined, undefined, { kvCache: cache }) : mha.forward(step, undefined, undefined, { kvCache: cache });
          const n = step.shape[step.rank - 2];
          outs.narrow(outs.rank - 2, done, n).assign(r.output);
          done += n;
        }
        const p = compare(outs, ref.values(full.output), 2e-5, `${isAsync ? 'forwardAsync' : 'forward'} with a KV cache against the full pass`);
        if (p) return p;
      }
      return null;
    };
    return { name: 'multihead-cache', what: `${what} steps ${steps.map((t) => t.shape[t.rank - 2]).join(',')}`, run };
  }
  const run = async () => {
    let sync;
    const problem = await outcome('valid', () => mha.forward(query, key, value ?? key, opts), (r) => {
      sync = r;
      const finite = ref.values(r.output).every((x) => Number.isFinite(x) || Number.isNaN(x));
      if (!finite) return 'an infinite output';
      const plain = !config.addBiasKV && !config.addZeroAttn && batched && kdim === E && vdim === E;
      if (!plain) return null;
      const k3 = key ?? query;
      const want = ref.multiheadRef(mha.stateDict(), h, query, k3, value ?? k3, { attnMask: opts.attnMask, keyPaddingMask: opts.keyPaddingMask, causal: opts.causal });
      return compare(r.output, want.output, 1e-4, 'output');
    });
    if (problem) return problem;
    return outcome('valid', () => mha.forwardAsync(query, key, value ?? key, opts), (r) => compare(r.output, ref.values(sync.output), 1e-6, 'forwardAsync against forward'));
  };
  return { name: 'multihead', what, run };
}

function pubTensor(R) {
  const op = R.pick(['ctor', 'zeros', 'view', 'assign', 'clone', 'reshape']);
  const wild = () => R.pick([...WILD, 3, 0, [], '4', null, undefined]);
  let f;
  let expect = 'either';
  let what;
  let check = null;
  if (op === 'ctor') {
    const shape = Array.from({ length: R.int(0, 9) }, () => (R.chance(0.7) ? dim(R) : wild()));
    const n = R.int(0, 50);
    const opts = R.chance(0.3) ? { strides: shape.map(() => (R.chance(0.8) ? R.int(0, 5) : wild())), offset: R.chance(0.5) ? R.int(0, 5) : wild() } : undefined;
    what = `new Tensor(Float32Array(${n}), ${JSON.stringify(shape)}, ${JSON.stringify(opts)})`;
    f = () => new T(new Float32Array(n), shape, opts);
  } else if (op === 'zeros') {
    const shape = Array.from({ length: R.int(0, 4) }, () => R.pick([0, 1, 3, 2 ** 20, 2 ** 30, 2 ** 40, 2 ** 53, -1, 1.5]));
    what = `Tensor.${R.chance(0.5) ? 'zeros' : 'empty'}(${JSON.stringify(shape)})`;
    const n = shape.reduce((p, d) => p * d, 1);
    if (shape.every((d) => Number.isSafeInteger(d) && d >= 0) && n <= 2 ** 20) expect = 'valid';
    f = () => (what.includes('zeros') ? T.zeros(shape) : T.empty(shape));
  } else if (op === 'view') {
    const t = tensor(R, [dim(R, 6), dim(R, 6), dim(R, 6)]);
    const v = R.pick(['narrow', 'select', 'permute', 'expand', 'transpose', 'unflatten', 'flatten']);
    const args = v === 'narrow' ? [R.int(-4, 3), R.int(-1, 4), R.int(-1, 4)] : v === 'select' ? [R.int(-4, 3), R.int(-1, 6)] : v === 'permute' ? [[R.int(-3, 3), R.int(0, 2), R.int(0, 3)]] : v === 'expand' ? [[R.pick([1, 2, 6]), ...t.shape.map((d) => (R.chance(0.7) ? d : R.int(0, 7)))]] : v === 'unflatten' ? [R.int(-3, 2), [R.int(0, 3), R.int(0, 3)]] : [R.int(-3, 2), R.int(-3, 2)];
    what = `${tdesc(t)}.${v}(${JSON.stringify(args)})`;
    f = () => t[v](...args);
    check = (r) => (r instanceof T ? (ref.values(r).length === r.size ? null : 'bad view') : 'not a tensor');
  } else if (op === 'assign') {
    const shape = [dim(R, 6) || 1, dim(R, 6) || 1];
    const dst = R.chance(0.5) ? T.zeros([1, shape[1]]).expand(shape) : tensor(R, shape, { noExpand: true });
    const src = tensor(R, R.chance(0.8) ? shape : [shape[1] + 1]);
    what = `${tdesc(dst)}.assign(${tdesc(src)})`;
    f = () => dst.assign(src);
    check = (r) => compare(r, ref.values(src.expand(dst.shape)), 0, 'assign');
  } else if (op === 'clone') {
    const t = tensor(R, [dim(R, 9), dim(R, 9)]);
    what = `${tdesc(t)}.clone()`;
    expect = 'valid';
    f = () => t.clone();
    check = (r) => compare(r, ref.values(t), 0, 'clone');
  } else {
    const t = tensor(R, [dim(R, 6), dim(R, 6)]);
    const shape = [R.pick([-1, 1, 2, 3, t.size]), R.pick([-1, 1, 2, 3])];
    what = `${tdesc(t)}.reshape(${JSON.stringify(shape)})`;
    f = () => t.reshape(shape);
    check = (r) => compare(r, ref.values(t), 0, 'reshape');
  }
  return { name: 'tensor', what, run: () => outcome(expect, f, check) };
}

function pubSafetensors(R) {
  const tensors = {};
  const names = ['__proto__', 'constructor', 'a', 'b.c', 'toString', '__metadata__x'];
  const count = R.int(0, 3);
  for (let i = 0; i < count; ++i) tensors[R.pick(names)] = R.chance(0.2) ? mask(R, [dim(R, 5)], 'uint8') : T.randn([dim(R, 4), dim(R, 4)], { seed: R.seed() });
  const bytes = ak.saveSafetensors(tensors, R.chance(0.3) ? { __proto__: null, ['__proto__']: 'x', note: 'y' } : undefined);
  const mutate = R.chance(0.7);
  let file = bytes;
  let what = `${Object.keys(tensors).join(',')} ${bytes.length} bytes`;
  if (mutate) {
    const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    let header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLen));
    const edits = [
      () => header.replace(/"F32"/, `"${R.pick(['F16', 'BF16', 'F64', 'I64', 'constructor', '__proto__', 'U8', ''])}"`),
      () => header.replace(/"shape":\[[^\]]*\]/, `"shape":${JSON.stringify(R.pick([[2 ** 53], [-1], [1.5], [2 ** 30, 2 ** 30], [], [0], 'x', [1, 2, 3, 4, 5, 6, 7, 8, 9]]))}`),
      () => header.replace(/"data_offsets":\[[^\]]*\]/, `"data_offsets":${JSON.stringify(R.pick([[0, 2 ** 60], [5, 1], [-4, 4], [0, 0], [1, 5], [0], 'a']))}`),
      () => header.replace(/\{/, R.pick(['{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},', '{"x":null,', '{"__metadata__":[1],', '{"y":{"dtype":"F32"},'])),
      () => R.pick(['[]', 'null', '"str"', '{', '\u00ff\u00fe', header + 'x']),
    ];
    header = R.pick(edits)();
    const hb = Buffer.from(header, R.chance(0.9) ? 'utf8' : 'latin1');
    const declared = R.chance(0.85) ? hb.length : R.pick([0, 1, hb.length + 1, 2 ** 40, 2 ** 63]);
    const data = bytes.subarray(8 + headerLen);
    const extra = R.chance(0.2) ? R.int(-Math.min(8, data.length), 8) : 0;
    file = new Uint8Array(8 + hb.length + Math.max(0, data.length + extra));
    new DataView(file.buffer).setBigUint64(0, BigInt(declared) & 0xffffffffffffffffn, true);
    file.set(hb, 8);
    file.set(data.subarray(0, Math.max(0, data.length + extra)), 8 + hb.length);
    what += ` header ${JSON.stringify(header.slice(0, 160))} declared ${declared}`;
  }
  const run = () =>
    outcome(mutate ? 'either' : 'valid', () => ak.loadSafetensors(file), (r) => {
      if (Object.getPrototypeOf(r.tensors) !== null) return 'tensors has a prototype';
      if (mutate) return null;
      for (const [name, t] of Object.entries(tensors)) {
        if (!(r.tensors[name] instanceof T)) return `tensor '${name}' missing`;
        const p = compare(r.tensors[name], ref.values(t), 0, name);
        if (p) return p;
      }
      return Object.keys(r.tensors).length === Object.keys(tensors).length ? null : 'extra tensors';
    });
  return { name: 'safetensors', what, run };
}

/** An async call whose input or out is taken away (transferred, resized, posted to a port) before or while it runs. */
function pubDetach(R) {
  const op = R.pick(['matmul', 'softmax', 'attention', 'forward']);
  const n = R.pick([4, 9, 33, 300, 600]);
  const memory = R.pick(['owned', 'plain', 'resizable']);
  const make = (shape) => {
    const t = T.randn(shape, { seed: R.seed() });
    return memory === 'owned' ? t : callers(t, memory === 'resizable');
  };
  let inputs;
  let out = null;
  let call;
  let want;
  if (op === 'matmul') {
    inputs = [make([n, 64]), make([64, n])];
    out = R.chance(0.5) ? make([n, n]) : null;
    want = ref.values(ak.matmul(inputs[0].clone(), inputs[1].clone()));
    call = () => ak.matmulAsync(inputs[0], inputs[1], out ? { out } : {});
  } else if (op === 'softmax') {
    inputs = [make([n, 64])];
    out = R.chance(0.5) ? (R.chance(0.5) ? inputs[0] : make([n, 64])) : null;
    want = ref.values(ak.softmax(inputs[0].clone()));
    call = () => ak.softmaxAsync(inputs[0], out ? { out } : {});
  } else if (op === 'attention') {
    inputs = [make([2, n, 32]), make([2, n, 32]), make([2, n, 32])];
    out = R.chance(0.5) ? make([2, n, 32]) : null;
    want = ref.values(ak.attention(...inputs.map((t) => t.clone())).output);
    call = () => ak.attentionAsync(...inputs, out ? { out } : {}).then((r) => r.output);
  } else {
    const mha = new ak.MultiHeadAttention({ embedDim: 32, numHeads: 4, seed: 1, addBiasKV: R.chance(0.3) });
    inputs = [make([1, n, 32])];
    want = ref.values(mha.forward(inputs[0].clone()).output);
    call = () => mha.forwardAsync(inputs[0]).then((r) => r.output);
  }
  const victim = out && R.chance(0.5) ? out : R.pick(inputs);
  const how = R.pick(['transfer', 'resize', 'port']);
  const when = R.pick(['now', 'tick', 'later']);
  const takeAway = () => {
    const ab = victim.data.buffer;
    try {
      if (how === 'transfer') structuredClone(ab, { transfer: [ab] });
      else if (how === 'resize' && ab.resizable) ab.resize(R.int(0, ab.byteLength));
      else if (how === 'port') {
        const { port1, port2 } = new MessageChannel();
        port1.postMessage(ab, [ab]);
        port1.close();
        port2.close();
      }
    } catch (e) {
      // The library's memory cannot be transferred on newer Node (DataCloneError): fine.
    }
  };
  const what = `${op}Async n ${n} ${memory} ${how} ${victim === out ? 'out' : 'input'} ${when}`;
  const run = async () => {
    const p = call();
    if (when === 'now') takeAway();
    else if (when === 'tick') await Promise.resolve().then(takeAway);
    else setTimeout(takeAway, R.int(0, 3));
    // A result whose buffer was taken away after it settled cannot be read.
    let problem = await outcome('either', () => p, (r) => (r.data.length < r.size ? null : compare(r, want, 1e-4, 'result')));
    await new Promise((resolve) => setTimeout(resolve, 5));
    return problem;
  };
  return { name: 'detach', what, run };
}

/** Huge and overflowing shapes, mostly through broadcasting (tiny arrays). */
function pubHuge(R) {
  const big = () => R.pick([2 ** 20, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 48, 2 ** 52]);
  const op = R.pick(['matmul', 'softmax', 'attention', 'zeros', 'expand']);
  let f;
  let what;
  if (op === 'matmul') {
    const [m, k, n] = [R.pick([0, 1, 3, big()]), R.pick([0, 1, big()]), R.pick([0, 1, 3, big()])];
    what = `matmul [${m},${k}] x [${k},${n}] broadcast`;
    f = () => {
      const a = T.zeros([1, 1]).expand([m, k]);
      const b = T.zeros([1, 1]).expand([k, n]);
      return R.chance(0.5) ? ak.matmul(a, b) : ak.matmulAsync(a, b);
    };
  } else if (op === 'softmax') {
    const shape = [R.pick([1, 2, big()]), R.pick([1, 3, big()])];
    what = `softmax ${shapeStr(shape)} broadcast`;
    f = () => {
      const x = T.zeros([1, 1]).expand(shape);
      return R.chance(0.5) ? ak.softmax(x) : ak.softmaxAsync(x);
    };
  } else if (op === 'attention') {
    // Keys broadcast from one row: beyond 2^40 the kernel's working memory
    // cannot be had (a RangeError); smaller counts are valid calls that
    // would take minutes, not what a fuzz case is for.
    const sk = R.pick([2 ** 40, 2 ** 44, 2 ** 48, 2 ** 52]);
    const q = T.randn([R.pick([1, 2, 5, 8]), 4]);
    what = `attention q [${q.shape}] over ${sk} broadcast keys`;
    f = () => {
      const k = T.zeros([1, 4]).expand([sk, 4]);
      return R.chance(0.5) ? ak.attention(q, k, k) : ak.attentionAsync(q, k, k);
    };
  } else if (op === 'zeros') {
    const shape = [big(), R.pick([0, 1, big()])];
    what = `zeros ${shapeStr(shape)}`;
    f = () => T.zeros(shape);
  } else {
    const shape = [big(), big(), big()];
    what = `expand to ${shapeStr(shape)} then clone`;
    f = () => T.zeros([1, 1, 1]).expand(shape).clone();
  }
  return { name: 'huge', what, run: () => outcome('either', f, null) };
}

// ------------------------------------------------------------ raw addon functions

/**
 * Memory for raw calls: arrays carved out of a few ArrayBuffers (plain,
 * resizable, shared, or the addon's own), filled with random values; every
 * byte not inside an array is a guard. snapshot() and changed() compare every
 * byte of every buffer.
 */
class Arena {
  constructor(R) {
    this.R = R;
    this.buffers = [];
  }

  buffer(bytes) {
    const kind = this.R.pick(['plain', 'plain', 'plain', 'owned', 'resizable', 'shared']);
    let ab;
    if (kind === 'owned') ab = native.allocate(Math.max(bytes, 1), false);
    else if (kind === 'resizable') ab = new ArrayBuffer(bytes, { maxByteLength: bytes + 256 });
    else if (kind === 'shared') ab = new SharedArrayBuffer(bytes);
    else ab = new ArrayBuffer(bytes);
    const f = new Float32Array(ab, 0, Math.floor(ab.byteLength / 4));
    for (let i = 0; i < f.length; ++i) f[i] = this.R.normal();
    this.buffers.push({ ab, kind });
    return ab;
  }

  /** A Float32Array of n elements with guards around it; `share` carves it from the last buffer's free end instead. */
  f32(n) {
    const before = this.R.int(0, 8);
    const after = this.R.int(0, 8);
    const ab = this.buffer((before + n + after) * 4);
    return new Float32Array(ab, before * 4, n);
  }

  u8(n) {
    const before = this.R.int(0, 16);
    const after = this.R.int(0, 16);
    const ab = this.buffer(before + n + after + 4);
    const a = new Uint8Array(ab, before, n);
    for (let i = 0; i < n; ++i) a[i] = this.R.chance(0.3) ? this.R.pick([1, 255, 7]) : 0;
    return a;
  }

  snapshot() {
    return this.buffers.map(({ ab }) => new Uint8Array(ab).slice());
  }

  /**
   * Bytes that differ from the snapshot outside the allowed element sets
   * ({ array, offsets } lists: element offsets of array that may change).
   */
  changedOutside(snap, allowed) {
    for (let b = 0; b < this.buffers.length; ++b) {
      const ab = this.buffers[b].ab;
      const now = new Uint8Array(ab);
      const old = snap[b];
      const ok = new Set();
      for (const { array, offsets } of allowed) {
        if (array.buffer !== ab) continue;
        const size = array.BYTES_PER_ELEMENT;
        for (const o of offsets) for (let j = 0; j < size; ++j) ok.add(array.byteOffset + o * size + j);
      }
      const n = Math.min(now.length, old.length);
      for (let i = 0; i < n; ++i) {
        if (now[i] !== old[i] && !ok.has(i)) return `byte ${i} of buffer ${b} (${this.buffers[b].kind}) changed outside the written elements`;
      }
    }
    return null;
  }
}

/** Element offsets of a strided view, row-major. */
function offsetsOf(shape, strides, offset) {
  const out = [];
  const n = shape.reduce((p, d) => p * d, 1);
  const idx = new Array(shape.length).fill(0);
  for (let i = 0; i < n; ++i) {
    let o = offset;
    for (let d = 0; d < shape.length; ++d) o += idx[d] * strides[d];
    out.push(o);
    for (let d = shape.length - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** Slot `name` ('m', 'shape[2]') of parameter block `block` of kind `kind` (NaN when the block is not one). */
function slot(kind, block, name) {
  const i = P.PARAM_BLOCKS[kind].indexOf(name);
  if (i < 0) throw new Error(`no slot ${name} in ${kind}`);
  return block instanceof Float64Array && block.length > i ? block[i] : NaN;
}

/** The elements a raw call may write, from the block it was given: [{ array, offsets }] (none unless array is a typed array). */
function writes(array, shape, strides, offset) {
  if (!ArrayBuffer.isView(array) || ![...shape, ...strides, offset].every(Number.isSafeInteger)) return [];
  return [{ array, offsets: offsetsOf(shape, strides, offset) }];
}

/** A copy of a parameter block with some slots made wild (the writers reuse their arrays). */
function perturbBlock(R, block, count) {
  const p = Float64Array.from(block);
  for (let i = 0; i < count; ++i) p[R.int(0, p.length - 1)] = R.chance(0.5) ? R.pick(WILD) : R.int(0, 70);
  return p;
}

/** One of the ways an argument can be wrong for a typed-array slot. */
function wrongArray(R, a) {
  return R.pick([null, undefined, 3, 'x', [1, 2], new Float64Array(4), new Int32Array(4), new Uint8Array(a ? a.length : 3), new Float32Array(0), {}]);
}

/**
 * Runs a raw call, sync or async, made valid or not: `valid` calls must
 * succeed; perturbed ones may fail with a TypeError or RangeError. On success
 * the only bytes changed are the written elements, which match check().
 */
async function rawOutcome(R, arena, valid, isAsync, call, written, check) {
  const snap = arena.snapshot();
  let detach = null;
  if (isAsync && R.chance(0.15)) detach = R.pick(arena.buffers);
  const f = async () => {
    const p = call();
    if (detach) {
      try {
        if (detach.kind === 'resizable') detach.ab.resize(0);
        else structuredClone(detach.ab, { transfer: [detach.ab] });
      } catch (e) {
        // shared and owned buffers cannot be taken away
      }
    }
    return p;
  };
  const expect = valid && !detach ? 'valid' : 'either';
  return outcome(expect, f, (r) => {
    if (detach && detach.ab.byteLength === 0) return null; // its elements are gone
    return arena.changedOutside(snap, written()) || check(snap, r);
  });
}

/** The arena bytes of array `a` as they were in snapshot `snap`, as a typed array of a's type. */
function before(arena, snap, a) {
  const b = arena.buffers.findIndex(({ ab }) => ab === a.buffer);
  const bytes = snap[b].slice(a.byteOffset, a.byteOffset + a.byteLength);
  return a instanceof Float32Array ? new Float32Array(bytes.buffer) : new Uint8Array(bytes.buffer);
}

function rawGemm(R) {
  const arena = new Arena(R);
  const [m, n, k] = [dim(R, 20), dim(R, 20), dim(R, 20)];
  const batch = R.pick([0, 1, 1, 2, 3]);
  const transA = R.chance(0.4);
  const transB = R.chance(0.4);
  const lda = (transA ? m : k) + R.pick([0, 0, 1, 3]) || 1;
  const ldb = (transB ? k : n) + R.pick([0, 0, 1, 3]) || 1;
  const ldc = n + R.pick([0, 0, 2]) || 1;
  const extent = (rows, cols, ld) => (rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols);
  const ea = transA ? extent(k, m, lda) : extent(m, k, lda);
  const eb = transB ? extent(n, k, ldb) : extent(k, n, ldb);
  const ec = extent(m, n, ldc);
  const sA = R.pick([0, ea + R.int(0, 3)]);
  const sB = R.pick([0, eb + R.int(0, 3)]);
  const sC = ec + R.int(0, 3);
  const span = (e, s) => (batch === 0 || e === 0 ? 0 : (batch - 1) * s + e);
  const offA = R.int(0, 3);
  const offB = R.int(0, 3);
  const offC = R.int(0, 3);
  const a = arena.f32(offA + span(ea, sA));
  const packed = R.chance(0.2);
  const b = arena.f32(offB + (packed ? eb : span(eb, sB)));
  const c = arena.f32(offC + span(ec, sC));
  const withBias = R.chance(0.3);
  const offBias = R.int(0, 2);
  const bias = withBias ? arena.f32(offBias + n) : null;
  const alpha = R.pick([1, 1, 0.5, -1, 0]);
  const beta = R.pick([0, 0, 1, 0.5]);
  const streamOut = +R.chance(0.5);
  const fields = { m, n, k, transA: +transA, transB: +transB, lda, ldb, ldc, aBatchStride: sA, bBatchStride: packed ? 0 : sB, cBatchStride: sC, batch, alpha, beta, streamOut, aOffset: offA, bOffset: offB, cOffset: offC, biasOffset: offBias };
  let block = packed
    ? P.gemmWithPackedParams({ m, transA: +transA, lda, ldc, aBatchStride: sA, cBatchStride: sC, batch, alpha, beta, streamOut, aOffset: offA, cOffset: offC, biasOffset: offBias })
    : P.gemmParams(fields);
  let valid = true;
  const args = [a, b, c, bias];
  if (R.chance(0.35)) {
    valid = false;
    const what = R.pick(['slots', 'slots', 'array', 'alias', 'block']);
    if (what === 'slots') block = perturbBlock(R, block, R.int(1, 3));
    if (what === 'array') args[R.int(0, 3)] = wrongArray(R, a);
    if (what === 'alias') args[2] = R.pick([a, b, bias ?? a]);
    if (what === 'block') block = R.pick([new Float64Array(block.length + 1), new Float32Array(block.length), null]);
  } else {
    block = Float64Array.from(block);
  }
  let handle = null;
  const isAsync = R.chance(0.4);
  const what = `${isAsync ? 'async ' : ''}${packed ? 'gemmWithPacked' : 'gemm'} ${JSON.stringify(fields)} lengths a ${a.length} b ${b.length} c ${c.length} bias ${bias ? bias.length : '-'}${valid ? '' : ` perturbed: ${block && block.length !== undefined ? Array.from(block).join(',') : block} args ${args.map((x) => (x && x.constructor ? x.constructor.name : String(x))).join(',')}`}`;
  const run = async () => {
    if (packed) {
      // Pack b (k x n, transB) once, sync or async, then run with the handle.
      const pb = P.packMatrixParams({ k, n, ldb, transB: +transB, bOffset: offB });
      const p = await outcome('valid', () => (R.chance(0.5) ? native.packMatrixAsync(b, pb) : native.packMatrix(b, pb)), (h) => {
        handle = h;
        return null;
      });
      if (p) return `packMatrix: ${p}`;
      args[1] = args[1] === b ? handle : args[1];
    }
    const call = () => {
      const fn = packed ? (isAsync ? native.gemmWithPackedAsync : native.gemmWithPacked) : isAsync ? native.gemmAsync : native.gemm;
      return fn(args[0], args[1], args[2], args[3], block);
    };
    const kind = packed ? 'gemmWithPacked' : 'gemm';
    const written = () => {
      const s = (name) => slot(kind, block, name);
      return writes(args[2], [s('batch'), s('m'), packed ? n : s('n')], [s('cBatchStride'), s('ldc'), 1], s('cOffset'));
    };
    return rawOutcome(R, arena, valid, isAsync, call, written, (snap) => {
      if (!valid) return null; // a perturbed block that went through: the bytes check above is what counts
      const A = before(arena, snap, a);
      const Bv = before(arena, snap, b);
      const C0 = before(arena, snap, c);
      const Bias = bias ? before(arena, snap, bias) : null;
      const fa = Math.fround(alpha);
      const fb = Math.fround(beta);
      for (let t = 0; t < batch; ++t)
        for (let i = 0; i < m; ++i)
          for (let j = 0; j < n; ++j) {
            let s = 0;
            let mag = 0;
            for (let p = 0; p < k; ++p) {
              const x = A[offA + t * sA + (transA ? p * lda + i : i * lda + p)];
              const y = Bv[offB + (packed ? 0 : t * sB) + (transB ? j * ldb + p : p * ldb + j)];
              s += x * y;
              mag += Math.abs(x * y);
            }
            const o = offC + t * sC + i * ldc + j;
            const prior = fb !== 0 ? fb * C0[o] : 0;
            const bb = Bias ? Bias[offBias + j] : 0;
            const want = fa * s + prior + bb;
            const tol = 4 * 2 ** -24 * (2 + Math.sqrt(k)) * (Math.abs(fa) * mag + Math.abs(prior) + Math.abs(bb)) + 1e-30;
            if (!(Math.abs(c[o] - want) <= tol)) return `out[${o}] (item ${t}, ${i}, ${j}) is ${c[o]}, want ${want}`;
          }
      return null;
    });
  };
  return { name: 'raw-gemm', what, run };
}

function rawSoftmax(R) {
  const arena = new Arena(R);
  const rank = R.pick([1, 2, 2, 3, 4, 8]);
  const shape = Array.from({ length: rank }, () => (rank > 4 ? R.int(1, 2) : dim(R, 12)));
  const contiguousStrides = (s, pad) => {
    const st = new Array(s.length);
    let acc = 1;
    for (let d = s.length - 1; d >= 0; --d) {
      st[d] = acc;
      acc *= s[d] + (d === s.length - 1 ? pad : 0);
    }
    return st;
  };
  const extent = (s, st) => (s.some((d) => d === 0) ? 0 : 1 + s.reduce((p, d, i) => p + (d - 1) * st[i], 0));
  const xs = contiguousStrides(shape, R.pick([0, 0, 2]));
  const inPlace = R.chance(0.2);
  const ys = inPlace ? xs : contiguousStrides(shape, R.pick([0, 0, 1]));
  const maskKind = R.pick([0, 0, 1, 2]);
  const ms = shape.map((d, i) => (R.chance(0.4) || d === 1 ? 0 : i === rank - 1 ? 1 : null));
  // Mask strides: broadcast axes 0, the others contiguous over the kept axes.
  let acc = 1;
  for (let d = rank - 1; d >= 0; --d) {
    if (ms[d] === 0) continue;
    ms[d] = acc;
    acc *= shape[d];
  }
  const offX = R.int(0, 3);
  const offY = inPlace ? offX : R.int(0, 3);
  const offM = R.int(0, 3);
  const x = arena.f32(offX + extent(shape, xs));
  const y = inPlace ? x : arena.f32(offY + extent(shape, ys));
  const mExtent = extent(shape, ms);
  const m = maskKind === 1 ? arena.f32(offM + mExtent) : maskKind === 2 ? arena.u8(offM + mExtent) : null;
  const scale = R.pick([1, 0.5, 3, -1]);
  const causal = rank >= 2 && R.chance(0.3);
  const fields = { rank, scale, causal: +causal, streamOut: +R.chance(0.5), maskKind, xOffset: offX, outOffset: offY, maskOffset: offM, shape, xStrides: xs, outStrides: ys, maskStrides: maskKind ? ms : [] };
  let block = Float64Array.from(P.softmaxParams(fields));
  let valid = true;
  const args = [x, y, m];
  if (R.chance(0.35)) {
    valid = false;
    const what = R.pick(['slots', 'slots', 'array', 'alias', 'expanded']);
    if (what === 'slots') block = perturbBlock(R, block, R.int(1, 3));
    if (what === 'array') args[R.int(0, 2)] = wrongArray(R, x);
    if (what === 'alias') args[1] = m instanceof Float32Array ? m : x;
    if (what === 'expanded') block[P.PARAM_BLOCKS.softmax.indexOf(`outStrides[${R.int(0, rank - 1)}]`)] = 0;
  }
  const isAsync = R.chance(0.4);
  const what = `${isAsync ? 'async ' : ''}softmax ${JSON.stringify(fields)}${valid ? '' : ` perturbed: ${Array.from(block).join(',')}`}`;
  const run = () =>
    rawOutcome(R, arena, valid, isAsync, () => (isAsync ? native.softmaxAsync : native.softmax)(args[0], args[1], args[2], block), () => {
      const s = (name) => slot('softmax', block, name);
      const r = s('rank');
      const dims = Array.from({ length: Number.isSafeInteger(r) ? r : 0 }, (_, d) => d);
      return writes(args[1], dims.map((d) => s(`shape[${d}]`)), dims.map((d) => s(`outStrides[${d}]`)), s('outOffset'));
    }, (snap) => {
      if (!valid) return null;
      const X = new T(before(arena, snap, x), shape, { strides: xs, offset: offX });
      const M = m ? new T(before(arena, snap, m), shape, { strides: ms.map((s) => s ?? 0), offset: offM }) : undefined;
      const want = ref.softmaxRef(X, { scale, mask: M, causal });
      return compare(new T(y, shape, { strides: ys, offset: offY }), want, softmaxTolerance(X, scale, M), 'softmax');
    });
  return { name: 'raw-softmax', what, run };
}

function rawAttention(R) {
  const arena = new Arena(R);
  const [B, H, sq, sk] = [dim(R, 3), dim(R, 3), dim(R, 20), dim(R, 20)];
  const dk = dim(R, 12);
  const dv = dim(R, 12);
  const layout = (s, d) => {
    // [B, H, s, d] as a permutation of [B, s, H, d] or contiguous, rows padded.
    const pad = R.pick([0, 0, 3]);
    if (R.chance(0.5)) return [H * s * (d + pad), s * (d + pad), d + pad];
    return [s * H * (d + pad), d + pad, H * (d + pad)];
  };
  const extent4 = (shape, st) => (shape.some((x) => x === 0) ? 0 : 1 + shape.reduce((p, x, i) => p + (x - 1) * st[i], 0));
  const hasScores = R.chance(0.15);
  const hasWeights = !hasScores && R.chance(0.3) ? true : hasScores;
  const qs = layout(sq, dk);
  const ks = layout(sk, dk);
  const vs = layout(sk, dv);
  const os = layout(sq, dv);
  const off = () => R.int(0, 3);
  const [oq, okk, ov, oo, ow, osc, om, okp] = [off(), off(), off(), off(), off(), off(), off(), off()];
  const q = arena.f32(oq + extent4([B, H, sq, dk], [...qs, 1]));
  const k = arena.f32(okk + extent4([B, H, sk, dk], [...ks, 1]));
  const v = arena.f32(ov + extent4([B, H, sk, dv], [...vs, 1]));
  const out = arena.f32(oo + extent4([B, H, sq, dv], [...os, 1]));
  const full = B * H * sq * sk;
  const weights = hasWeights ? arena.f32(ow + full) : null;
  const scores = hasScores ? arena.f32(osc + full) : null;
  const maskKind = R.pick([0, 0, 1, 2]);
  const mst = [R.pick([0, H * sq * sk]), R.pick([0, sq * sk]), R.pick([0, sk]), R.pick([0, 1])];
  const mExtent = extent4([B, H, sq, sk], mst);
  const maskArr = maskKind === 1 ? arena.f32(om + mExtent) : maskKind === 2 ? arena.u8(om + mExtent) : null;
  const kpKind = R.pick([0, 0, 1, 2]);
  const kpStride = sk + R.pick([0, 1]);
  const kpExtent = B === 0 || sk === 0 ? 0 : (B - 1) * kpStride + sk;
  const kpArr = kpKind === 1 ? arena.f32(okp + kpExtent) : kpKind === 2 ? arena.u8(okp + kpExtent) : null;
  const causal = R.chance(0.3);
  const causalAlways = causal && R.chance(0.3) ? R.int(0, 3) : 0;
  const scale = R.pick([0.5, 1, 0.25]);
  const fields = {
    batch: B, heads: H, queries: sq, keys: sk, dk, dv,
    qStrides: qs, qOffset: oq, kStrides: ks, kOffset: okk, vStrides: vs, vOffset: ov, outStrides: os, outOffset: oo,
    scale, causal: +causal, causalAlways, maskKind, maskStrides: maskKind ? mst : [], maskOffset: om,
    keyPaddingKind: kpKind, keyPaddingBatchStride: kpStride, keyPaddingOffset: okp,
    hasWeights: +hasWeights, weightsOffset: ow, hasScores: +hasScores, scoresOffset: osc, sequences: 0,
  };
  let block = Float64Array.from(P.attentionParams(fields));
  let valid = true;
  const args = [q, k, v, out, maskArr, kpArr, weights, scores, null];
  if (R.chance(0.35)) {
    valid = false;
    const what = R.pick(['slots', 'slots', 'array', 'alias', 'headstride']);
    if (what === 'slots') block = perturbBlock(R, block, R.int(1, 3));
    if (what === 'array') args[R.int(0, 7)] = wrongArray(R, q);
    if (what === 'alias') args[3] = R.pick([q, k, v, weights ?? q]);
    if (what === 'headstride') block[P.PARAM_BLOCKS.attention.indexOf('outStrides[1]')] = 0;
  }
  const isAsync = R.chance(0.4);
  const what = `${isAsync ? 'async ' : ''}attention ${JSON.stringify(fields)}${valid ? '' : ` perturbed: ${Array.from(block).join(',')} args ${args.map((x) => (x && x.constructor ? x.constructor.name : String(x))).join(',')}`}`;
  const written = () => {
    const s = (name) => slot('attention', block, name);
    const count = s('batch') * s('heads') * s('queries') * s('keys');
    return [
      ...writes(args[3], [s('batch'), s('heads'), s('queries'), s('dv')], [s('outStrides[0]'), s('outStrides[1]'), s('outStrides[2]'), 1], s('outOffset')),
      ...(s('hasWeights') === 1 ? writes(args[6], [count], [1], s('weightsOffset')) : []),
    ];
  };
  const run = () =>
    rawOutcome(R, arena, valid, isAsync, () => (isAsync ? native.attentionAsync : native.attention)(...args, block), written, (snap) => {
      if (!valid) return null;
      const view = (a, shape, st, o) => new T(before(arena, snap, a), shape, { strides: [...st, 1], offset: o });
      const V = view(v, [B, H, sk, dv], vs, ov);
      const opts = { score: 'dot', scale, causal, causalAlways };
      if (maskArr) opts.attnMask = new T(before(arena, snap, maskArr), [B, H, sq, sk], { strides: mst, offset: om });
      if (kpArr) opts.keyPaddingMask = new T(before(arena, snap, kpArr), [B, sk], { strides: [kpStride, 1], offset: okp });
      let want;
      if (hasScores) {
        // Given scores: the reference sees them as queries against the identity (score (i, j) = scores[i][j]).
        const S = new T(before(arena, snap, scores), [B, H, sq, sk], { offset: osc, strides: [H * sq * sk, sq * sk, sk, 1] });
        const eye = T.zeros([sk, sk]);
        for (let j = 0; j < sk; ++j) eye.data[j * sk + j] = 1;
        want = ref.attentionRef(S, eye.expand([B, H, sk, sk]), V, { ...opts, scale: 1 });
      } else {
        want = ref.attentionRef(view(q, [B, H, sq, dk], qs, oq), view(k, [B, H, sk, dk], ks, okk), V, opts);
      }
      return (
        compare(new T(out, [B, H, sq, dv], { strides: [...os, 1], offset: oo }), want.output, 3e-5, 'output') ||
        (weights ? compare(new T(weights, [full], { offset: ow, strides: [1] }), want.weights, 3e-5, 'weights') : null)
      );
    });
  return { name: 'raw-attention', what, run };
}

function rawSmall(R) {
  const arena = new Arena(R);
  const op = R.pick(['copy', 'copy', 'l2', 'additive', 'fill', 'toFloat32', 'allocate']);
  const isAsync = R.chance(0.4) && (op === 'copy' || op === 'l2' || op === 'additive');
  let valid = !R.chance(0.3);
  let call;
  let written = () => [];
  let check = () => null;
  let what;
  if (op === 'copy') {
    const rank = R.int(0, 4);
    const shape = Array.from({ length: rank }, () => dim(R, 6));
    const perm = shape.map((_, i) => i).sort(() => R.next() - 0.5);
    const strides = (order) => {
      const st = new Array(rank);
      let acc = 1;
      for (let i = rank - 1; i >= 0; --i) {
        st[order[i]] = acc;
        acc *= shape[order[i]] + R.pick([0, 0, 1]);
      }
      return st;
    };
    const u8 = R.chance(0.3);
    const ss = strides(perm);
    const ds = strides(shape.map((_, i) => i));
    const ext = (st) => (shape.some((d) => d === 0) ? 0 : 1 + shape.reduce((p, d, i) => p + (d - 1) * st[i], 0));
    const [os, od] = [R.int(0, 3), R.int(0, 3)];
    const src = u8 ? arena.u8(os + ext(ss)) : arena.f32(os + ext(ss));
    const dst = u8 ? arena.u8(od + ext(ds)) : arena.f32(od + ext(ds));
    const streamOut = R.int(0, 1);
    let block = Float64Array.from(P.copyStridedParams({ rank, srcOffset: os, dstOffset: od, streamOut, shape, srcStrides: ss, dstStrides: ds }));
    const args = [src, dst];
    if (!valid) {
      if (R.chance(0.5)) block = perturbBlock(R, block, R.int(1, 3));
      else if (R.chance(0.5)) args[R.int(0, 1)] = wrongArray(R, src);
      else args[1] = src; // dst over src
    }
    what = `copyStrided ${JSON.stringify({ rank, shape, ss, ds, os, od, u8, streamOut })}${valid ? '' : ` perturbed: ${Array.from(block).join(',')}`}`;
    call = () => (isAsync ? native.copyStridedAsync : native.copyStrided)(args[0], args[1], block);
    written = () => {
      const s = (name) => slot('copyStrided', block, name);
      const r = s('rank');
      const dims = Array.from({ length: Number.isSafeInteger(r) ? r : 0 }, (_, d) => d);
      return writes(args[1], dims.map((d) => s(`shape[${d}]`)), dims.map((d) => s(`dstStrides[${d}]`)), s('dstOffset'));
    };
    check = (snap) => {
      if (!valid) return null;
      const s = before(arena, snap, src);
      const so = offsetsOf(shape, ss, os);
      const dof = offsetsOf(shape, ds, od);
      for (let i = 0; i < so.length; ++i) if (!Object.is(dst[dof[i]], s[so[i]])) return `dst[${dof[i]}] is ${dst[dof[i]]}, want ${s[so[i]]}`;
      return null;
    };
  } else if (op === 'l2') {
    const shape = [dim(R, 6), dim(R, 6), dim(R, 9)];
    const st = [shape[1] * (shape[2] + 2), shape[2] + 2, 1];
    const ext = shape.some((d) => d === 0) ? 0 : 1 + shape.reduce((p, d, i) => p + (d - 1) * st[i], 0);
    const n = shape.reduce((p, d) => p * d, 1);
    const [os, od] = [R.int(0, 3), R.int(0, 3)];
    const src = arena.f32(os + ext);
    const dst = arena.f32(od + n);
    const eps = valid ? 1e-8 : R.pick([0, -1, NaN, Infinity, 1e-8]);
    let block = Float64Array.from(P.l2NormalizeParams({ rank: 3, srcOffset: os, dstOffset: od, shape, srcStrides: st, eps }));
    if (!valid && R.chance(0.5)) block = perturbBlock(R, block, 2);
    what = `l2Normalize ${JSON.stringify({ shape, st, os, od, eps })}${valid ? '' : ` perturbed: ${Array.from(block).join(',')}`}`;
    call = () => (isAsync ? native.l2NormalizeAsync : native.l2Normalize)(src, dst, block);
    written = () => {
      const s = (name) => slot('l2Normalize', block, name);
      const r = s('rank');
      const count = Array.from({ length: Number.isSafeInteger(r) ? r : 0 }, (_, d) => s(`shape[${d}]`)).reduce((p, x) => p * x, 1);
      return writes(dst, [count], [1], s('dstOffset'));
    };
    check = (snap) => {
      if (!valid) return null;
      const X = new T(before(arena, snap, src), shape, { strides: st, offset: os });
      const xv = ref.values(X);
      const want = new Float64Array(n);
      const d = shape[2];
      for (let r = 0; d > 0 && r < n / d; ++r) {
        let s = 0;
        for (let j = 0; j < d; ++j) s += xv[r * d + j] ** 2;
        const norm = Math.max(Math.sqrt(s), 1e-8);
        for (let j = 0; j < d; ++j) want[r * d + j] = xv[r * d + j] / norm;
      }
      return compare(new T(dst, [n], { offset: od, strides: [1] }), want, 2e-6, 'l2Normalize');
    };
  } else if (op === 'additive') {
    const [B, H, sq, sk, hd] = [dim(R, 2), dim(R, 2), dim(R, 9), dim(R, 9), dim(R, 9)];
    const pst = [H * sq * (hd + 1), sq * (hd + 1), hd + 1];
    const kst = [H * sk * hd, sk * hd, hd];
    const ext = (s, st) => (s.some((x) => x === 0) ? 0 : 1 + s.reduce((p, x, i) => p + (x - 1) * (st[i] ?? 1), 0));
    const [op1, op2, ow, ob, osc] = [R.int(0, 2), R.int(0, 2), R.int(0, 2), R.int(0, 2), R.int(0, 2)];
    const pq = arena.f32(op1 + ext([B, H, sq, hd], [...pst, 1]));
    const pk = arena.f32(op2 + ext([B, H, sk, hd], [...kst, 1]));
    const w = arena.f32(ow + hd);
    const bias = R.chance(0.5) ? arena.f32(ob + hd) : null;
    const n = B * H * sq * sk;
    const scores = arena.f32(osc + n);
    let block = Float64Array.from(P.additiveScoresParams({ batch: B, heads: H, queries: sq, keys: sk, hidden: hd, pqStrides: pst, pqOffset: op1, pkStrides: kst, pkOffset: op2, wOffset: ow, biasOffset: ob, scoresOffset: osc }));
    const args = [pq, pk, w, bias, scores];
    if (!valid) {
      if (R.chance(0.5)) block = perturbBlock(R, block, R.int(1, 3));
      else args[4] = R.pick([pq, pk, w, wrongArray(R, pq)]);
    }
    what = `additiveScores ${JSON.stringify({ B, H, sq, sk, hd, bias: !!bias })}${valid ? '' : ` perturbed: ${Array.from(block).join(',')}`}`;
    call = () => (isAsync ? native.additiveScoresAsync : native.additiveScores)(...args, block);
    written = () => {
      const s = (name) => slot('additiveScores', block, name);
      return writes(args[4], [s('batch') * s('heads') * s('queries') * s('keys')], [1], s('scoresOffset'));
    };
    check = (snap) => {
      if (!valid) return null;
      const Q = before(arena, snap, pq);
      const K = before(arena, snap, pk);
      const W = before(arena, snap, w);
      const Bs = bias ? before(arena, snap, bias) : null;
      const want = new Float64Array(n);
      let o = 0;
      for (let b = 0; b < B; ++b)
        for (let h = 0; h < H; ++h)
          for (let i = 0; i < sq; ++i)
            for (let j = 0; j < sk; ++j) {
              let s = 0;
              for (let c = 0; c < hd; ++c) {
                const x = Q[op1 + b * pst[0] + h * pst[1] + i * pst[2] + c] + K[op2 + b * kst[0] + h * kst[1] + j * kst[2] + c] + (Bs ? Bs[ob + c] : 0);
                s += W[ow + c] * Math.tanh(x);
              }
              want[o++] = s;
            }
      return compare(new T(scores, [n], { offset: osc, strides: [1] }), want, 1e-5, 'additive scores');
    };
  } else if (op === 'fill') {
    const n = dim(R, 40);
    const off = R.int(0, 3);
    const dst = arena.f32(off + n);
    const dist = R.int(0, 1);
    let block = Float64Array.from(P.fillParams({ distribution: dist, seed: R.seed(), meanOrLow: -1, stdOrHigh: 2, dstOffset: off, count: n }));
    if (!valid) block = perturbBlock(R, block, R.int(1, 2));
    what = `fill ${Array.from(block).join(',')}`;
    call = () => native.fill(dst, block);
    written = () => writes(dst, [slot('fill', block, 'count')], [1], slot('fill', block, 'dstOffset'));
    check = () => {
      if (!valid) return null;
      const again = new Float32Array(n);
      const b2 = Float64Array.from(block);
      b2[4] = 0;
      native.fill(again, b2);
      for (let i = 0; i < n; ++i) if (!Object.is(again[i], dst[off + i]) || !Number.isFinite(dst[off + i])) return `fill element ${i}: ${dst[off + i]} vs ${again[i]}`;
      return null;
    };
  } else if (op === 'toFloat32') {
    const kind = R.int(0, 2);
    const n = dim(R, 20);
    const size = kind === 2 ? 8 : 2;
    const bytes = arena.u8(Math.max(0, n * size + (valid ? 0 : R.pick([1, -1, 0]))));
    for (let i = 0; i < bytes.length; ++i) bytes[i] = R.int(0, 255);
    const dst = arena.f32(n);
    const code = valid ? kind : R.pick([kind, 3, -1, 0.5, NaN]);
    what = `toFloat32 kind ${code} n ${n} bytes ${bytes.length}`;
    call = () => native.toFloat32(bytes, code, dst);
    written = () => [{ array: dst, offsets: offsetsOf([n], [1], 0) }];
    check = (snap) => {
      if (!valid) return null;
      const src = before(arena, snap, bytes);
      const dv = new DataView(src.buffer, src.byteOffset);
      for (let i = 0; i < n; ++i) {
        let want;
        if (kind === 2) want = Math.fround(dv.getFloat64(8 * i, true));
        else if (kind === 1) want = new Float32Array(new Uint32Array([dv.getUint16(2 * i, true) << 16]).buffer)[0];
        else {
          const h = dv.getUint16(2 * i, true);
          const e = (h >> 10) & 31;
          const f = h & 1023;
          const sgn = h & 0x8000 ? -1 : 1;
          want = e === 31 ? (f ? NaN : sgn * Infinity) : e === 0 ? sgn * f * 2 ** -24 : sgn * (1 + f / 1024) * 2 ** (e - 15);
        }
        if (!(Object.is(dst[i], want) || (Number.isNaN(want) && Number.isNaN(dst[i])))) return `element ${i}: ${dst[i]}, want ${want}`;
      }
      return null;
    };
  } else {
    const bytes = valid ? R.pick([1, 100, 65536, 1 << 20]) : R.pick([0, -1, 0.5, 2 ** 53, NaN, '8', 1e15]);
    const zero = valid ? R.chance(0.5) : R.pick([true, 0, 'yes']);
    what = `allocate ${bytes} ${JSON.stringify(zero)}`;
    call = () => native.allocate(bytes, zero);
    check = (snap, ab) => {
      if (!valid) return null;
      if (!(ab instanceof ArrayBuffer) || ab.byteLength !== bytes) return `allocate gave ${ab && ab.byteLength} bytes, want ${bytes}`;
      if (zero && new Uint8Array(ab).some((x) => x !== 0)) return 'allocate(zero) gave memory that is not zero';
      return null;
    };
  }
  return { name: `raw-${op}`, what: `${isAsync ? 'async ' : ''}${what}`, run: () => rawOutcome(R, arena, valid, isAsync, call, written, check) };
}

/**
 * chain(callback): a run of contiguous copies, each reading what the one
 * before wrote (src -> owned 1 -> owned 2 ...), made inside one callback; at
 * random one call is invalid, the callback throws, a copy writes memory the
 * addon does not own (refused), or chain gets no function; or one copy is
 * made inside a nested chain (it joins the outer one). Every Promise made
 * must settle; the calls queued before a failure resolve, in order, with the
 * values the copies carry along.
 */
function rawChain(R) {
  const n = R.int(1, 40);
  const steps = R.int(1, 5);
  const src = new Float32Array(n).map(() => R.normal());
  const owned = Array.from({ length: steps }, () => new Float32Array(native.allocate(n * 4, false)));
  const fault = R.pick(['none', 'none', 'none', 'badParams', 'throws', 'plainOut', 'nested', 'notFunction']);
  const at = R.int(0, steps - 1);
  const block = () => Float64Array.from(P.copyStridedParams({ rank: 1, srcOffset: 0, dstOffset: 0, streamOut: 0, shape: [n], srcStrides: [1], dstStrides: [1] }));
  const what = `chain of ${steps} copies of ${n} elements, fault ${fault} at ${at}`;
  const run = async () => {
    const made = [];
    let thrown = null;
    try {
      native.chain(
        fault === 'notFunction'
          ? R.pick([undefined, 1, {}])
          : () => {
              for (let i = 0; i < steps; ++i) {
                const from = i === 0 ? src : owned[i - 1];
                if (i === at && fault === 'badParams') made.push(native.copyStridedAsync(from, owned[i], Float64Array.from([1, 2])));
                if (i === at && fault === 'throws') throw new RangeError('thrown by the callback');
                if (i === at && fault === 'plainOut') made.push(native.copyStridedAsync(from, new Float32Array(n), block()));
                if (i === at && fault === 'nested') {
                  if (native.chain(() => made.push(native.copyStridedAsync(from, owned[i], block()))) !== 0) throw new Error('a nested chain queued its calls itself');
                  continue;
                }
                made.push(native.copyStridedAsync(from, owned[i], block()));
              }
            },
      );
    } catch (e) {
      thrown = e;
    }
    const settled = await Promise.allSettled(made);
    if (fault === 'none' || fault === 'nested') {
      if (thrown) return `a valid chain threw ${describeError(thrown)}`;
      const bad = settled.find((s) => s.status === 'rejected');
      if (bad) return `a valid chained call rejected: ${describeError(bad.reason)}`;
      for (let i = 0; i < n; ++i) if (!Object.is(owned[steps - 1][i], src[i])) return `element ${i} is ${owned[steps - 1][i]} after the chain, want ${src[i]}`;
      return null;
    }
    if (!thrown) return `a chain with fault ${fault} did not throw`;
    if (fault === 'throws' ? thrown.message !== 'thrown by the callback' : !(thrown instanceof Error) || !thrown.message) {
      return `a chain with fault ${fault} threw ${describeError(thrown)}`;
    }
    if (fault === 'notFunction' && !(thrown instanceof TypeError)) return `chain(not a function) threw ${describeError(thrown)}, expected a TypeError`;
    // What was queued before the fault ran and resolved.
    const want = fault === 'notFunction' ? 0 : at;
    if (made.length !== want || settled.some((s) => s.status === 'rejected')) return `calls queued before the fault: ${made.length} made, want ${want}, states ${settled.map((s) => s.status)}`;
    for (let j = 0; j < want; ++j) {
      for (let i = 0; i < n; ++i) if (!Object.is(owned[j][i], src[i])) return `copy ${j} element ${i} is ${owned[j][i]}, want ${src[i]}`;
    }
    return null;
  };
  return { name: 'raw-chain', what, run };
}

// ------------------------------------------------------------ the mix

const GENERATORS = [
  [pubMatmul, 10],
  [pubSoftmax, 8],
  [pubAttention, 10],
  [pubMultihead, 4],
  [pubTensor, 6],
  [pubSafetensors, 6],
  [pubDetach, 4],
  [pubHuge, 4],
  [rawGemm, 12],
  [rawSoftmax, 10],
  [rawAttention, 12],
  [rawSmall, 12],
  [rawChain, 4],
];
const TOTAL = GENERATORS.reduce((s, [, w]) => s + w, 0);

function makeCase(seed, i) {
  const R = new Rng(mix(seed, i));
  let x = R.next() * TOTAL;
  for (const [gen, w] of GENERATORS) {
    if ((x -= w) < 0) return gen(R);
  }
  return GENERATORS[0][0](R);
}

module.exports = { makeCase };
