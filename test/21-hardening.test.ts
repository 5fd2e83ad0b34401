// Regression tests for calls a careless or hostile caller makes: buffers
// detached, transferred or shrunk while an async call runs, outputs whose
// elements alias, out-of-memory on any thread, overflowing parameter blocks,
// and the smaller cases below. Whatever could crash runs in a child process.
import { constants as bufferConstants } from 'node:buffer';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { MultiHeadAttention, Tensor, attention, attentionAsync, loadSafetensors, matmul, matmulAsync, packMatrix, saveSafetensors, softmax, softmaxAsync } from '../src';
import { native } from '../src/native';
import { attentionParams, copyStridedParams, gemmParams, softmaxParams } from '../src/params';
import { distPath } from './support/child';
import { onWidestIsa } from './support/isa';
import { attentionRef, expectClose, matmulRef, softmaxRef, values } from './support/reference';

const OVERLAP = 'unsupported operation: more than one element of the written-to tensor refers to a single memory location. Please clone() the tensor before performing the operation.';

describe('detaching, transferring or shrinking buffers while an async call runs', () => {
  // Every async form, with each way JavaScript can take memory away, on the
  // library's memory and on the caller's: see test/support/detach-scenarios.cjs.
  // The scenarios run in a child process: a crash there is a failed test, not a dead runner.
  const scenarios = path.join(__dirname, 'support', 'detach-scenarios.cjs');


  test.skipIf(!onWidestIsa)('never crashes; each call resolves with the right result or rejects with a RangeError', () => {
    const r = spawnSync(process.execPath, [scenarios, distPath], { encoding: 'utf8', timeout: 300_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(4 * 3 * 2 * 3 * 1);
    for (const line of lines) {
      const outcome = line.split(' | ')[6];
      expect(outcome === 'resolved right' || outcome.startsWith('RangeError: '), line).toBe(true);
    }
    // The caller's large out taken away: its result cannot land and the call says so.
    const lost = lines.filter((l) => / \| (plain|resizable) \| large \| (transfer|postMessage) \| out \| /.test(l));
    expect(lost.length).toBeGreaterThan(0);
    for (const l of lost) expect(l).toMatch(/RangeError: .*out.*detached/);
    // The library's own memory (tensors of 64 KiB and more) cannot be taken away: transfers copy it, every such call resolves.
    for (const l of lines.filter((x) => x.includes(' | owned | large | '))) expect(l.endsWith('resolved right'), l).toBe(true);
  }, 300_000);

  test('the raw async functions copy memory they do not own, and refuse to write into a detached out', async () => {
    const a = new Float32Array(64).fill(1);
    const out = new Float32Array(64);
    const params = gemmParams({
      m: 8, n: 8, k: 8, transA: 0, transB: 0, lda: 8, ldb: 8, ldc: 8, aBatchStride: 0, bBatchStride: 0, cBatchStride: 0,
      batch: 1, alpha: 1, beta: 0, streamOut: 0, aOffset: 0, bOffset: 0, cOffset: 0, biasOffset: 0,
    });
    const p = native.gemmAsync(a, a, out, null, params);
    structuredClone(out.buffer, { transfer: [out.buffer] });
    await expect(p).rejects.toThrow(RangeError);
    await expect(p).rejects.toThrow('gemmAsync: out was detached or shrunk while the call ran; its result was discarded');
    const out2 = new Float32Array(64);
    const q = native.gemmAsync(a, a, out2, null, params);
    structuredClone(a.buffer, { transfer: [a.buffer] }); // the input was copied as the call started
    await q;
    expect(Array.from(out2)).toEqual(new Array(64).fill(8));
  });

  test('tensors the library makes are the addon\'s memory; small ones and the caller\'s are not', () => {
    expect(native.isOwned(Tensor.zeros([256, 256]).data)).toBe(true);
    expect(native.isOwned(Tensor.randn([256, 256]).data)).toBe(true);
    expect(native.isOwned(Tensor.zeros([4, 4]).data)).toBe(false);
    expect(native.isOwned(new Float32Array(1 << 20))).toBe(false);
    // A transfer of the library's memory copies it: the tensor keeps its data.
    const t = Tensor.full([256, 256], 3);
    const buffer = t.data.buffer as ArrayBuffer;
    const copy = structuredClone(buffer, { transfer: [buffer] });
    expect(t.data.length).toBe(256 * 256);
    expect(new Float32Array(copy)[5]).toBe(3);
  });
});

describe('async calls that prepare their operands first', () => {
  test('concurrent calls each keep their own parameters (the writers reuse one array per block)', async () => {
    // Rows broadcast with stride 0 are copied before the kernel runs: the
    // parameter block is made before that copy is awaited.
    const cases = [
      [64, 32, 48],
      [130, 7, 65],
      [33, 100, 9],
      [256, 64, 256],
    ].map(([m, k, n], i) => ({ a: Tensor.randn([1, 1, k], { seed: i }).expand([3, m, k]), b: Tensor.randn([k, n], { seed: 10 + i }) }));
    const got = await Promise.all(cases.map(({ a, b }) => matmulAsync(a, b)));
    got.forEach((r, i) => expectClose(r, values(matmul(cases[i].a, cases[i].b)), 0, `matmul ${i}`));
    const xs = [Tensor.randn([40, 70], { seed: 1 }).transpose(), Tensor.randn([9, 300], { seed: 2 }).transpose(), Tensor.randn([512, 3], { seed: 3 }).transpose()];
    const soft = await Promise.all(xs.map((x, i) => softmaxAsync(x, { scale: i + 1 })));
    soft.forEach((r, i) => expectClose(r, values(softmax(xs[i], { scale: i + 1 })), 0, `softmax ${i}`));
  });

  test.skipIf(bufferConstants.MAX_LENGTH > 2 ** 52)('memory the runtime refuses to wrap (over its ArrayBuffer limit) is released once, not twice', () => {
    // Node runs the finalizer itself when it refuses a length: the block must not be released again.
    for (let i = 0; i < 3; ++i) expect(native.allocate(bufferConstants.MAX_LENGTH + 64, false)).toBeUndefined();
    const ab = native.allocate(1 << 20, true)!;
    expect(ab.byteLength).toBe(1 << 20);
    expect(new Uint8Array(ab).every((x) => x === 0)).toBe(true);
  });
});

describe('outputs whose elements share memory are refused', () => {
  test('softmax: an expanded out, and in place on an expanded view', async () => {
    const x = Tensor.from([[1, 2, 3], [0, 0, 0], [5, 1, 1]]);
    const out = Tensor.zeros([1, 3]).expand([3, 3]);
    expect(() => softmax(x, { out })).toThrow(`softmax: out (shape [3, 3], strides [0, 1]): ${OVERLAP}`);
    await expect(softmaxAsync(x, { out })).rejects.toThrow(`softmaxAsync: out (shape [3, 3], strides [0, 1]): ${OVERLAP}`);
    const e = Tensor.zeros([1, 3]).expand([3, 3]);
    expect(() => softmax(e, { out: e })).toThrow(OVERLAP);
    // In place on x itself is fine.
    const y = x.clone();
    softmax(y, { out: y });
    expectClose(y, softmaxRef(x), 1e-6, 'in place');
  });

  test('attention: an out with batch or head stride 0', async () => {
    const q = Tensor.randn([2, 2, 3, 4]);
    const k = Tensor.randn([2, 2, 5, 4]);
    for (const out of [Tensor.zeros([2, 1, 3, 4]).expand([2, 2, 3, 4]), Tensor.zeros([1, 2, 3, 4]).expand([2, 2, 3, 4])]) {
      expect(() => attention(q, k, k, { out })).toThrow(`attention: out (shape [2, 2, 3, 4], strides [${out.strides.join(', ')}]): ${OVERLAP}`);
      await expect(attentionAsync(q, k, k, { out })).rejects.toThrow(OVERLAP);
    }
  });

  test('matmul and assign', async () => {
    const out = Tensor.zeros([1, 4]).expand([3, 4]);
    expect(() => matmul(Tensor.randn([3, 2]), Tensor.randn([2, 4]), { out })).toThrow(`matmul: out (shape [3, 4], strides [0, 1]): ${OVERLAP}`);
    await expect(matmulAsync(Tensor.randn([3, 2]), Tensor.randn([2, 4]), { out })).rejects.toThrow(OVERLAP);
    expect(() => Tensor.zeros([1, 4]).expand([3, 4]).assign(Tensor.randn([3, 4]))).toThrow(`assign: this tensor (shape [3, 4], strides [0, 1]): ${OVERLAP}`);
  });

  test('the raw functions check every written view alike', () => {
    const x = new Float32Array(9);
    const sp = (outStrides: number[]) =>
      softmaxParams({ rank: 2, scale: 1, causal: 0, streamOut: 0, maskKind: 0, xOffset: 0, outOffset: 0, maskOffset: 0, shape: [3, 3], xStrides: [3, 1], outStrides, maskStrides: [] });
    expect(() => native.softmax(x, new Float32Array(9), null, sp([0, 1]))).toThrow(`out: ${OVERLAP}`);
    expect(() => native.softmax(x, x, null, sp([0, 1]))).toThrow(`out: ${OVERLAP}`);
    expect(() => native.softmax(x, new Float32Array(9), null, sp([2, 1]))).toThrow(`out: ${OVERLAP}`);
    const ap = attentionFields({ outStrides: [0, 12, 4] });
    expect(() => native.attention(new Float32Array(48), new Float32Array(80), new Float32Array(80), new Float32Array(48), null, null, null, null, null, attentionParams(ap))).toThrow(`out: ${OVERLAP}`);
    const cp = copyStridedParams({ rank: 2, srcOffset: 0, dstOffset: 0, streamOut: 0, shape: [2, 3], srcStrides: [3, 1], dstStrides: [1, 1] });
    expect(() => native.copyStrided(new Float32Array(6), new Float32Array(6), cp)).toThrow(`dst: ${OVERLAP}`);
  });
});

/** The fields of an attention block for [2, 2, 3, 4] queries over [2, 2, 5, 4] keys, contiguous, with overrides. */
function attentionFields(change: Partial<Parameters<typeof attentionParams>[0]> = {}): Parameters<typeof attentionParams>[0] {
  return {
    batch: 2, heads: 2, queries: 3, keys: 5, dk: 4, dv: 4,
    qStrides: [24, 12, 4], qOffset: 0, kStrides: [40, 20, 4], kOffset: 0, vStrides: [40, 20, 4], vOffset: 0,
    outStrides: [24, 12, 4], outOffset: 0, scale: 0.5, causal: 0, causalAlways: 0,
    maskKind: 0, maskStrides: [], maskOffset: 0, keyPaddingKind: 0, keyPaddingBatchStride: 0, keyPaddingOffset: 0,
    hasWeights: 0, weightsOffset: 0, hasScores: 0, scoresOffset: 0, sequences: 0,
    ...change,
  };
}

describe('bounds computed with checked arithmetic', () => {
  test('key padding: (batch - 1) * stride + keys overflowing is refused, not wrapped', () => {
    const q = new Float32Array(48);
    const kv = new Float32Array(80);
    const p = attentionParams(attentionFields({ keyPaddingKind: 2, keyPaddingBatchStride: 2 ** 53 - 1 }));
    expect(() => native.attention(q, kv, kv, new Float32Array(48), null, new Uint8Array(10), null, null, null, p)).toThrow(RangeError);
    expect(() => native.attention(q, kv, kv, new Float32Array(48), null, new Uint8Array(10), null, null, null, p)).toThrow('keyPaddingMask');
  });

  test('gemm, softmax and copy extents that overflow a long are refused with the operand named', () => {
    const c = new Float32Array(16);
    const g = (change: Partial<Parameters<typeof gemmParams>[0]>) =>
      gemmParams({
        m: 2, n: 2, k: 2, transA: 0, transB: 0, lda: 2, ldb: 2, ldc: 2, aBatchStride: 0, bBatchStride: 0, cBatchStride: 4,
        batch: 1, alpha: 1, beta: 0, streamOut: 0, aOffset: 0, bOffset: 0, cOffset: 0, biasOffset: 0, ...change,
      });
    expect(() => native.gemm(c, c, new Float32Array(16), null, g({ batch: 2 ** 40, aBatchStride: 2 ** 40 }))).toThrow(/^a: its shape and strides span more than 2\^53 elements$/);
    expect(() => native.gemm(c, c, new Float32Array(16), null, g({ m: 2 ** 30, lda: 2 ** 30, ldc: 2 ** 30, k: 2 ** 30, n: 2 ** 30 }))).toThrow(RangeError);
    const sp = softmaxParams({ rank: 2, scale: 1, causal: 0, streamOut: 0, maskKind: 0, xOffset: 0, outOffset: 0, maskOffset: 0, shape: [2 ** 40, 2 ** 30], xStrides: [0, 1], outStrides: [2 ** 40, 1], maskStrides: [] });
    expect(() => native.softmax(c, new Float32Array(16), null, sp)).toThrow(RangeError);
    const cp = copyStridedParams({ rank: 3, srcOffset: 0, dstOffset: 0, streamOut: 0, shape: [2 ** 20, 2 ** 20, 2 ** 20], srcStrides: [0, 0, 0], dstStrides: [2 ** 40, 2 ** 20, 1] });
    expect(() => native.copyStrided(c, new Float32Array(16), cp)).toThrow(RangeError);
  });
});

describe('out of memory and every C++ exception become JavaScript errors', () => {
  test('packing an empty matrix of 1e10 rows allocates nothing', () => {
    const p = packMatrix(Tensor.zeros([1e10, 0]));
    expect(p.shape).toEqual([1e10, 0]);
    expect(matmul(Tensor.zeros([0, 1e10]), p).shape).toEqual([0, 0]);
  });

  test('an allocation failing on a pool thread is a RangeError, sync and async', async () => {
    // Keys broadcast from one row: the fused kernel's per-thread panels cannot be allocated.
    const k = Tensor.zeros([1, 4]).expand([2 ** 40, 4]);
    expect(() => attention(Tensor.randn([8, 4]), k, k)).toThrow(RangeError);
    expect(() => attention(Tensor.randn([8, 4]), k, k)).toThrow('out of memory');
    await expect(attentionAsync(Tensor.randn([8, 4]), k, k)).rejects.toThrow(RangeError);
    await expect(attentionAsync(Tensor.randn([2, 4]), k, k)).rejects.toThrow('attentionAsync: out of memory while running the kernel');
    // A call that could never finish is refused before it starts.
    const huge = Tensor.zeros([1, 4]).expand([2 ** 48, 4]);
    expect(() => attention(Tensor.randn([8, 4]), huge, huge)).toThrow('the call is too large to compute');
    // The pool still works.
    const a = Tensor.randn([300, 300]);
    expectClose(matmul(a, a), matmulRef(a, a).value, 1e-3, 'after the failures');
  });
});

describe('smaller findings', () => {
  test('additive score over zero keys with more than 4 queries: zero output, no fused kernel', async () => {
    const additive = { wq: Tensor.randn([3, 4]), wk: Tensor.randn([3, 4]), w: Tensor.randn([3]) };
    for (const q of [Tensor.randn([5, 4]), Tensor.randn([70, 4]), Tensor.randn([2, 3, 9, 4])]) {
      const k = Tensor.zeros([...q.shape.slice(0, -2), 0, 4]);
      const r = attention(q, k, k, { score: 'additive', additive, needWeights: true });
      expect(Array.from(r.output.data).every((x) => x === 0)).toBe(true);
      expect(r.weights!.size).toBe(0);
      const a = await attentionAsync(q, k, k, { score: 'additive', additive });
      expect(Array.from(a.output.data).every((x) => x === 0)).toBe(true);
    }
  });

  test('a valid empty matmul over 2^32 inner elements succeeds; errors name their argument', async () => {
    const r = matmul(Tensor.zeros([0, 2 ** 32]), Tensor.zeros([2 ** 32, 0]));
    expect(r.shape).toEqual([0, 0]);
    expect((await matmulAsync(Tensor.zeros([0, 2 ** 32]), Tensor.zeros([2 ** 32, 0]))).shape).toEqual([0, 0]);
    expect(matmul(Tensor.zeros([3, 0]), Tensor.zeros([0, 5])).toArray()).toEqual(new Array(3).fill(new Array(5).fill(0)));
  });

  test('async out of memory rejects with a RangeError, as the sync form throws', async () => {
    const k = Tensor.zeros([1, 8]).expand([2 ** 36, 8]);
    let sync: unknown, async_: unknown;
    try {
      attention(Tensor.randn([16, 8]), k, k);
    } catch (e) {
      sync = e;
    }
    try {
      await attentionAsync(Tensor.randn([16, 8]), k, k);
    } catch (e) {
      async_ = e;
    }
    expect(sync).toBeInstanceOf(RangeError);
    expect(async_).toBeInstanceOf(RangeError);
  });

  test('a safetensors tensor named __proto__ is a tensor like any other', () => {
    const bytes = saveSafetensors({ ['__proto__']: Tensor.from([1, 2]), x: Tensor.from([3]) }, { ['__proto__']: 'meta' });
    const { tensors, metadata } = loadSafetensors(bytes);
    expect(Object.keys(tensors).sort()).toEqual(['__proto__', 'x']);
    expect(Object.getPrototypeOf(tensors)).toBe(null);
    expect(tensors['__proto__'].toArray()).toEqual([1, 2]);
    expect(metadata['__proto__']).toBe('meta');
    // A hand-written header: the name, then a dtype that is a key of Object.prototype.
    const file = (header: string) => {
      const bytes = new Uint8Array(8 + header.length + 4);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
      bytes.set(new TextEncoder().encode(header), 8);
      new DataView(bytes.buffer).setFloat32(8 + header.length, 5, true);
      return bytes;
    };
    const raw = '{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    expect(loadSafetensors(file(raw)).tensors['__proto__'].toArray()).toEqual([5]);
    expect(() => loadSafetensors(file(raw.replace('"F32"', '"constructor"')))).toThrow("tensor '__proto__' has dtype \"constructor\"");
  });

  test('MultiHeadAttention: causal with bias_k and a zero key, fewer keys than queries, as PyTorch pads its mask', async () => {
    // PyTorch appends bias_k and the zero key after the keys and pads attn_mask
    // with unmasked columns for them: every query sees them, even one whose
    // causal limit hides every real key.
    const mha = new MultiHeadAttention({ embedDim: 16, numHeads: 2, addBiasKV: true, addZeroAttn: true, seed: 5 });
    const L = 6;
    const S = 3;
    const query = Tensor.randn([2, L, 16], { seed: 1 });
    const memory = Tensor.randn([2, S, 16], { seed: 2 });
    const mask = Tensor.zeros([L, S]);
    for (let i = 0; i < L; ++i) for (let j = 0; j < S; ++j) if (j > i + S - L) mask.data[i * S + j] = -Infinity;
    const causal = mha.forward(query, memory, memory, { causal: true, needWeights: true });
    const masked = mha.forward(query, memory, memory, { attnMask: mask, needWeights: true });
    expectClose(causal.output, values(masked.output), 1e-6, 'output');
    expectClose(causal.weights!, values(masked.weights!), 1e-6, 'weights');
    // Query 0 sees no real key but both extra keys (the last two columns).
    const w0 = causal.weights!.select(0, 0).select(0, 0).toArray() as number[];
    expect(w0.slice(0, S)).toEqual([0, 0, 0]);
    expect(w0[S] + w0[S + 1]).toBeCloseTo(1, 6);
    const viaAsync = await mha.forwardAsync(query, memory, memory, { causal: true });
    expectClose(viaAsync.output, values(causal.output), 1e-6, 'forwardAsync');
  });

  test('fused attention with dk = 0 (every score 0: the mean of the values)', () => {
    for (const sq of [3, 40]) {
      const q = Tensor.zeros([1, 2, sq, 0]);
      const k = Tensor.zeros([1, 2, 7, 0]);
      const v = Tensor.randn([1, 2, 7, 5], { seed: 9 });
      expectClose(attention(q, k, v, { scale: 1 }).output, attentionRef(q, k, v, { scale: 1 }).output, 1e-6, `sq ${sq}`);
    }
  });
});
