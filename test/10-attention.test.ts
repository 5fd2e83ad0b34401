import { describe, expect, test } from 'vitest';
import { Tensor, attention, attentionAsync } from '../src';
import { attentionRef, expectBitwiseEqual, expectClose, values } from './support/reference';

let seed = 500;
const rand = (shape: number[], std = 1) => Tensor.randn(shape, { seed: seed++, std });
const TOL = 2e-5;

function check(q: Tensor, k: Tensor, v: Tensor, opts: Parameters<typeof attention>[3] = {}, label = '') {
  const got = attention(q, k, v, { ...opts, needWeights: true });
  const ref = attentionRef(q, k, v, opts as never);
  expect(got.output.shape).toEqual([...q.shape.slice(0, -1), v.shape[v.rank - 1]]);
  expect(got.weights!.shape).toEqual([...q.shape.slice(0, -1), k.shape[k.rank - 2]]);
  expectClose(got.output, ref.output, TOL, `${label} output`);
  expectClose(got.weights!, ref.weights, TOL, `${label} weights`);
  // Without weights: the same output.
  const noWeights = attention(q, k, v, opts);
  expect(noWeights.weights).toBeUndefined();
  expectClose(noWeights.output, ref.output, TOL, `${label} output without weights`);
  return got;
}

describe('attention: the three stages against a float64 reference', () => {
  test('scaled dot product, ranks 2, 3 and 4, awkward sizes', () => {
    check(rand([7, 16]), rand([5, 16]), rand([5, 9]), {}, 'rank 2');
    check(rand([3, 1, 33]), rand([3, 17, 33]), rand([3, 17, 5]), {}, 'rank 3, one query');
    check(rand([2, 3, 70, 19]), rand([2, 3, 83, 19]), rand([2, 3, 83, 23]), {}, 'rank 4, crosses the 64-query block');
    check(rand([1, 1, 1, 1]), rand([1, 1, 1, 1]), rand([1, 1, 1, 1]), {}, 'all ones');
  });

  test('dot, with and without a scale', () => {
    check(rand([2, 9, 8]), rand([2, 11, 8]), rand([2, 11, 8]), { score: 'dot' }, 'dot');
    check(rand([2, 9, 8]), rand([2, 11, 8]), rand([2, 11, 8]), { score: 'dot', scale: 0.3 }, 'dot scaled');
    check(rand([4, 16]), rand([6, 16]), rand([6, 3]), { scale: 2 }, 'scaled_dot with explicit scale');
  });

  test('cosine similarity, with a scale (temperature)', () => {
    const q = rand([2, 2, 5, 12], 3);
    const k = rand([2, 2, 7, 12], 0.1);
    const got = check(q, k, rand([2, 2, 7, 4]), { score: 'cosine' }, 'cosine');
    check(q, k, rand([2, 2, 7, 4]), { score: 'cosine', scale: 10 }, 'cosine scaled');
    // Cosine scores ignore the vectors' lengths.
    const doubled = attention(q.clone(), k.clone(), rand([2, 2, 7, 4]), { score: 'cosine', needWeights: true });
    const qv = q.clone();
    for (let i = 0; i < qv.data.length; ++i) qv.data[i] *= 4;
    const scaled = attention(qv, k, rand([2, 2, 7, 4]), { score: 'cosine', needWeights: true });
    expectClose(scaled.weights!, values(doubled.weights!), 1e-6, 'length-invariant');
    expect(got.weights!.shape).toEqual([2, 2, 5, 7]);
    // A zero vector scores 0 against everything (no NaN).
    const zq = Tensor.zeros([1, 3]);
    const zr = attention(zq, rand([4, 3]), rand([4, 2]), { score: 'cosine', needWeights: true });
    expect(Array.from(zr.weights!.data)).toEqual([0.25, 0.25, 0.25, 0.25]);
  });

  test('additive (w · tanh(W_q q + W_k k + b)), with different query and key sizes', () => {
    const q = rand([2, 6, 10]);
    const k = rand([2, 9, 7]);
    const v = rand([2, 9, 5]);
    const additive = { wq: rand([13, 10], 0.5), wk: rand([13, 7], 0.5), w: rand([13]), bias: rand([13], 0.1) };
    check(q, k, v, { score: 'additive', additive }, 'additive');
    const { bias, ...noBias } = additive;
    expect(bias.shape).toEqual([13]);
    check(q, k, v, { score: 'additive', additive: noBias, causal: true }, 'additive, no bias, causal');
  });
});

