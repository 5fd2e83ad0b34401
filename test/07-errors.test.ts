import { describe, expect, test } from 'vitest';
import { Tensor, matmul, softmax } from '../src';
import { additiveScoresParams, gemmParams, gemmWithPackedParams, packMatrixParams, softmaxParams, type GemmParams } from '../src/params';
import native from './support/load-native.cjs';

const f = (shape: number[]) => Tensor.zeros(shape);

describe('matmul rejects bad input with a named, typed error', () => {
  test('wrong types', () => {
    expect(() => matmul([1, 2] as never, f([2, 2]))).toThrow('Expected float32 Tensor for a but received an Array of length 2');
    expect(() => matmul(f([2, 2]), new Float32Array(4) as never)).toThrow(
      'Expected float32 Tensor or PackedMatrix for b but received a Float32Array of length 4',
    );
    expect(() => matmul(Tensor.zeros([2, 2], 'uint8'), f([2, 2]))).toThrow(TypeError);
    expect(() => matmul(f([2, 2]), f([2, 2]), 'fast' as never)).toThrow(TypeError);
  });

  test('mismatched and unsupported dimensions', () => {
    expect(() => matmul(f([3, 63]), f([64, 5]))).toThrow(
      'matmul: a.shape[1] is 63 but b.shape[0] is 64; the inner dimensions must match (a [3, 63], b [64, 5])',
    );
    expect(() => matmul(f([3, 4]), f([5, 4]), { transposeA: true })).toThrow('a.shape[0] is 3 but b.shape[0] is 5');
    expect(() => matmul(f([4]), f([4, 2]))).toThrow('Expected Tensor with at least 2 dimensions for a');
    expect(() => matmul(f([2, 3, 4]), f([3, 4, 5]))).toThrow(
      'matmul: batch dimensions of a [2] and b [3] must be equal (or one operand must be 2-D)',
    );
  });

  test('bad out', () => {
    expect(() => matmul(f([2, 3]), f([3, 4]), { out: f([2, 5]) })).toThrow(
      'Expected Tensor of shape [2, 4] for out but received a float32 Tensor of shape [2, 5]',
    );
    expect(() => matmul(f([2, 3]), f([3, 4]), { out: Tensor.zeros([2, 4], 'uint8') })).toThrow(TypeError);
    expect(() => matmul(f([2, 3]), f([3, 4]), { out: f([4, 2]).transpose() })).toThrow(/out must be row-major/);
    const a = f([4, 4]);
    expect(() => matmul(a, f([4, 4]), { out: a })).toThrow('out must not share memory with a or b');
  });

  test('bad options', () => {
    const a = f([2, 2]);
    expect(() => matmul(a, a, { transpose: true } as never)).toThrow(
      "Unknown option 'transpose' for matmul; expected one of transposeA, transposeB, alpha, beta, out, bias but received true of type boolean",
    );
    expect(() => matmul(a, a, { alpha: NaN })).toThrow('Expected finite number for alpha but received NaN of type number');
    expect(() => matmul(a, a, { alpha: '2' as never })).toThrow(TypeError);
    expect(() => matmul(a, a, { transposeA: 1 as never })).toThrow('Expected boolean for transposeA but received 1 of type number');
    expect(() => matmul(a, a, { beta: 0.5 })).toThrow(/beta is 0.5 but no out was given/);
  });
});

describe('softmax rejects bad input with a named, typed error', () => {
  test('types, options, shapes', () => {
    expect(() => softmax(null as never)).toThrow('Expected float32 Tensor for x but received null');
    expect(() => softmax(f([2, 3]), { scale: NaN })).toThrow('Expected finite number for scale but received NaN of type number');
    expect(() => softmax(f([2, 3]), { scale: Infinity })).toThrow(RangeError);
    expect(() => softmax(f([2, 3]), { causal: 'yes' as never })).toThrow(TypeError);
    expect(() => softmax(f([3]), { causal: true })).toThrow(/at least 2 dimensions/);
    expect(() => softmax(f([2, 3]), { dim: -1 } as never)).toThrow("Unknown option 'dim' for softmax");
    expect(() => softmax(f([2, 3]), { out: f([3, 2]) })).toThrow(RangeError);
  });

  test('masks of the wrong shape or type', () => {
    expect(() => softmax(f([2, 3, 4]), { mask: f([3, 3]) })).toThrow(
      "softmax: mask of shape [3, 3] does not broadcast to x's shape [2, 3, 4]",
    );
    expect(() => softmax(f([2, 3]), { mask: f([1, 2, 3]) })).toThrow(RangeError);
    expect(() => softmax(f([2, 3]), { mask: new Uint8Array(6) as never })).toThrow(
      'Expected Tensor for mask but received a Uint8Array of length 6',
    );
  });
});

