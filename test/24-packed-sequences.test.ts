import { afterAll, describe, expect, test } from 'vitest';
import { MultiHeadAttention, Tensor, attention, attentionAsync, getNumThreads, setNumThreads } from '../src';
import { native } from '../src/native';
import { attentionParams } from '../src/params';
import { attentionRef, expectBitwiseEqual, expectClose, multiheadRef, values } from './support/reference';

// Packed variable-length sequences: the tokens of several sequences one after
// another, attention within each. Every result is checked against running the
// sequence alone and against the float64 reference.
let seed = 2100;
const rand = (shape: number[], std = 1) => Tensor.randn(shape, { seed: seed++, std });

// Lengths on both sides of every tile edge of every kernel path: query blocks
// of 4·mr rows (16 scalar, 24 AVX2, 32 NEON, 56 AVX-512), key blocks of 96
// (NEON) and 128, the 128-query task chunk, the decode path's 4 queries.
const EDGES = [1, 2, 3, 4, 5, 15, 16, 17, 23, 24, 25, 31, 32, 33, 55, 56, 57, 95, 96, 97, 127, 128, 129, 255, 256, 257];

/** EDGES shuffled (seeded), so long and short sequences sit at every offset. */
function shuffled(xs: number[], s: number): number[] {
  const out = xs.slice();
  let state = s;
  for (let i = out.length - 1; i > 0; --i) {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    const j = state % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

const offsetsOf = (lengths: number[]) => lengths.reduce((acc, n) => [...acc, acc[acc.length - 1] + n], [0]);
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** Largest |a - b| over two float64 arrays. */
function maxDiff(a: Float64Array, b: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; ++i) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const initial = getNumThreads();
afterAll(() => setNumThreads(initial));

describe('attention over packed sequences', () => {
  test('each sequence as if alone and as the float64 reference, [h, T, d], every tile edge, causal or not', () => {
    const lengths = shuffled(EDGES, 7);
    const T = sum(lengths);
    const H = 2;
    const q = rand([H, T, 16], 2);
    const k = rand([H, T, 16]);
    const v = rand([H, T, 12]);
    const offsets = offsetsOf(lengths);
    for (const causal of [false, true]) {
      const packed = attention(q, k, v, { sequenceLengths: lengths, causal }).output;
      expect(packed.shape).toEqual([H, T, 12]);
      lengths.forEach((n, s) => {
        const slice = (t: Tensor) => t.narrow(1, offsets[s], n);
        const got = slice(packed);
        const alone = attention(slice(q), slice(k), slice(v), { causal }).output;
        expect(maxDiff(values(got), values(alone)), `length ${n} causal=${causal}`).toBeLessThanOrEqual(1e-5);
        const ref = attentionRef(slice(q), slice(k), slice(v), { causal });
        expectClose(got, ref.output, 2e-6, `length ${n} causal=${causal} vs reference`);
      });
    }
  });

  test('[T, d] single head, [B, h, T, d], strided head-split views, cosine, Int32Array lengths', () => {
    const lengths = [7, 1, 60, 33];
    const T = sum(lengths);
    const offsets = offsetsOf(lengths);
    const check = (q: Tensor, k: Tensor, v: Tensor, axis: number, opts: Parameters<typeof attention>[3], label: string) => {
      const packed = attention(q, k, v, { ...opts, sequenceLengths: Int32Array.from(lengths) }).output;
      lengths.forEach((n, s) => {
        const slice = (t: Tensor) => t.narrow(axis, offsets[s], n);
        const ref = attentionRef(slice(q), slice(k), slice(v), opts as never);
        expectClose(slice(packed), ref.output, 2e-6, `${label}: sequence ${s}`);
      });
    };
    check(rand([T, 8]), rand([T, 8]), rand([T, 8]), 0, { causal: true }, '[T, d]');
    check(rand([2, 3, T, 8]), rand([2, 3, T, 8]), rand([2, 3, T, 8]), 2, {}, '[B, h, T, d]');
    // Heads as views of one projection [T, 3·h·d], as MultiHeadAttention makes them.
    const proj = rand([T, 3 * 4 * 8]);
    const heads = (i: number) => proj.narrow(1, i * 32, 32).unflatten(1, [4, 8]).permute([1, 0, 2]);
    check(heads(0), heads(1), heads(2), 1, { causal: true }, 'head-split views');
    check(rand([2, T, 8], 3), rand([2, T, 8]), rand([2, T, 8]), 1, { score: 'cosine', scale: 4 }, 'cosine');
  });

  test('the same bits for any thread count, and async', async () => {
    const lengths = [300, 5, 1, 129, 64, 57, 2];
    const T = sum(lengths);
    const q = rand([4, T, 32]);
    const k = rand([4, T, 32]);
    const v = rand([4, T, 32]);
    for (const causal of [false, true]) {
      setNumThreads(1);
      const one = attention(q, k, v, { sequenceLengths: lengths, causal }).output;
      setNumThreads(2);
      const two = attention(q, k, v, { sequenceLengths: lengths, causal }).output;
      setNumThreads(3);
      const three = (await attentionAsync(q, k, v, { sequenceLengths: lengths, causal })).output;
      setNumThreads(initial);
      expectBitwiseEqual(two, one, `2 threads causal=${causal}`);
      expectBitwiseEqual(three, one, `async on 3 threads causal=${causal}`);
    }
  });

  test('a long sequence alone: bitwise the same as without sequenceLengths', () => {
    const q = rand([2, 2, 400, 16]);
    const k = rand([2, 2, 400, 16]);
    const v = rand([2, 2, 400, 16]);
    for (const causal of [false, true]) {
      expectBitwiseEqual(attention(q, k, v, { sequenceLengths: [400], causal }).output, attention(q, k, v, { causal }).output, `causal=${causal}`);
    }
  });

  test('lengths are checked, with errors that say what is wrong', () => {
    const q = rand([2, 10, 4]);
    const call = (sequenceLengths: unknown, extra: object = {}) => () =>
      attention(q, q, q, { sequenceLengths: sequenceLengths as number[], ...extra });
    expect(call([3, 6])).toThrow('attention: sequenceLengths sum to 9 but the packed input holds 10 tokens');
    expect(call([3, 0, 7])).toThrow('Expected positive integer for sequenceLengths[1] but received 0 of type number');
    expect(call([3, 6.5])).toThrow(RangeError);
    expect(call([3, '7'])).toThrow(TypeError);
    expect(call([])).toThrow('Expected at least one sequence length for sequenceLengths but received an Array of length 0');
    expect(call(new Float32Array([3, 7]))).toThrow('Expected Array of positive integers or Int32Array for sequenceLengths but received a Float32Array');
    expect(call('3,7')).toThrow(TypeError);
    expect(call([2 ** 31, 1])).toThrow('sum to more than 2^31 - 1 tokens');
    expect(call([3, 7], { needWeights: true })).toThrow('attention: sequenceLengths cannot be combined with needWeights');
    expect(call([3, 7], { attnMask: Tensor.zeros([10, 10], 'uint8') })).toThrow('sequenceLengths cannot be combined with attnMask');
    expect(call([3, 7], { keyPaddingMask: Tensor.zeros([2, 10], 'uint8') })).toThrow('sequenceLengths cannot be combined with keyPaddingMask');
    const add = { wq: rand([3, 4]), wk: rand([3, 4]), w: rand([3]) };
    expect(call([3, 7], { score: 'additive', additive: add })).toThrow('sequenceLengths cannot be combined with additive');
    expect(() => attention(q, rand([2, 11, 4]), rand([2, 11, 4]), { sequenceLengths: [10] })).toThrow(
      'with sequenceLengths, k and v hold the same positions as q, but k.shape[1] is 11 and q.shape[1] is 10',
    );
    return expect(attentionAsync(q, q, q, { sequenceLengths: [4, 4] })).rejects.toThrow('sum to 8');
  });

  test('the addon checks the offsets itself', async () => {
    const T = 10;
    const d = 4;
    const buf = () => new Float32Array(T * d);
    const params = (sequences: number, extra: Partial<Parameters<typeof attentionParams>[0]> = {}) =>
      attentionParams({
        batch: 1, heads: 1, queries: T, keys: T, dk: d, dv: d,
        qStrides: [T * d, T * d, d], qOffset: 0, kStrides: [T * d, T * d, d], kOffset: 0,
        vStrides: [T * d, T * d, d], vOffset: 0, outStrides: [T * d, T * d, d], outOffset: 0,
        scale: 1, causal: 0, causalAlways: 0, maskKind: 0, maskStrides: [], maskOffset: 0, keyPaddingKind: 0, keyPaddingBatchStride: 0,
        keyPaddingOffset: 0, hasWeights: 0, weightsOffset: 0, hasScores: 0, scoresOffset: 0, sequences, ...extra,
      });
    const run = (offsets: unknown, p: Float64Array, mask: Uint8Array | null = null) => () =>
      native.attention(buf(), buf(), buf(), buf(), mask, null, null, null, offsets as Int32Array, p);
    run(Int32Array.from([0, 3, 10]), params(2))();
    expect(run(Int32Array.from([0, 3, 10]), params(3))).toThrow('Expected 4 entries in sequenceOffsets (sequences + 1) but received 3');
    expect(run(Int32Array.from([1, 3, 10]), params(2))).toThrow('sequenceOffsets[0] is 1, expected 0');
    expect(run(Int32Array.from([0, 3, 3, 10]), params(3))).toThrow('sequenceOffsets must increase strictly (every sequence holds a position): entry 2 is 3 after 3');
    expect(run(Int32Array.from([0, 7, 3, 10]), params(3))).toThrow('entry 2 is 3 after 7');
    expect(run(Int32Array.from([0, 3, 11]), params(2))).toThrow('sequenceOffsets ends at 11 but q, k, v and out hold 10 positions');
    expect(run(Int32Array.from([0, -5, 10]), params(2))).toThrow(RangeError);
    expect(run(Float64Array.from([0, 3, 10]), params(2))).toThrow('Expected Int32Array for sequenceOffsets but received a Float64Array');
    expect(run(null, params(2))).toThrow(TypeError);
    expect(run(Int32Array.from([0, 10]), params(0))).toThrow('sequenceOffsets was given but the sequences slot is 0');
    expect(run(Int32Array.from([0, 10]), params(-1))).toThrow(RangeError);
    expect(run(Int32Array.from([0, 10]), params(1, { keys: 9 }))).toThrow('packed sequences need as many keys as queries (10) but received 9');
    // The async form copies the offsets: changing them after the call changes nothing.
    const q = new Float32Array(T * d).map((_, i) => Math.sin(i));
    const sync = buf();
    native.attention(q, q, q, sync, null, null, null, null, Int32Array.from([0, 3, 10]), params(2));
    const later = buf();
    const offsets = Int32Array.from([0, 3, 10]);
    const pending = native.attentionAsync(q, q, q, later, null, null, null, null, offsets, params(2));
    offsets.set([0, 2 ** 30, -7]);
    await pending;
    expect(Array.from(later)).toEqual(Array.from(sync));
    const mask = new Uint8Array(T * T);
    expect(run(Int32Array.from([0, 10]), params(1, { maskKind: 2, maskStrides: [0, 0, T, 1] }), mask)).toThrow(
      'packed sequences take no mask, key padding, weights, scores or always-visible keys',
    );
  });
});

describe('MultiHeadAttention over packed sequences', () => {
  const m = new MultiHeadAttention({ embedDim: 48, numHeads: 6, seed: 4 });
  for (const t of [m.inProjBias!, m.outProjBias!]) t.assign(rand(t.shape as number[], 0.1));

  /** Each sequence's rows of the packed output against the sequence run alone, within 1e-5. */
  function expectEachAlone(packed: Tensor, x: Tensor, lengths: number[], causal: boolean, label: string) {
    const offsets = offsetsOf(lengths);
    lengths.forEach((n, s) => {
      const alone = m.forward(x.narrow(0, offsets[s], n), undefined, undefined, { causal }).output;
      expect(maxDiff(values(packed.narrow(0, offsets[s], n)), values(alone)), `${label}: length ${n}`).toBeLessThanOrEqual(1e-5);
    });
  }

  test('forward and forwardAsync equal each sequence alone, every tile edge, causal or not', async () => {
    const lengths = shuffled(EDGES, 11);
    const x = rand([sum(lengths), 48]);
    for (const causal of [false, true]) {
      const sync = m.forward(x, undefined, undefined, { sequenceLengths: lengths, causal }).output;
      expect(sync.shape).toEqual([x.shape[0], 48]);
      expectEachAlone(sync, x, lengths, causal, `sync causal=${causal}`);
      const asyncOut = (await m.forwardAsync(x, x, x, { sequenceLengths: Int32Array.from(lengths), causal })).output;
      expectBitwiseEqual(asyncOut, sync, `async causal=${causal}`);
    }
  });

  test('random lengths against the float64 multi-head reference', () => {
    let state = 5;
    const lengths = Array.from({ length: 12 }, () => {
      state = (state * 48271) % 2147483647;
      return 1 + (state % 90);
    });
    const x = rand([sum(lengths), 48]);
    const packed = m.forward(x, undefined, undefined, { sequenceLengths: lengths, causal: true }).output;
    const offsets = offsetsOf(lengths);
    lengths.forEach((n, s) => {
      const xs = x.narrow(0, offsets[s], n).unsqueeze(0);
      const ref = multiheadRef(m.stateDict(), 6, xs, xs, xs, { causal: true });
      expectClose(packed.narrow(0, offsets[s], n), ref.output, 2e-5, `sequence ${s} of length ${n}`);
    });
  });

  test('self-attention only, with clear errors', async () => {
    const x = rand([10, 48]);
    const opts = { sequenceLengths: [4, 6] };
    expect(() => m.forward(x, rand([10, 48]), undefined, opts)).toThrow(
      'forward: sequenceLengths is for self-attention; pass only the query (key and value are the query)',
    );
    expect(() => m.forward(x, x, rand([10, 48]), opts)).toThrow('sequenceLengths is for self-attention');
    expect(() => m.forward(x, undefined, undefined, { ...opts, kvCache: m.createKVCache() })).toThrow(
      'forward: sequenceLengths cannot be combined with kvCache',
    );
    expect(() => m.forward(x, undefined, undefined, { ...opts, needWeights: true })).toThrow('sequenceLengths cannot be combined with needWeights');
    expect(() => m.forward(x, undefined, undefined, { ...opts, attnMask: Tensor.zeros([10, 10]) })).toThrow('cannot be combined with attnMask');
    expect(() => m.forward(x, undefined, undefined, { ...opts, keyPaddingMask: Tensor.zeros([10]) })).toThrow('cannot be combined with keyPaddingMask');
    expect(() => m.forward(x.unsqueeze(0), undefined, undefined, opts)).toThrow(
      'forward: with sequenceLengths, query is the packed tokens [totalTokens, embedDim]; received a float32 Tensor of shape [1, 10, 48]',
    );
    expect(() => m.forward(x, undefined, undefined, { sequenceLengths: [4, 5] })).toThrow('forward: sequenceLengths sum to 9 but the packed input holds 10 tokens');
    const kv = new MultiHeadAttention({ embedDim: 48, numHeads: 6, addBiasKV: true });
    expect(() => kv.forward(x, undefined, undefined, opts)).toThrow('sequenceLengths does not support addBiasKV or addZeroAttn');
    await expect(m.forwardAsync(x, undefined, undefined, { sequenceLengths: [11] })).rejects.toThrow('forwardAsync: sequenceLengths sum to 11');
  });
});