describe('attention masks', () => {
  test('uint8 attnMask broadcast over batch and heads, and per head', () => {
    const q = rand([2, 3, 6, 8]);
    const k = rand([2, 3, 9, 8]);
    const v = rand([2, 3, 9, 4]);
    const m2 = Tensor.zeros([6, 9], 'uint8');
    m2.data.fill(1, 3, 6);
    check(q, k, v, { attnMask: m2 }, '[Sq, Sk] mask');
    const m4 = Tensor.from([[[[0, 1, 0, 0, 0, 0, 0, 0, 1]]], [[[1, 0, 0, 0, 0, 1, 0, 0, 0]]]], 'uint8');
    check(q, k, v, { attnMask: m4 }, '[B, 1, 1, Sk] mask');
    const mh = rand([1, 3, 6, 9]);
    check(q, k, v, { attnMask: mh }, 'float per-head mask');
  });

  test('float32 attnMask is added to the scores', () => {
    const q = rand([4, 8]);
    const k = rand([5, 8]);
    const v = rand([5, 3]);
    const m = rand([4, 5], 2);
    m.data[2] = -Infinity;
    check(q, k, v, { attnMask: m }, 'float mask');
  });

  test('keyPaddingMask [B, Sk], uint8 or float32, combined with attnMask and causal', () => {
    const q = rand([3, 2, 7, 8]);
    const k = rand([3, 2, 7, 8]);
    const v = rand([3, 2, 7, 6]);
    const kpm = Tensor.zeros([3, 7], 'uint8');
    kpm.data.fill(1, 7 + 5, 14); // batch 1: keys 5, 6 are padding
    kpm.data.fill(1, 14 + 6, 21);
    check(q, k, v, { keyPaddingMask: kpm }, 'uint8 padding');
    check(q, k, v, { keyPaddingMask: rand([3, 7]) }, 'float padding');
    const am = rand([7, 7]);
    check(q, k, v, { keyPaddingMask: kpm, attnMask: am, causal: true }, 'all masks');
  });

  test('causal: square, more keys (cached prefix), more queries', () => {
    check(rand([2, 9, 8]), rand([2, 9, 8]), rand([2, 9, 8]), { causal: true }, 'square');
    check(rand([2, 3, 8]), rand([2, 11, 8]), rand([2, 11, 8]), { causal: true }, 'wide');
    const tall = check(rand([6, 8]), rand([4, 8]), rand([4, 5]), { causal: true }, 'tall');
    // Queries 0 and 1 see no key: zero weights and zero output.
    expect(Array.from(values(tall.output).subarray(0, 10))).toEqual(new Array(10).fill(0));
  });

  test('a query whose every key is masked gets zeros, not NaN', () => {
    const kpm = Tensor.full([2, 5], 1, 'uint8');
    kpm.data.fill(0, 0, 5);
    const r = attention(rand([2, 3, 4]), rand([2, 5, 4]), rand([2, 5, 6]), { keyPaddingMask: kpm, needWeights: true });
    const out = values(r.output);
    expect(out.subarray(18).every((x) => x === 0)).toBe(true);
    expect(out.some(Number.isNaN)).toBe(false);
  });
});

