// Float64 reference implementations, written for clarity rather than speed.
// No test framework here: the fuzz harness (test/fuzz) uses them outside
// vitest; reference.ts adds the comparison helpers.
import { Tensor } from '../../src';

/** Row-major float64 copy of any (strided) tensor. */
export function values(t: Tensor): Float64Array {
  const out = new Float64Array(t.size);
  const idx = new Array<number>(t.rank).fill(0);
  for (let i = 0; i < out.length; ++i) {
    let off = t.offset;
    for (let d = 0; d < t.rank; ++d) off += idx[d] * t.strides[d];
    out[i] = t.data[off];
    for (let d = t.rank - 1; d >= 0; --d) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

export interface RefResult {
  shape: number[];
  value: Float64Array;
  /** Per element: the sum of |terms|, which bounds float32 rounding error. */
  magnitude: Float64Array;
}

/** alpha · op(a) · op(b) + beta · c with the same batch rules as matmul. */
export function matmulRef(
  a: Tensor,
  b: Tensor,
  opts: { transposeA?: boolean; transposeB?: boolean; alpha?: number; beta?: number; c?: Tensor } = {},
): RefResult {
  const av = values(a);
  const bv = values(b);
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const m = opts.transposeA ? ac : ar;
  const k = opts.transposeA ? ar : ac;
  const n = opts.transposeB ? br : bc;
  const batchShape = a.rank > 2 ? a.shape.slice(0, -2) : b.shape.slice(0, -2);
  const batch = batchShape.reduce((p, d) => p * d, 1);
  const alpha = opts.alpha ?? 1;
  const beta = opts.beta ?? 0;
  const cv = opts.c ? values(opts.c) : null;
  const value = new Float64Array(batch * m * n);
  const magnitude = new Float64Array(batch * m * n);
  for (let t = 0; t < batch; ++t) {
    const ao = a.rank > 2 ? t * ar * ac : 0;
    const bo = b.rank > 2 ? t * br * bc : 0;
    for (let i = 0; i < m; ++i) {
      for (let j = 0; j < n; ++j) {
        let s = 0;
        let mag = 0;
        for (let p = 0; p < k; ++p) {
          const x = opts.transposeA ? av[ao + p * ac + i] : av[ao + i * ac + p];
          const y = opts.transposeB ? bv[bo + j * bc + p] : bv[bo + p * bc + j];
          s += x * y;
          mag += Math.abs(x * y);
        }
        const o = t * m * n + i * n + j;
        const prior = cv && beta !== 0 ? beta * cv[o] : 0;
        value[o] = alpha * s + prior;
        magnitude[o] = Math.abs(alpha) * mag + Math.abs(prior);
      }
    }
  }
  return { shape: [...batchShape, m, n], value, magnitude };
}

/** softmax(scale · x + mask) along the last axis, with the package's conventions. */
export function softmaxRef(
  x: Tensor,
  opts: { scale?: number; mask?: Tensor; causal?: boolean } = {},
): Float64Array {
  const xv = values(x);
  const cols = x.shape[x.rank - 1];
  const rowsPerBlock = x.rank >= 2 ? x.shape[x.rank - 2] : 1;
  const rows = cols === 0 ? 0 : xv.length / cols;
  const scale = opts.scale ?? 1;
  // Broadcast the mask to x's shape.
  let maskValues: Float64Array | null = null;
  if (opts.mask) {
    const m = opts.mask.expand(x.shape);
    maskValues = values(m);
  }
  const isU8 = opts.mask?.dtype === 'uint8';
  const out = new Float64Array(xv.length);
  for (let r = 0; r < rows; ++r) {
    const i = r % rowsPerBlock;
    const valid = opts.causal ? i + cols - rowsPerBlock + 1 : cols;
    const z = new Float64Array(cols);
    let max = -Infinity;
    let nan = false;
    for (let j = 0; j < cols; ++j) {
      let v = Math.fround(scale * xv[r * cols + j]);
      if (maskValues) {
        const mv = maskValues[r * cols + j];
        v = isU8 ? (mv !== 0 ? -Infinity : v) : v + mv;
      }
      if (j >= valid) v = -Infinity;
      z[j] = v;
      if (Number.isNaN(v)) nan = true;
      if (v > max) max = v;
    }
    if (nan || max === Infinity) {
      out.fill(NaN, r * cols, (r + 1) * cols);
      continue;
    }
    if (max === -Infinity) continue; // all masked: zeros
    let sum = 0;
    for (let j = 0; j < cols; ++j) sum += z[j] === -Infinity ? 0 : Math.exp(z[j] - max);
    for (let j = 0; j < cols; ++j) out[r * cols + j] = z[j] === -Infinity ? 0 : Math.exp(z[j] - max) / sum;
  }
  return out;
}

/** The float32 GEMM tolerance: a few units of rounding in each accumulated term. */
export function gemmTolerance(ref: RefResult, k: number): Float64Array {
  const tol = new Float64Array(ref.magnitude.length);
  const factor = 4 * 2 ** -24 * (2 + Math.sqrt(Math.max(k, 1)));
  for (let i = 0; i < tol.length; ++i) tol[i] = factor * ref.magnitude[i] + 1e-30;
  return tol;
}

// ---------------------------------------------------------------- attention

export interface AttentionRefOptions {
  score?: 'scaled_dot' | 'dot' | 'cosine' | 'additive';
  scale?: number;
  attnMask?: Tensor;
  keyPaddingMask?: Tensor;
  causal?: boolean;
  /** With causal: the first causalAlways keys are seen by every query. */
  causalAlways?: number;
  additive?: { wq: Tensor; wk: Tensor; w: Tensor; bias?: Tensor };
}

/** Float64 attention over [..., S, d] tensors (rank 2 to 4): returns output and weights, row-major. */
export function attentionRef(q: Tensor, k: Tensor, v: Tensor, opts: AttentionRefOptions = {}): { output: Float64Array; weights: Float64Array } {
  const r = q.rank;
  const sq = q.shape[r - 2];
  const sk = k.shape[r - 2];
  const dq = q.shape[r - 1];
  const dk = k.shape[r - 1];
  const dv = v.shape[r - 1];
  const lead = q.shape.slice(0, -2);
  const B = r === 4 ? lead[0] : r === 3 ? lead[0] : 1;
  const H = r === 4 ? lead[1] : 1;
  const qv = values(q);
  const kv = values(k);
  const vv = values(v);
  const score = opts.score ?? 'scaled_dot';
  const scale = opts.scale ?? (score === 'scaled_dot' ? 1 / Math.sqrt(dk) : 1);
  const mask = opts.attnMask ? values(opts.attnMask.expand([...lead, sq, sk])) : null;
  const maskU8 = opts.attnMask?.dtype === 'uint8';
  const kpm = opts.keyPaddingMask ? values(opts.keyPaddingMask) : null;
  const kpmU8 = opts.keyPaddingMask?.dtype === 'uint8';
  const add = opts.additive ? { wq: values(opts.additive.wq), wk: values(opts.additive.wk), w: values(opts.additive.w), bias: opts.additive.bias ? values(opts.additive.bias) : null } : null;
  const hidden = add ? opts.additive!.w.shape[0] : 0;
  const output = new Float64Array(B * H * sq * dv);
  const weights = new Float64Array(B * H * sq * sk);
  const norm = (x: Float64Array, off: number, d: number) => {
    let s = 0;
    for (let c = 0; c < d; ++c) s += x[off + c] ** 2;
    return Math.max(Math.sqrt(s), 1e-8);
  };
  for (let b = 0; b < B; ++b)
    for (let h = 0; h < H; ++h) {
      const bh = b * H + h;
      for (let i = 0; i < sq; ++i) {
        const qo = (bh * sq + i) * dq;
        const z = new Float64Array(sk);
        let max = -Infinity;
        for (let j = 0; j < sk; ++j) {
          const ko = (bh * sk + j) * dk;
          let s = 0;
          if (add) {
            for (let c = 0; c < hidden; ++c) {
              let pq = add.bias ? add.bias[c] : 0;
              for (let x = 0; x < dq; ++x) pq += add.wq[c * dq + x] * qv[qo + x];
              let pk = 0;
              for (let x = 0; x < dk; ++x) pk += add.wk[c * dk + x] * kv[ko + x];
              s += add.w[c] * Math.tanh(pq + pk);
            }
          } else {
            for (let c = 0; c < dk; ++c) s += qv[qo + c] * kv[ko + c];
            if (score === 'cosine') s /= norm(qv, qo, dq) * norm(kv, ko, dk);
            s *= scale;
          }
          const mi = ((bh * sq) + i) * sk + j;
          if (mask) s = maskU8 ? (mask[mi] !== 0 ? -Infinity : s) : s + mask[mi];
          if (kpm) {
            const m = kpm[b * sk + j];
            s = kpmU8 ? (m !== 0 ? -Infinity : s) : s + m;
          }
          if (opts.causal && j > i + sk - sq && j >= (opts.causalAlways ?? 0)) s = -Infinity;
          z[j] = s;
          if (s > max) max = s;
        }
        const wo = (bh * sq + i) * sk;
        if (max === -Infinity) continue;
        let sum = 0;
        for (let j = 0; j < sk; ++j) sum += z[j] === -Infinity ? 0 : Math.exp(z[j] - max);
        for (let j = 0; j < sk; ++j) weights[wo + j] = z[j] === -Infinity ? 0 : Math.exp(z[j] - max) / sum;
        for (let c = 0; c < dv; ++c) {
          let o = 0;
          for (let j = 0; j < sk; ++j) o += weights[wo + j] * vv[(bh * sk + j) * dv + c];
          output[(bh * sq + i) * dv + c] = o;
        }
      }
    }
  return { output, weights };
}

/** Float64 multi-head attention with PyTorch's parameter names (batch-first, [B, L, E] inputs). */
export function multiheadRef(
  sd: Record<string, Tensor>,
  numHeads: number,
  query: Tensor,
  key: Tensor,
  value: Tensor,
  opts: { attnMask?: Tensor; keyPaddingMask?: Tensor; causal?: boolean } = {},
): { output: Float64Array; weights: Float64Array } {
  const [B, L, E] = query.shape;
  const S = key.shape[1];
  const d = E / numHeads;
  const proj = (x: Tensor, w: Float64Array, wOff: number, inDim: number, b: Float64Array | null, bOff: number, rows: number) => {
    const xv = values(x);
    const out = new Float64Array(B * rows * E);
    for (let t = 0; t < B * rows; ++t)
      for (let o = 0; o < E; ++o) {
        let s = b ? b[bOff + o] : 0;
        for (let c = 0; c < inDim; ++c) s += xv[t * inDim + c] * w[wOff + o * inDim + c];
        out[t * E + o] = s;
      }
    return out;
  };
  const bias = sd.in_proj_bias ? values(sd.in_proj_bias) : null;
  let q: Float64Array, k: Float64Array, v: Float64Array;
  if (sd.in_proj_weight) {
    const w = values(sd.in_proj_weight);
    q = proj(query, w, 0, E, bias, 0, L);
    k = proj(key, w, E * E, E, bias, E, S);
    v = proj(value, w, 2 * E * E, E, bias, 2 * E, S);
  } else {
    q = proj(query, values(sd.q_proj_weight), 0, E, bias, 0, L);
    k = proj(key, values(sd.k_proj_weight), 0, key.shape[2], bias, E, S);
    v = proj(value, values(sd.v_proj_weight), 0, value.shape[2], bias, 2 * E, S);
  }
  // [B, S, h, d] -> [B, h, S, d]
  const heads = (x: Float64Array, rows: number) => {
    const out = new Float32Array(B * numHeads * rows * d);
    for (let b = 0; b < B; ++b)
      for (let s = 0; s < rows; ++s)
        for (let h = 0; h < numHeads; ++h)
          for (let c = 0; c < d; ++c) out[((b * numHeads + h) * rows + s) * d + c] = x[(b * rows + s) * E + h * d + c];
    return new Tensor(out, [B, numHeads, rows, d]);
  };
  // The float32 rounding of the projected heads is far below the tolerance.
  const att = attentionRef(heads(q, L), heads(k, S), heads(v, S), {
    attnMask: opts.attnMask,
    keyPaddingMask: opts.keyPaddingMask,
    causal: opts.causal,
  });
  const merged = new Float64Array(B * L * E);
  for (let b = 0; b < B; ++b)
    for (let h = 0; h < numHeads; ++h)
      for (let s = 0; s < L; ++s)
        for (let c = 0; c < d; ++c) merged[(b * L + s) * E + h * d + c] = att.output[((b * numHeads + h) * L + s) * d + c];
  const wo = values(sd['out_proj.weight']);
  const bo = sd['out_proj.bias'] ? values(sd['out_proj.bias']) : null;
  const output = new Float64Array(B * L * E);
  for (let t = 0; t < B * L; ++t)
    for (let o = 0; o < E; ++o) {
      let s = bo ? bo[o] : 0;
      for (let c = 0; c < E; ++c) s += merged[t * E + c] * wo[o * E + c];
      output[t * E + o] = s;
    }
  return { output, weights: att.weights };
}

// ---------------------------------------------------------------- layers

/** erfc(x) in float64: the Maclaurin series below 2.5 (1 - erf), a Lentz continued fraction above (relative error ~1e-14). */
export function erfcRef(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfcRef(-x);
  if (x < 2.5) {
    let term = x;
    let sum = x;
    for (let n = 1; n < 200 && Math.abs(term) > 1e-18 * Math.abs(sum); ++n) {
      term *= (-x * x) / n;
      sum += term / (2 * n + 1);
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * sum;
  }
  if (x > 27) return 0;
  // erfc(x) = e^(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + 2 / (x + ...)))))
  let f = x;
  let c = x;
  let d = 0;
  for (let n = 1; n < 500; ++n) {
    const a = n / 2;
    d = x + a * d;
    d = 1 / d;
    c = x + a / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
}

export const erfRef = (x: number): number => 1 - erfcRef(x);
/** GELU, x Φ(x) = x erfc(-x / √2) / 2. */
export const geluRef = (x: number): number => (x === -Infinity ? -0 : 0.5 * x * erfcRef(-x / Math.SQRT2));
/** GELU's tanh form, 0.5 x (1 + tanh(y)) = x / (1 + e^(-2y)), y = √(2/π) (x + 0.044715 x³). */
export const geluTanhRef = (x: number): number => {
  if (x === -Infinity) return -0;
  const y = Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3);
  return x / (1 + Math.exp(-2 * y));
};

/**
 * LayerNorm along the last axis in float64 of z = x + residual + inputBias
 * (residual broadcast to x's shape), two-pass statistics.
 */
export function layerNormRef(
  x: Tensor,
  opts: { weight?: Tensor; bias?: Tensor; eps?: number; residual?: Tensor; inputBias?: Tensor } = {},
): Float64Array {
  const xv = values(x);
  const n = x.shape[x.rank - 1];
  const rv = opts.residual ? values(opts.residual.expand(x.shape)) : null;
  const g = opts.weight ? values(opts.weight) : null;
  const b = opts.bias ? values(opts.bias) : null;
  const s = opts.inputBias ? values(opts.inputBias) : null;
  const eps = opts.eps ?? 1e-5;
  const out = new Float64Array(xv.length);
  for (let r = 0; r * n < xv.length; ++r) {
    const z = new Float64Array(n);
    let mean = 0;
    for (let j = 0; j < n; ++j) {
      z[j] = xv[r * n + j] + (rv ? rv[r * n + j] : 0) + (s ? s[j] : 0);
      mean += z[j];
    }
    mean /= n;
    let v = 0;
    for (let j = 0; j < n; ++j) v += (z[j] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / n + eps);
    for (let j = 0; j < n; ++j) out[r * n + j] = (z[j] - mean) * rstd * (g ? g[j] : 1) + (b ? b[j] : 0);
  }
  return out;
}
