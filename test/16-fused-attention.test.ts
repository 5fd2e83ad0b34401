import { afterAll, describe, expect, test } from 'vitest';
import { MultiHeadAttention, Tensor, attention, attentionAsync, getNumThreads, setNumThreads } from '../src';
import { expectBitwiseEqual, values } from './support/reference';

// attention() takes the fused (flash) path when no weights are asked for and
// the score is a dot product, and the explicit path when they are: the two
// must agree within 1e-5 relative to the output's magnitude.
let seed = 1300;
const rand = (shape: number[], std = 1) => Tensor.randn(shape, { seed: seed++, std });

function expectPathsAgree(q: Tensor, k: Tensor, v: Tensor, opts: Parameters<typeof attention>[3] = {}, label = '') {
  const fused = values(attention(q, k, v, opts).output);
  const explicit = values(attention(q, k, v, { ...opts, needWeights: true }).output);
  let err = 0;
  let mag = 0;
  for (let i = 0; i < fused.length; ++i) {
    if (Number.isNaN(explicit[i])) {
      expect(Number.isNaN(fused[i]), `${label} NaN at ${i}`).toBe(true);
      continue;
    }
    err = Math.max(err, Math.abs(fused[i] - explicit[i]));
    mag = Math.max(mag, Math.abs(explicit[i]));
  }
  expect(err, `${label}: max error ${err} vs magnitude ${mag}`).toBeLessThanOrEqual(1e-5 * Math.max(mag, 1e-30));
}

const initial = getNumThreads();
afterAll(() => setNumThreads(initial));

describe('fused attention agrees with the explicit path', () => {
  test('shapes around every block edge, dot and scaled dot, strided heads', () => {
    for (const [B, H, Sq, Sk, dk, dv] of [
      [1, 1, 1, 1, 1, 1],
      [2, 3, 5, 7, 8, 8],
      [1, 2, 57, 97, 64, 64],
      [2, 1, 130, 300, 32, 48],
      [1, 4, 200, 200, 64, 64],
      [1, 1, 97, 1025, 96, 128],
    ]) {
      expectPathsAgree(rand([B, H, Sq, dk], 2), rand([B, H, Sk, dk]), rand([B, H, Sk, dv]), {}, `${B}x${H}x${Sq}x${Sk}`);
    }
    expectPathsAgree(rand([40, 16]), rand([70, 16]), rand([70, 8]), { score: 'dot', scale: 0.2 }, 'dot');
    const proj = rand([2, 77, 96]);
    const heads = proj.unflatten(2, [6, 16]).permute([0, 2, 1, 3]);
    expectPathsAgree(heads, heads, heads, { causal: true }, 'head-split views');
  });

  test('causal with more keys than queries, more queries than keys', () => {
    expectPathsAgree(rand([2, 2, 60, 16]), rand([2, 2, 250, 16]), rand([2, 2, 250, 16]), { causal: true }, 'wide');
    expectPathsAgree(rand([1, 2, 150, 16]), rand([1, 2, 40, 16]), rand([1, 2, 40, 16]), { causal: true }, 'tall');
  });

  test('masks: float and uint8, broadcast, key padding of both kinds', () => {
    const q = rand([2, 3, 70, 32]);
    const k = rand([2, 3, 110, 32]);
    const v = rand([2, 3, 110, 32]);
    const fm = rand([2, 1, 70, 110], 2);
    fm.data[17] = -Infinity;
    expectPathsAgree(q, k, v, { attnMask: fm }, 'float mask');
    const um = Tensor.zeros([70, 110], 'uint8');
    for (let i = 0; i < um.data.length; i += 3) um.data[i] = 1;
    expectPathsAgree(q, k, v, { attnMask: um, causal: true }, 'uint8 mask, causal');
    const rowMask = Tensor.zeros([70, 1], 'uint8');
    rowMask.data[5] = 1;
    expectPathsAgree(q, k, v, { attnMask: rowMask }, 'mask broadcast along keys');
    const suffix = Tensor.zeros([2, 110], 'uint8');
    suffix.data.fill(1, 110 + 80, 220); // batch 1: keys 80.. are padding (a per-batch length)
    expectPathsAgree(q, k, v, { keyPaddingMask: suffix }, 'suffix padding');
    const scattered = Tensor.zeros([2, 110], 'uint8');
    for (let j = 0; j < 220; j += 7) scattered.data[j] = 1;
    expectPathsAgree(q, k, v, { keyPaddingMask: scattered, causal: true }, 'scattered padding');
    expectPathsAgree(q, k, v, { keyPaddingMask: rand([2, 110]), attnMask: fm }, 'float padding and mask');
  });

  test('decoding: up to 4 queries over keys split into chunks', () => {
    for (const sq of [1, 2, 4]) {
      const pad = Tensor.zeros([2, 2500], 'uint8');
      pad.data.fill(1, 2500 + 2100, 5000);
      expectPathsAgree(rand([2, 8, sq, 64], 3), rand([2, 8, 2500, 64]), rand([2, 8, 2500, 64]), { causal: true, keyPaddingMask: pad }, `decode sq=${sq}`);
    }
  });

  test('cosine scores take the fused path too', () => {
    expectPathsAgree(rand([2, 2, 30, 16], 4), rand([2, 2, 50, 16]), rand([2, 2, 50, 8]), { score: 'cosine', scale: 5 }, 'cosine');
  });

  test('fully masked queries give zeros; a NaN poisons only its row', () => {
    const kpm = Tensor.full([2, 9], 1, 'uint8');
    kpm.data.fill(0, 0, 9);
    const r = values(attention(rand([2, 6, 8]), rand([2, 9, 8]), rand([2, 9, 5]), { keyPaddingMask: kpm }).output);
    expect(r.subarray(30).every((x) => x === 0)).toBe(true);
    const q = rand([1, 1, 20, 8]);
    q.data[3 * 8 + 1] = NaN;
    const out = values(attention(q, rand([1, 1, 20, 8]), rand([1, 1, 20, 8]), { causal: true }).output);
    for (let i = 0; i < 20; ++i) expect(out.subarray(i * 8, i * 8 + 8).some(Number.isNaN)).toBe(i === 3);
  });

  test('a batch item with every key padded writes zeros over what out held; the others see several key blocks', () => {
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      const [B, H, L, d] = [2, 3, 300, 64];
      const q = rand([B, H, L, d]);
      const k = rand([B, H, L, d]);
      const v = rand([B, H, L, d]);
      const kpm = Tensor.zeros([B, L], 'uint8');
      kpm.data.fill(1, 290, L); // batch 0: 290 keys, three key blocks
      kpm.data.fill(1, L, 2 * L); // batch 1: none
      const out = Tensor.full([B, H, L, d], NaN);
      attention(q, k, v, { keyPaddingMask: kpm, out });
      const half = out.size / 2;
      expect(out.data.subarray(half).every((x) => x === 0)).toBe(true);
      const explicit = values(attention(q, k, v, { keyPaddingMask: kpm, needWeights: true }).output);
      let err = 0;
      for (let i = 0; i < half; ++i) err = Math.max(err, Math.abs(out.data[i] - explicit[i]));
      expect(err).toBeLessThanOrEqual(1e-5);
    }
    setNumThreads(initial);
  });
});