describe('attention layouts, outputs and async', () => {
  test('head-split views of a [B, S, E] projection are read in place', () => {
    const proj = rand([2, 10, 24]); // E = 24 = 4 heads of 6
    const heads = proj.unflatten(2, [4, 6]).permute([0, 2, 1, 3]);
    expect(heads.isContiguous()).toBe(false);
    check(heads, heads, heads, {}, 'head-split self-attention');
  });

  test('out can be a strided view (the head merge)', () => {
    const q = rand([2, 4, 5, 6]);
    const merged = Tensor.zeros([2, 5, 24]);
    const out = merged.unflatten(2, [4, 6]).permute([0, 2, 1, 3]);
    const r = attention(q, q, q, { out });
    expect(r.output).toBe(out);
    expectClose(out, attentionRef(q, q, q).output, TOL, 'strided out');
  });

  test('attentionAsync gives the same bits', async () => {
    const q = rand([2, 3, 40, 16]);
    const k = rand([2, 3, 50, 16]);
    const v = rand([2, 3, 50, 8]);
    const mask = Tensor.zeros([2, 50], 'uint8');
    mask.data.fill(1, 90, 100);
    for (const score of ['scaled_dot', 'cosine'] as const) {
      const a = attention(q, k, v, { score, keyPaddingMask: mask, causal: true, needWeights: true });
      const b = await attentionAsync(q, k, v, { score, keyPaddingMask: mask, causal: true, needWeights: true });
      expectBitwiseEqual(b.output, a.output, `${score} output`);
      expectBitwiseEqual(b.weights!, a.weights!, `${score} weights`);
    }
    const additive = { wq: rand([5, 16]), wk: rand([5, 16]), w: rand([5]) };
    const a = attention(q, k, v, { score: 'additive', additive });
    const b = await attentionAsync(q, k, v, { score: 'additive', additive });
    expectBitwiseEqual(b.output, a.output, 'additive');
  });
});

describe('attention rejects bad input', () => {
  const t = (shape: number[]) => Tensor.zeros(shape);
  test('shapes', () => {
    expect(() => attention(t([2, 3, 4]), t([2, 5, 4]), t([2, 6, 4]))).toThrow(
      'attention: key and value lengths differ: k.shape[1] is 5 but v.shape[1] is 6',
    );
    expect(() => attention(t([3, 4]), t([5, 8]), t([5, 2]))).toThrow('q.shape[1] is 4 but k.shape[1] is 8');
    expect(() => attention(t([2, 3, 4]), t([3, 5, 4]), t([3, 5, 4]))).toThrow('leading dimensions must match');
    expect(() => attention(t([4]), t([4]), t([4]))).toThrow(RangeError);
    expect(() => attention(t([3, 4]), t([1, 5, 4]), t([1, 5, 4]))).toThrow('must have the same rank');
  });

  test('masks', () => {
    expect(() => attention(t([3, 4]), t([5, 4]), t([5, 2]), { attnMask: t([3, 4]) })).toThrow(
      'attention: attnMask of shape [3, 4] does not broadcast to [3, 5] ([..., queries, keys])',
    );
    expect(() => attention(t([2, 3, 4]), t([2, 5, 4]), t([2, 5, 2]), { keyPaddingMask: t([5]) })).toThrow(
      'Expected Tensor of shape [2, 5] ([batch, keys]) for keyPaddingMask but received a float32 Tensor of shape [5]',
    );
    expect(() => attention(t([3, 4]), t([5, 4]), t([5, 2]), { attnMask: [1, 2] as never })).toThrow(TypeError);
  });

  test('options', () => {
    expect(() => attention(t([3, 4]), t([5, 4]), t([5, 2]), { score: 'bilinear' as never })).toThrow(
      "Expected one of 'scaled_dot', 'dot', 'cosine', 'additive' for score but received 'bilinear' of type string",
    );
    expect(() => attention(t([3, 4]), t([5, 4]), t([5, 2]), { score: 'additive' })).toThrow(TypeError);
    expect(() => attention(t([3, 4]), t([5, 4]), t([5, 2]), { score: 'additive', additive: { wq: t([2, 4]), wk: t([3, 4]), w: t([2]) } })).toThrow(
      'Expected Tensor of shape [2, 4] for additive.wk',
    );
    expect(() => attention(t([3, 4]), t([5, 4]), t([5, 2]), { scale: NaN })).toThrow(RangeError);
    expect(() => attention(t([3, 4]), t([5, 4]), t([5, 2]), { mask: t([3, 5]) } as never)).toThrow("Unknown option 'mask' for attention");
    expect(() => attention(t([3, 4]), t([5, 4]), t([5, 2]), { out: t([3, 3]) })).toThrow('Expected Tensor of shape [3, 2] for out');
  });
});