describe('the native layer checks bounds itself', () => {
  const p = (values: number[]) => Float64Array.from(values);
  // A plain m x n x k product: every matrix row-major and tight, one batch item, alpha 1.
  const gemm = (m: number, n: number, k: number, change: Partial<GemmParams> = {}) =>
    gemmParams({
      m,
      n,
      k,
      transA: 0,
      transB: 0,
      lda: k,
      ldb: n,
      ldc: n,
      aBatchStride: 0,
      bBatchStride: 0,
      cBatchStride: 0,
      batch: 1,
      alpha: 1,
      beta: 0,
      streamOut: 0,
      aOffset: 0,
      bOffset: 0,
      cOffset: 0,
      biasOffset: 0,
      ...change,
    });
  test('gemm refuses views past the end of an array instead of reading them', () => {
    const a = new Float32Array(10);
    const c = new Float32Array(100);
    expect(() => native.gemm(a, a, c, null, gemm(4, 4, 4))).toThrow('a is too short: the view needs 16 elements from offset 0 but its array has 10');
    expect(() => native.gemm(c, c, a, null, gemm(4, 4, 4))).toThrow(RangeError);
    expect(() => native.gemm(c, c, new Float32Array(100), null, gemm(2, 2, 2, { lda: 1 }))).toThrow('lda is smaller than the rows it must hold');
    expect(() => native.gemm(c, c, new Float32Array(100), null, gemm(-1, 2, 2))).toThrow(RangeError);
    expect(() => native.gemm(c, c, new Float32Array(100), null, gemm(1.5, 2, 2))).toThrow(RangeError);
    expect(() => native.gemm(c, c, new Float32Array(200), null, gemm(4, 4, 4, { cBatchStride: 8, batch: 2 }))).toThrow(
      'out: unsupported operation: more than one element of the written-to tensor refers to a single memory location',
    );
    expect(() => native.gemm(c, c, c, null, gemm(2, 2, 2))).toThrow('out must not share memory with a or b');
    expect(() => native.gemm(c, c, c, null, p([2, 2]))).toThrow('Expected 19 entries in gemm parameters but received 2');
    expect(() => native.gemm(c, [1] as never, c, null, p([]))).toThrow('Expected Float32Array for b but received an Array');
    expect(() => native.gemm(c, c, new Float32Array(4), new Float32Array(1), gemm(2, 2, 2))).toThrow('bias is too short');
    expect(() => native.gemm(c, c, c, null, gemm(2 ** 40, 2 ** 40, 2, { lda: 2, ldb: 2 ** 40, ldc: 2 ** 40 }))).toThrow(RangeError);
  });

  test('gemm and gemmWithPacked refuse an out that shares memory with a or the bias', () => {
    const buf = new Float32Array(64);
    const a = buf.subarray(0, 4);
    const out = buf.subarray(8, 12);
    const bias = buf.subarray(10, 12); // inside out
    const b = new Float32Array(4);
    expect(() => native.gemm(a, b, out, bias, gemm(2, 2, 2))).toThrow('out must not share memory with bias');
    const packed = native.packMatrix(b, packMatrixParams({ k: 2, n: 2, ldb: 2, transB: 0, bOffset: 0 }));
    const withPacked = gemmWithPackedParams({
      m: 2,
      transA: 0,
      lda: 2,
      ldc: 2,
      aBatchStride: 0,
      cBatchStride: 0,
      batch: 1,
      alpha: 1,
      beta: 0,
      streamOut: 0,
      aOffset: 0,
      cOffset: 0,
      biasOffset: 0,
    });
    expect(() => native.gemmWithPacked(a, packed, out, bias, withPacked)).toThrow('out must not share memory with bias');
    expect(() => native.gemmWithPacked(buf, packed, buf, null, withPacked)).toThrow('out must not share memory with a');
    const ok = new Float32Array(4);
    native.gemmWithPacked(a, packed, ok, bias, withPacked);
    expect(Array.from(ok)).toEqual([0, 0, 0, 0]);
  });

  test('softmax refuses a mask shorter than its strides claim', () => {
    const x = new Float32Array(12);
    const params = softmaxParams({
      rank: 2,
      scale: 1,
      causal: 0,
      streamOut: 0,
      maskKind: 2,
      xOffset: 0,
      outOffset: 0,
      maskOffset: 0,
      shape: [3, 4],
      xStrides: [4, 1],
      outStrides: [4, 1],
      maskStrides: [4, 1],
    });
    expect(() => native.softmax(x, new Float32Array(12), new Uint8Array(5), params)).toThrow('mask is too short');
    expect(() => native.softmax(x, new Float32Array(12), new Float32Array(12), params)).toThrow(
      'Expected Uint8Array for mask but received a Float32Array',
    );
  });

  test('additive scores stay apart from every input, the bias included, and take an undefined bias', () => {
    // One batch item and head, 2 queries and 2 keys of 3 hidden features, everything contiguous.
    const params = (scoresOffset = 0) =>
      additiveScoresParams({
        batch: 1,
        heads: 1,
        queries: 2,
        keys: 2,
        hidden: 3,
        pqStrides: [6, 6, 3],
        pqOffset: 0,
        pkStrides: [6, 6, 3],
        pkOffset: 0,
        wOffset: 0,
        biasOffset: 0,
        scoresOffset,
      });
    const pq = new Float32Array([1, 2, 3, 4, 5, 6]);
    const pk = new Float32Array(6).fill(0.5);
    const w = new Float32Array([1, -1, 2]);
    // Each input in turn taken from buf, with the scores over its last element (not its first).
    const buf = new Float32Array(32);
    const cases = [
      ['pq', 6],
      ['pk', 6],
      ['w', 3],
      ['bias', 3],
    ] as const;
    cases.forEach(([name, length], i) => {
      const args: [Float32Array, Float32Array, Float32Array, Float32Array | null] = [pq, pk, w, null];
      args[i] = buf.subarray(0, length);
      const scores = buf.subarray(length - 1, length + 3);
      expect(() => native.additiveScores(...args, scores, params()), name).toThrow('scores must not share memory with the inputs');
    });
    const withNull = new Float32Array(4);
    const withUndefined = new Float32Array(4);
    native.additiveScores(pq, pk, w, null, withNull, params());
    native.additiveScores(pq, pk, w, undefined as never, withUndefined, params());
    expect(Array.from(withUndefined)).toEqual(Array.from(withNull));
    expect(withNull.some((v) => v !== 0)).toBe(true);
  });
});
