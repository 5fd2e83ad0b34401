// A module's forwardAsync sends its kernels to the addon as one chain (one
// round trip to the thread that runs async calls): the results are the sync forward's, bit
// for bit; a step that cannot be chained (a copy, a packing, a preparation
// that would copy what a queued kernel has yet to write) runs after the chain
// before it; errors settle every queued call first.
import * as path from 'node:path';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { MultiHeadAttention, Tensor, TransformerDecoderLayer, TransformerEncoderLayer, getIdleSpin, layerNorm, matmul, matmulAsync, packMatrix, setIdleSpin } from '../src';
import { layerNormQueued } from '../src/layers';
import { runAsync, type Step, type Steps } from '../src/multihead';
import { native } from '../src/native';
import { newTensor } from '../src/tensor';
import { distPath, runChild } from './support/child';
import { onWidestIsa } from './support/isa';
import { values } from './support/reference';

let seed = 3300;
const rand = (shape: number[]) => Tensor.randn(shape, { seed: seed++ });

/** The number of calls each native.chain() queued while `f` ran. */
async function chains(f: () => Promise<unknown>): Promise<number[]> {
  const counts: number[] = [];
  const real = native.chain.bind(native);
  const spy = vi.spyOn(native, 'chain').mockImplementation((cb: () => void) => {
    const n = real(cb);
    counts.push(n);
    return n;
  });
  try {
    await f();
  } finally {
    spy.mockRestore();
  }
  return counts;
}

const same = (a: Tensor, b: Tensor) => expect(Array.from(values(a))).toEqual(Array.from(values(b)));

afterEach(() => vi.restoreAllMocks());

describe('forwardAsync as one chain', () => {
  const E = 32;
  const x = rand([2, 5, E]);
  const memory = rand([2, 7, E]);

  test('MultiHeadAttention: self-attention, cross-attention, weights, masks: one chain each, the sync results bit for bit', async () => {
    const m = new MultiHeadAttention({ embedDim: E, numHeads: 4, seed: 1 });
    const mask = Tensor.zeros([2, 5], 'uint8');
    mask.data[4] = 1;
    const cases: [string, () => Parameters<MultiHeadAttention['forward']>, number][] = [
      ['self', () => [x], 3],
      ['cross', () => [x, memory], 4],
      ['weights', () => [x, x, x, { needWeights: true }], 4],
      ['key padding', () => [x, x, x, { keyPaddingMask: mask }], 3],
      ['causal', () => [x, x, x, { causal: true }], 3],
    ];
    for (const [name, args, kernels] of cases) {
      const want = m.forward(...args());
      await m.forwardAsync(...args()); // packs the weights (steps of their own)
      let got: Awaited<ReturnType<MultiHeadAttention['forwardAsync']>> | undefined;
      expect(await chains(async () => (got = await m.forwardAsync(...args()))), name).toEqual([kernels]);
      same(got!.output, want.output);
      if (want.weights) same(got!.weights!, want.weights);
    }
  });

  test('a request of one token, and encoder and decoder layers (post- and pre-norm): one chain each, the sync results bit for bit', async () => {
    const one = rand([1, 1, E]);
    const m = new MultiHeadAttention({ embedDim: E, numHeads: 2, seed: 2 });
    await m.forwardAsync(one);
    let r: Tensor | undefined;
    expect(await chains(async () => (r = (await m.forwardAsync(one)).output))).toEqual([3]);
    same(r!, m.forward(one).output);
    for (const normFirst of [false, true]) {
      const enc = new TransformerEncoderLayer({ dModel: E, numHeads: 4, dimFeedforward: 48, seed: 3, normFirst });
      const dec = new TransformerDecoderLayer({ dModel: E, numHeads: 4, dimFeedforward: 48, seed: 4, normFirst });
      await enc.forwardAsync(x);
      await dec.forwardAsync(x, memory);
      let e: Tensor | undefined;
      let d: Tensor | undefined;
      expect(await chains(async () => (e = await enc.forwardAsync(x)))).toEqual([7]);
      expect(await chains(async () => (d = await dec.forwardAsync(x, memory)))).toEqual([12]);
      same(e!, enc.forward(x));
      same(d!, dec.forward(x, memory));
    }
  });

  test('concurrent forwards, each its own chain, each its own result', async () => {
    const m = new MultiHeadAttention({ embedDim: E, numHeads: 4, seed: 5 });
    const inputs = Array.from({ length: 6 }, (_, i) => rand([1 + (i % 3), 2 + i, E]));
    const want = inputs.map((t) => m.forward(t).output);
    const got = await Promise.all(inputs.map((t) => m.forwardAsync(t)));
    got.forEach((g, i) => same(g.output, want[i]));
  });

  test('a forwardAsync from inside a trace callback joins the chain it is called from', async () => {
    const m = new MultiHeadAttention({ embedDim: E, numHeads: 4, seed: 6 });
    await m.forwardAsync(x);
    const inner: Promise<{ output: Tensor }>[] = [];
    const outer = await m.forwardAsync(x, x, x, {
      trace: (stage) => {
        if (stage === 'split heads' && inner.length === 0) inner.push(m.forwardAsync(memory));
      },
    });
    expect(inner.length).toBe(1);
    same(outer.output, m.forward(x).output);
    same((await inner[0]).output, m.forward(memory).output);
  });
});

