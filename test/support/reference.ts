// Float64 reference implementations, written for clarity rather than speed,
// and comparison helpers that say where and by how much a result is off.
import { expect } from 'vitest';
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

/**
 * Asserts |got - want| <= tol[i] everywhere (NaN must match NaN), reporting
 * the worst element.
 */
export function expectClose(got: Tensor, want: Float64Array, tol: number | Float64Array, label = ''): void {
  const g = values(got);
  expect(g.length, `${label} length`).toBe(want.length);
  let worst = -1;
  let worstRatio = 0;
  for (let i = 0; i < g.length; ++i) {
    const w = want[i];
    if (Number.isNaN(w)) {
      if (!Number.isNaN(g[i])) {
        worst = i;
        worstRatio = Infinity;
        break;
      }
      continue;
    }
    const t = typeof tol === 'number' ? tol : tol[i];
    const err = Math.abs(g[i] - w);
    const ratio = err / t;
    if (!(err <= t) && (ratio > worstRatio || Number.isNaN(err))) {
      worst = i;
      worstRatio = Number.isNaN(err) ? Infinity : ratio;
    }
  }
  if (worst >= 0) {
    const t = typeof tol === 'number' ? tol : tol[worst];
    expect.fail(
      `${label} element ${worst}: got ${g[worst]}, want ${want[worst]} (error ${Math.abs(g[worst] - want[worst])}, tolerance ${t})`,
    );
  }
}

/** The float32 GEMM tolerance: a few units of rounding in each accumulated term. */
export function gemmTolerance(ref: RefResult, k: number): Float64Array {
  const tol = new Float64Array(ref.magnitude.length);
  const factor = 4 * 2 ** -24 * (2 + Math.sqrt(Math.max(k, 1)));
  for (let i = 0; i < tol.length; ++i) tol[i] = factor * ref.magnitude[i] + 1e-30;
  return tol;
}

/** Bitwise equality of two float32 tensors' data (contiguous). */
export function expectBitwiseEqual(a: Tensor, b: Tensor, label = ''): void {
  const x = new Uint32Array(values(a).length);
  const y = new Uint32Array(values(b).length);
  const av = new Float32Array(values(a));
  const bv = new Float32Array(values(b));
  x.set(new Uint32Array(av.buffer));
  y.set(new Uint32Array(bv.buffer));
  for (let i = 0; i < x.length; ++i) {
    if (x[i] !== y[i]) expect.fail(`${label} differs at element ${i}: ${av[i]} vs ${bv[i]}`);
  }
}
