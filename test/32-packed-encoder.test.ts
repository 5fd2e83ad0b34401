import { describe, expect, test } from 'vitest';
import { Batcher, Tensor, TransformerEncoder, TransformerEncoderLayer } from '../src';
import { expectClose, values } from './support/reference';

// The encoder layer and stack over packed variable-length input: the output
// rows of each sequence equal running that sequence alone, on every kernel
// path (this file runs once per path).
let seed = 3200;
const rand = (shape: number[]) => Tensor.randn(shape, { seed: seed++ });

// Lengths on both sides of the tile edges (query blocks of 16, 24, 32, 56
// rows; key blocks of 96 and 128), shuffled so they sit at every offset.
const LENGTHS = [1, 57, 2, 16, 129, 3, 24, 17, 56, 5, 128, 33, 25, 97, 31];

function pack(xs: Tensor[]): Tensor {
  const total = xs.reduce((n, x) => n + x.shape[0], 0);
  const out = Tensor.empty([total, xs[0].shape[1]]);
  let row = 0;
  for (const x of xs) {
    out.narrow(0, row, x.shape[0]).assign(x);
    row += x.shape[0];
  }
  return out;
}

/** Each sequence's rows of the packed output against the module on that sequence alone. */
function expectEachAlone(packed: Tensor, xs: Tensor[], alone: (x: Tensor) => Tensor, label: string): void {
  let row = 0;
  for (const [i, x] of xs.entries()) {
    const want = values(alone(x));
    expectClose(packed.narrow(0, row, x.shape[0]), want, 1e-5, `${label}, sequence ${i} (${x.shape[0]} tokens)`);
    row += x.shape[0];
  }
}

describe('TransformerEncoderLayer over packed sequences', () => {
  const E = 48;
  for (const normFirst of [false, true])
    for (const activation of ['relu', 'gelu'] as const)
      for (const causal of [false, true]) {
        test(`${normFirst ? 'pre' : 'post'}-norm, ${activation}${causal ? ', causal' : ''}: forward and forwardAsync equal each sequence alone`, async () => {
          const layer = new TransformerEncoderLayer({ dModel: E, numHeads: 4, dimFeedforward: 80, activation, normFirst, seed: seed++ });
          const xs = LENGTHS.map((n) => rand([n, E]));
          const x = pack(xs);
          const sequenceLengths = LENGTHS;
          const y = layer.forward(x, { sequenceLengths, causal });
          expect(y.shape).toEqual([x.shape[0], E]);
          expectEachAlone(y, xs, (s) => layer.forward(s, { causal }), 'forward');
          const ya = await layer.forwardAsync(x, { sequenceLengths: Int32Array.from(LENGTHS), causal });
          expectEachAlone(ya, xs, (s) => layer.forward(s, { causal }), 'forwardAsync');
        });
      }

  test('one sequence alone is the plain forward', () => {
    const layer = new TransformerEncoderLayer({ dModel: E, numHeads: 4, dimFeedforward: 80, seed: 7 });
    const x = rand([70, E]);
    expectClose(layer.forward(x, { sequenceLengths: [70] }), values(layer.forward(x)), 1e-6, 'one sequence');
  });

  test('lengths and options are checked, with errors that name them', async () => {
    const layer = new TransformerEncoderLayer({ dModel: E, numHeads: 4, dimFeedforward: 80, seed: 8 });
    const x = rand([10, E]);
    expect(() => layer.forward(x, { sequenceLengths: [3, 6] })).toThrow('sum to 9');
    expect(() => layer.forward(x, { sequenceLengths: [3, 0, 7] })).toThrow('Expected positive integer for sequenceLengths[1] but received 0');
    expect(() => layer.forward(rand([2, 5, E]), { sequenceLengths: [5, 5] })).toThrow(
      'forward: with sequenceLengths, src is the packed tokens [totalTokens, 48]',
    );
    expect(() => layer.forward(x, { sequenceLengths: [10], srcMask: Tensor.zeros([10, 10]) })).toThrow('sequenceLengths cannot be combined with srcMask');
    expect(() => layer.forward(x, { sequenceLengths: [10], srcKeyPaddingMask: Tensor.zeros([10], 'uint8') })).toThrow(
      'sequenceLengths cannot be combined with srcKeyPaddingMask',
    );
    expect(() => layer.forward(x, { sequenceLengths: '3,7' as unknown as number[] })).toThrow(TypeError);
    await expect(layer.forwardAsync(x, { sequenceLengths: [4, 4] })).rejects.toThrow('sum to 8');
  });
});

describe('TransformerEncoder over packed sequences', () => {
  test('a stack with a final norm: each sequence as if alone, sync and async', async () => {
    const E = 32;
    const enc = new TransformerEncoder({ dModel: E, numHeads: 2, dimFeedforward: 64, numLayers: 3, finalNorm: true, activation: 'gelu', seed: 9 });
    const lengths = [5, 1, 64, 19, 2];
    const xs = lengths.map((n) => rand([n, E]));
    const x = pack(xs);
    expectEachAlone(enc.forward(x, { sequenceLengths: lengths }), xs, (s) => enc.forward(s), 'forward');
    expectEachAlone(await enc.forwardAsync(x, { sequenceLengths: lengths }), xs, (s) => enc.forward(s), 'forwardAsync');
  });

  test('through a Batcher: each caller gets its own rows, as if it ran alone', async () => {
    const E = 32;
    const enc = new TransformerEncoder({ dModel: E, numHeads: 4, dimFeedforward: 64, numLayers: 2, seed: 10 });
    const batcher = new Batcher(enc, { maxBatchTokens: 256 });
    const xs = [7, 1, 40, 128, 3, 90, 11].map((n) => rand([n, E]));
    const ys = await Promise.all(xs.map((x) => batcher.run(x)));
    for (const [i, x] of xs.entries()) expectClose(ys[i], values(enc.forward(x)), 1e-5, `request ${i}`);
    const s = batcher.stats();
    expect(s.requests).toBe(xs.length);
    expect(s.batches).toBeLessThan(xs.length);
    await batcher.close();
  });
});
