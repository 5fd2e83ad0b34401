import { afterAll, describe, expect, test } from 'vitest';
import { MultiHeadAttention, Tensor, attention, attentionAsync, getNumThreads, matmul, setNumThreads, softmax, softmaxAsync } from '../src';
import { attentionRef, expectClose, multiheadRef, softmaxRef, values } from './support/reference';

// Peaky data: large logits push exp far below 2^-126. Inside the kernels such
// results are zeros (flush-to-zero), which keeps the speed independent of the
// data and moves results by less than the smallest normal float; the caller's
// floating-point environment is left as it was.
let seed = 2000;
const rand = (shape: number[], std = 1) => Tensor.randn(shape, { seed: seed++, std });
const SMALLEST_NORMAL = 2 ** -126;

const initial = getNumThreads();
afterAll(() => setNumThreads(initial));

function expectNoSubnormals(t: Tensor, label: string): void {
  const v = t.data as Float32Array;
  for (let i = 0; i < v.length; ++i) {
    if (v[i] !== 0 && Math.abs(v[i]) < SMALLEST_NORMAL) expect.fail(`${label}: element ${i} is subnormal (${v[i]})`);
  }
}

/** True when this (the JS) thread keeps subnormals: double -> float32 conversion and double arithmetic. */
function jsKeepsSubnormals(): boolean {
  const tiny = [1e-40, 1e-310];
  const f32 = new Float32Array(1);
  f32[0] = tiny[0]; // cvtsd2ss: flushed to 0 under FTZ
  const d = tiny[1] * 1.5; // subnormal operand and result: 0 under DAZ or FTZ
  return f32[0] !== 0 && d !== 0;
}

describe('peaky data against float64 references', () => {
  test('softmax of logits with std 30: within the usual tolerance, no subnormal results', () => {
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      for (const cols of [7, 64, 333, 1000]) {
        const x = rand([67, cols], 30);
        const y = softmax(x);
        expectClose(y, softmaxRef(x), 2e-6, `threads=${threads} cols=${cols}`);
        expectNoSubnormals(y, `softmax cols=${cols}`);
        // Masked and scaled (the other exp path): z = 0.9 x + mask is rounded
        // to float32 first, an error of up to 2^-24 |z| in each logit that
        // moves a weight p by p times that.
        const mask = rand([cols], 1);
        const want = softmaxRef(x, { mask, scale: 0.9 });
        const zmax = Math.max(...values(x).map(Math.abs)) * 0.9 + Math.max(...values(mask).map(Math.abs));
        const tol = want.map((p) => 2e-6 + 2 * 2 ** -24 * zmax * p);
        expectClose(softmax(x, { mask, scale: 0.9 }), want, tol, `masked cols=${cols}`);
      }
    }
  });

  test('attention with q and k of std 4, fused and explicit paths', () => {
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      for (const [B, H, Sq, Sk, d] of [
        [2, 2, 70, 131, 64],
        [1, 3, 3, 300, 32], // the decode path (few queries)
        [1, 1, 130, 130, 64],
      ]) {
        const q = rand([B, H, Sq, d], 4);
        const k = rand([B, H, Sk, d], 4);
        const v = rand([B, H, Sk, d]);
        for (const causal of [false, true]) {
          const ref = attentionRef(q, k, v, { causal });
          // Scores of magnitude ~100 carry float32 rounding of ~1e-5 into the weights.
          const label = `threads=${threads} ${B}x${H}x${Sq}x${Sk} causal=${causal}`;
          expectClose(attention(q, k, v, { causal }).output, ref.output, 5e-5, `${label} fused`);
          const ex = attention(q, k, v, { causal, needWeights: true });
          expectClose(ex.output, ref.output, 5e-5, `${label} explicit`);
          expectNoSubnormals(ex.weights!, `${label} weights`);
        }
      }
    }
  });

  test('multi-head attention on inputs of std 6', () => {
    const m = new MultiHeadAttention({ embedDim: 64, numHeads: 4, seed: 3 });
    for (const t of [m.inProjBias!, m.outProjBias!]) t.assign(rand(t.shape as number[], 0.1));
    const x = rand([2, 37, 64], 6);
    const ref = multiheadRef(m.stateDict(), 4, x, x, x);
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      const r = m.forward(x, undefined, undefined, { needWeights: true, averageWeights: false });
      expectClose(r.output, ref.output, 1e-4, `threads=${threads} output`);
      expectClose(r.weights!, ref.weights, 2e-5, `threads=${threads} weights`);
      expectClose(m.forward(x).output, ref.output, 1e-4, `threads=${threads} fused output`);
    }
  });
});

describe('flush-to-zero inside the kernels only', () => {
  test('GEMM results that would be subnormal are zeros; subnormal operands read as zeros', () => {
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      const a = Tensor.full([150, 70], 1e-20);
      const b = Tensor.full([70, 160], 1e-20);
      const c = matmul(a, b); // every product 1e-40 is subnormal in float32
      expect(values(c).every((x) => x === 0)).toBe(true);
      const sub = Tensor.full([3, 5], 1e-39); // subnormal float32 operands
      expect(values(matmul(sub, Tensor.full([5, 2], 1e10))).every((x) => x === 0)).toBe(true);
    }
  });

  test("the caller's floating-point environment is untouched", async () => {
    expect(jsKeepsSubnormals()).toBe(true);
    const x = rand([64, 300], 30);
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      softmax(x);
      expect(jsKeepsSubnormals()).toBe(true);
      matmul(rand([130, 90]), rand([90, 120]));
      expect(jsKeepsSubnormals()).toBe(true);
      const q = rand([1, 2, 100, 16], 4);
      attention(q, q, q);
      attention(q, q, q, { needWeights: true });
      expect(jsKeepsSubnormals()).toBe(true);
      await softmaxAsync(x);
      await attentionAsync(q, q, q);
      expect(jsKeepsSubnormals()).toBe(true);
    }
  });
});
