// Float64 reference implementations (float64.ts) and comparison helpers that
// say where and by how much a result is off.
import { expect } from 'vitest';
import { Tensor } from '../../src';
import { values } from './float64';

export * from './float64';

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
