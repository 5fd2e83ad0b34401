// The parameter blocks (native/params.json) are one definition for both
// sides: the generated writers put every field in its slot, the public API
// gives every slot a value, and the addon reads every slot of every block.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  MultiHeadAttention,
  Tensor,
  attention,
  attentionAsync,
  gelu,
  layerNorm,
  layerNormAsync,
  linear,
  linearAsync,
  matmul,
  matmulAsync,
  packMatrix,
  reluAsync,
  softmax,
  softmaxAsync,
} from '../src';
import { native, type NativeBinding } from '../src/native';
import * as params from '../src/params';

interface Spec {
  constants: Record<string, number>;
  blocks: Record<string, { slots: [string, string][] }>;
}

const spec = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'native', 'params.json'), 'utf8')) as Spec;

/** The spec's slots of one block, read here independently of the generator: name, length, whether an array. */
function slotsOf(block: string): { name: string; length: number; array: boolean }[] {
  return spec.blocks[block].slots.map(([decl]) => {
    const m = /^(\w+)(?:\[(\w+)\])?$/.exec(decl)!;
    const len = m[2] === undefined ? 1 : /^\d+$/.test(m[2]) ? Number(m[2]) : spec.constants[m[2]];
    return { name: m[1], length: len, array: m[2] !== undefined };
  });
}

/** Element names in order: "m", ..., "shape[0]", "shape[1]", ... */
function elementsOf(block: string): string[] {
  return slotsOf(block).flatMap((s) => (s.array ? Array.from({ length: s.length }, (_, i) => `${s.name}[${i}]`) : [s.name]));
}

const BLOCKS = Object.keys(spec.blocks);
type Writer = (fields: Record<string, number | number[]>) => Float64Array;
const writerOf = (block: string) => (params as unknown as Record<string, Writer>)[`${block}Params`];

describe('one layout for both sides', () => {
  test('the generated module and the addon know the blocks of the spec, slot by slot', () => {
    expect(Object.keys(params.PARAM_BLOCKS)).toEqual(BLOCKS);
    for (const b of BLOCKS) expect(params.PARAM_BLOCKS[b], b).toEqual(elementsOf(b));
    // The addon's names for the blocks (what it reports reading comes from its own copy of the layout).
    expect(Object.keys(native.paramSlotsRead()).sort()).toEqual([...BLOCKS].sort());
    expect(params.MAX_RANK).toBe(spec.constants.maxRank);
  });

  test('each writer puts every field in its slot and leaves none unwritten', () => {
    for (const b of BLOCKS) {
      // Slot e gets the value 1000 + e, so a field in the wrong place or a slot left out shows.
      const fields: Record<string, number | number[]> = {};
      let e = 0;
      for (const s of slotsOf(b)) {
        const values = Array.from({ length: s.length }, (_, i) => 1000 + e + i);
        fields[s.name] = s.array ? values : values[0];
        e += s.length;
      }
      const written = writerOf(b)(fields);
      expect(Array.from(written), b).toEqual(Array.from({ length: e }, (_, i) => 1000 + i));
      // The writer reuses its array: entries past a shorter field's length are 0 again.
      const short = Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, Array.isArray(v) ? v.slice(0, 1) : v]));
      const again = Array.from(writerOf(b)(short));
      let at = 0;
      for (const s of slotsOf(b)) {
        const want = s.array ? [1000 + at, ...new Array(s.length - 1).fill(0)] : [1000 + at];
        expect(again.slice(at, at + s.length), `${b} ${s.name}`).toEqual(want);
        at += s.length;
      }
    }
  });

  test('a writer refuses an array longer than its slot', () => {
    const fields = Object.fromEntries(slotsOf('softmax').map((s) => [s.name, s.array ? [] : 0]));
    expect(() => params.softmaxParams({ ...fields, shape: new Array(9).fill(1) } as unknown as params.SoftmaxParams)).toThrow(
      'Expected at most 8 entries for softmax shape but received 9',
    );
  });
});