describe('runAsync', () => {
  const owned = (shape: number[]) => newTensor(shape, 'float32', false, 'owned');

  /** a · b into an owned [4, 6], then a layerNorm of its transpose (a strided view: layerNorm copies it first). */
  function* stepsWithHazard(a: Tensor, b: Tensor, norm: (x: Tensor) => Step): Steps<Tensor> {
    const ab = (yield { kind: 'matmul', a, b, options: { out: owned([4, 6]) } }) as Tensor;
    return (yield norm(ab.permute([1, 0]))) as Tensor;
  }

  test('a step whose preparation would copy what a queued kernel writes runs after the chain, with that kernel\'s result', async () => {
    const a = rand([4, 3]);
    const b = rand([3, 6]);
    const want = layerNorm(matmul(a, b).permute([1, 0]));
    const out = owned([6, 4]);
    const norm = (t: Tensor): Step => ({
      kind: 'op',
      run: () => layerNorm(t, { out }),
      runAsync: async () => {
        throw new Error('not reached: the chained form runs');
      },
      queue: () => layerNormQueued(t, { out }),
    });
    let got: Tensor | undefined;
    // The matmul is chained; the norm's transpose copy meets the hazard and waits, then chains alone.
    expect(await chains(async () => (got = await runAsync(stepsWithHazard(a, b, norm))))).toEqual([1, 1]);
    same(got!, want);
  });

  test('an error preparing a step rejects the forward after the calls queued before it have settled', async () => {
    const a = rand([4, 3]);
    const b = packMatrix(rand([6, 3]), { transpose: true });
    const first = owned([4, 6]);
    first.data.fill(NaN);
    function* steps(): Steps<Tensor> {
      yield { kind: 'matmul', a, b, options: { out: first } };
      return (yield { kind: 'matmul', a, b: rand([5, 2]), options: {} }) as Tensor; // 3 against 5: a RangeError
    }
    await expect(runAsync(steps())).rejects.toThrow(RangeError);
    same(first, matmul(a, b));
  });

  test('a kernel that fails as it runs rejects the forward; the chained calls after it reject unrun', async () => {
    // 2^40 keys (a broadcast view): the attention kernel runs out of memory on the pool.
    const keys = Tensor.zeros([1, 4]).expand([2 ** 40, 4]);
    const after = owned([4, 6]);
    after.data.fill(NaN);
    const a = rand([4, 3]);
    const b = packMatrix(rand([6, 3]), { transpose: true });
    function* steps(): Steps<Tensor> {
      yield { kind: 'attention', q: rand([2, 4]), k: keys, v: keys, options: {}, causalAlways: 0 };
      return (yield { kind: 'matmul', a, b, options: { out: after } }) as Tensor;
    }
    const real = native.chain.bind(native);
    const counts: number[] = [];
    vi.spyOn(native, 'chain').mockImplementation((cb: () => void) => {
      const n = real(cb);
      counts.push(n);
      return n;
    });
    const run = runAsync(steps());
    await expect(run).rejects.toThrow(/attentionAsync: out of memory while running the kernel/);
    expect(counts).toEqual([2]);
    expect(Array.from(after.data).every(Number.isNaN)).toBe(true); // never written
  });

  test('results outside the addon\'s memory are not chained, and are still right', async () => {
    const a = rand([3, 4]);
    const b = rand([4, 5]);
    const plain = Tensor.zeros([3, 5]); // small: plain memory
    function* steps(): Steps<Tensor> {
      return (yield { kind: 'matmul', a, b, options: { out: plain } }) as Tensor;
    }
    expect(await chains(() => runAsync(steps()))).toEqual([0]);
    same(plain, matmul(a, b));
  });
});

describe("the async calls' thread", () => {
  test('many calls at once (most find it busy and go to libuv\'s pool), and with setIdleSpin(0) (all go there): every result right', async () => {
    const spin = getIdleSpin();
    try {
      for (const us of [spin, 0]) {
        setIdleSpin(us);
        const pairs = Array.from({ length: 40 }, (_, i) => [rand([1 + (i % 7), 9]), rand([9, 2 + (i % 5)])] as const);
        const got = await Promise.all(pairs.map(([a, b]) => matmulAsync(a, b)));
        got.forEach((g, i) => same(g, matmul(...pairs[i])));
      }
    } finally {
      setIdleSpin(spin);
    }
  });

  test.skipIf(!onWidestIsa)('a process whose async calls have settled exits at once, as does a worker thread, while the thread polls', () => {
    const r = runChild(`
      const { Worker } = require('node:worker_threads');
      const started = Date.now();
      const m = new ak.MultiHeadAttention({ embedDim: 64, numHeads: 4, seed: 1 });
      const x = ak.Tensor.randn([1, 5, 64], { seed: 2 });
      m.forwardAsync(x).then(async (r) => {
        const w = new Worker(\`
          const ak = require(\${JSON.stringify(require.resolve(${JSON.stringify(path.join(distPath, 'index.js'))}))});
          const m = new ak.MultiHeadAttention({ embedDim: 64, numHeads: 4, seed: 1 });
          m.forwardAsync(ak.Tensor.randn([1, 5, 64], { seed: 2 })).then(() => ak.matmulAsync(ak.Tensor.randn([4, 4]), ak.Tensor.randn([4, 4])));
        \`, { eval: true });
        const code = await new Promise((resolve) => w.once('exit', resolve));
        console.log('output', r.output.shape.join('x'), 'worker exit', code);
        process.on('exit', () => console.error(Date.now() - started > 5000 ? 'slow exit' : ''));
      });
    `, { ATTN_SPIN_US: '1000000' });
    expect(r.stderr.trim()).toBe('');
    expect(r.stdout.trim()).toBe('output 1x5x64 worker exit 0');
    expect(r.status).toBe(0);
  });
});