describe('fused attention determinism and async', () => {
  test('the same bits for 1 and 2 threads, and for the async form', async () => {
    const q = rand([2, 4, 300, 64]);
    const k = rand([2, 4, 300, 64]);
    const v = rand([2, 4, 300, 64]);
    for (const causal of [false, true]) {
      setNumThreads(1);
      const one = attention(q, k, v, { causal }).output;
      setNumThreads(2);
      const two = attention(q, k, v, { causal }).output;
      const async2 = (await attentionAsync(q, k, v, { causal })).output;
      setNumThreads(initial);
      expectBitwiseEqual(two, one, `threads causal=${causal}`);
      expectBitwiseEqual(async2, one, `async causal=${causal}`);
    }
    setNumThreads(1);
    const d1 = attention(rand([1, 8, 1, 64]), rand([1, 8, 3000, 64]), rand([1, 8, 3000, 64])).output;
    seed -= 3;
    setNumThreads(2);
    const d2 = attention(rand([1, 8, 1, 64]), rand([1, 8, 3000, 64]), rand([1, 8, 3000, 64])).output;
    setNumThreads(initial);
    expectBitwiseEqual(d2, d1, 'decode threads');
  });
});

describe('MultiHeadAttention uses the fused kernel without weights', () => {
  test('forward without weights agrees with forward with weights', () => {
    const m = new MultiHeadAttention({ embedDim: 64, numHeads: 8, seed: 3 });
    const x = rand([3, 77, 64]);
    for (const causal of [false, true]) {
      const fused = values(m.forward(x, undefined, undefined, { causal }).output);
      const explicit = values(m.forward(x, undefined, undefined, { causal, needWeights: true }).output);
      let err = 0;
      let mag = 0;
      for (let i = 0; i < fused.length; ++i) {
        err = Math.max(err, Math.abs(fused[i] - explicit[i]));
        mag = Math.max(mag, Math.abs(explicit[i]));
      }
      expect(err).toBeLessThanOrEqual(1e-5 * mag);
    }
  });
});