describe('every slot is written by the API and read by the addon', () => {
  /** Every parameter block the public API passed to the addon, by block. */
  const sent = new Map<string, Float64Array[]>();
  const restore: [keyof NativeBinding, unknown][] = [];

  // Records the parameter block (the last argument) of every addon call that takes one.
  function intercept(): void {
    const binding = native as unknown as Record<string, unknown>;
    for (const name of Object.keys(binding)) {
      const fn = binding[name];
      if (typeof fn !== 'function') continue;
      restore.push([name as keyof NativeBinding, fn]);
      binding[name] = (...args: unknown[]) => {
        const last = args[args.length - 1];
        if (last instanceof Float64Array) {
          const block = name.replace(/Async$/, '');
          sent.set(block, [...(sent.get(block) ?? []), Float64Array.from(last)]);
        }
        return (fn as (...a: unknown[]) => unknown)(...args);
      };
    }
  }

  /** Public calls covering every option that reaches a parameter block. */
  async function callMatrix(): Promise<void> {
    const r = (shape: number[], seed: number) => Tensor.randn(shape, { seed }); // fill, normal
    const w = Tensor.uniform([6, 5], { seed: 1, low: -1, high: 1 }); // fill, uniform
    const bias = r([6], 2);
    // gemm: transposes, a strided out with beta, a bias, batches on both sides.
    const out = Tensor.zeros([3, 4, 7]).narrow(2, 1, 6);
    matmul(r([3, 5, 4], 3).transpose(), w, { transposeB: true, alpha: 0.5, beta: 1, out, bias });
    await matmulAsync(r([2, 4, 5], 4), r([2, 5, 3], 5));
    // gemmWithPacked and packMatrix.
    const packed = packMatrix(w, { transpose: true });
    matmul(r([2, 3, 5], 6), packed, { bias });
    await matmulAsync(r([3, 5], 7).transpose(), packed, { transposeA: true, beta: 1, out: Tensor.zeros([3, 6]) });
    // softmax and copyStrided at rank 8, both mask kinds.
    const x8 = r([2, 1, 2, 1, 2, 1, 2, 3], 8);
    softmax(x8.transpose(0, 7).clone().transpose(0, 7), { mask: r([2, 1, 2, 1, 2, 1, 2, 3], 9), causal: true, scale: 2 });
    await softmaxAsync(r([3, 4], 10), { mask: Tensor.zeros([4], 'uint8') });
    Tensor.zeros([3, 2], 'uint8').transpose().clone();
    // attention: masks of both kinds, key padding, weights, causal, cosine, additive.
    const q = r([2, 2, 3, 4], 11);
    const k = r([2, 2, 5, 4], 12);
    const v = r([2, 2, 5, 3], 13);
    const u8 = Tensor.zeros([3, 5], 'uint8');
    attention(q, k, v, { attnMask: u8, keyPaddingMask: Tensor.zeros([2, 5]), causal: true });
    attention(q, k, v, { attnMask: r([2, 1, 3, 5], 14), keyPaddingMask: Tensor.zeros([2, 5], 'uint8'), needWeights: true });
    await attentionAsync(q, k, v, { score: 'cosine', scale: 3 });
    const additive = { wq: r([7, 4], 15), wk: r([7, 4], 16), w: r([7], 17), bias: r([7], 18) };
    attention(q, k, v, { score: 'additive', additive, needWeights: true });
    await attentionAsync(q, k, v, { score: 'additive', additive: { ...additive, bias: undefined } });
    // Packed sequences.
    attention(q, q, q, { sequenceLengths: [1, 2], causal: true });
    // The module on top, with a cache.
    const mha = new MultiHeadAttention({ embedDim: 8, numHeads: 2, seed: 3 });
    const cache = mha.createKVCache({ batch: 1 });
    mha.forward(r([1, 2, 8], 19), undefined, undefined, { kvCache: cache, needWeights: true });
    await mha.forwardAsync(r([1, 1, 8], 20), undefined, undefined, { kvCache: cache });
    // The Transformer layer's ops: layerNorm with every optional input and the sum output, activations, linear layers.
    const x = r([2, 3, 5], 21);
    layerNorm(x, { residual: r([3, 5], 22), inputBias: r([5], 23), weight: r([5], 24), bias: r([5], 25), eps: 1e-6, sumOut: Tensor.empty([2, 3, 5]) });
    const rank8 = r([2, 1, 2, 1, 2, 1, 2, 3], 26);
    await layerNormAsync(rank8, { residual: r([2, 1, 2, 1, 2, 1, 2, 3], 27), sumOut: Tensor.empty(rank8.shape) });
    gelu(rank8, { approximate: 'tanh' });
    await reluAsync(x);
    linear(x, w.transpose().contiguous().transpose(), { bias, activation: 'gelu' }); // weight stored [in, out]
    await linearAsync(x.narrow(1, 0, 2), packed, { activation: 'relu' });
  }

  beforeAll(async () => {
    intercept();
    try {
      await callMatrix();
    } finally {
      const binding = native as unknown as Record<string, unknown>;
      for (const [name, fn] of restore) binding[name] = fn;
    }
  });

  afterAll(() => sent.clear());

  test('the public API sends every block, each slot given a number', () => {
    expect([...sent.keys()].sort()).toEqual([...BLOCKS].sort());
    for (const [block, blocks] of sent) {
      const names = elementsOf(block);
      for (const p of blocks) {
        expect(p.length, block).toBe(names.length);
        // A slot whose field was missing would hold NaN (undefined written into a Float64Array).
        const unwritten = names.filter((_, i) => Number.isNaN(p[i]));
        expect(unwritten, `${block}: slots without a value`).toEqual([]);
      }
    }
  });

  test('the addon reads every slot of every block', () => {
    // The public API normalises rows of at most 4 dimensions; the addon takes up to maxRank.
    const t = Tensor.randn([2, 1, 2, 1, 2, 1, 2, 3], { seed: 21 }).transpose(0, 6);
    const dst = new Float32Array(t.size);
    const p = params.l2NormalizeParams({ rank: 8, srcOffset: t.offset, dstOffset: 0, shape: t.shape, srcStrides: t.strides, eps: 1e-8 });
    native.l2Normalize(t.data as Float32Array, dst, p);

    const read = native.paramSlotsRead();
    for (const b of BLOCKS) {
      const missing = elementsOf(b).filter((n) => !read[b].includes(n));
      expect(missing, `${b}: slots the addon never read`).toEqual([]);
      expect(read[b], b).toEqual(elementsOf(b));
    }
  });
});
