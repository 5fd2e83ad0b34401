import { describe, expect, test } from 'vitest';
import { KVCache, MultiHeadAttention, Tensor } from '../src';
import { expectClose, values } from './support/reference';

const TOL = 1e-5;

function model(seed = 1) {
  const m = new MultiHeadAttention({ embedDim: 32, numHeads: 4, seed });
  m.inProjBias!.assign(Tensor.randn([96], { seed: seed + 100, std: 0.1 }));
  m.outProjBias!.assign(Tensor.randn([32], { seed: seed + 101, std: 0.1 }));
  return m;
}

describe('incremental decoding with a KV cache', () => {
  test('one step at a time equals the full causal forward', () => {
    const m = model();
    const x = Tensor.randn([1, 23, 32], { seed: 7 });
    const full = values(m.forward(x, undefined, undefined, { causal: true }).output);
    const cache = m.createKVCache({ capacity: 4 }); // grows several times
    for (let t = 0; t < 23; ++t) {
      const step = x.narrow(1, t, 1);
      const y = m.forward(step, undefined, undefined, { kvCache: cache });
      expect(y.output.shape).toEqual([1, 1, 32]);
      expectClose(y.output, full.subarray(t * 32, (t + 1) * 32), TOL, `step ${t}`);
    }
    expect(cache.length).toBe(23);
    expect(cache.capacity).toBeGreaterThanOrEqual(23);
  });

  test('several steps per call, batch > 1, with weights', () => {
    const m = model(2);
    const x = Tensor.randn([3, 17, 32], { seed: 8 });
    const full = m.forward(x, undefined, undefined, { causal: true, needWeights: true, averageWeights: false });
    const fo = values(full.output);
    const cache = m.createKVCache({ batch: 3 });
    let t = 0;
    for (const n of [5, 1, 4, 7]) {
      const y = m.forward(x.narrow(1, t, n), undefined, undefined, { kvCache: cache, needWeights: true, averageWeights: false });
      // Compare batch by batch: rows t .. t + n of each item.
      for (let b = 0; b < 3; ++b) {
        const want = fo.subarray((b * 17 + t) * 32, (b * 17 + t + n) * 32);
        expectClose(y.output.select(0, b), want, TOL, `chunk at ${t}, batch ${b}`);
      }
      // The new rows' weights over the keys so far match the full forward's.
      expect(y.weights!.shape).toEqual([3, 4, n, t + n]);
      const fw = full.weights!.narrow(2, t, n).narrow(3, 0, t + n);
      expectClose(y.weights!, values(fw), TOL, `weights at ${t}`);
      t += n;
    }
    expect(cache.length).toBe(17);
  });

  test('unbatched steps, reset, and the async form', async () => {
    const m = model(3);
    const x = Tensor.randn([9, 32], { seed: 9 });
    const full = values(m.forward(x, undefined, undefined, { causal: true }).output);
    const cache = m.createKVCache();
    for (let round = 0; round < 2; ++round) {
      cache.reset();
      for (let t = 0; t < 9; ++t) {
        const y = await m.forwardAsync(x.narrow(0, t, 1), undefined, undefined, { kvCache: cache });
        expectClose(y.output, full.subarray(t * 32, (t + 1) * 32), TOL, `round ${round} step ${t}`);
      }
    }
  });

  test('padding masks over the cached keys', () => {
    const m = model(4);
    const x = Tensor.randn([2, 6, 32], { seed: 10 });
    const pad = Tensor.zeros([2, 6], 'uint8');
    pad.data[1] = 1; // batch 0: key 1 is padding
    const full = values(m.forward(x, undefined, undefined, { causal: true, keyPaddingMask: pad }).output);
    const cache = m.createKVCache({ batch: 2 });
    for (let t = 0; t < 6; ++t) {
      const y = m.forward(x.narrow(1, t, 1), undefined, undefined, { kvCache: cache, keyPaddingMask: pad.narrow(1, 0, t + 1) });
      for (let b = 0; b < 2; ++b) expectClose(y.output.select(0, b), full.subarray((b * 6 + t) * 32, (b * 6 + t + 1) * 32), TOL, `t ${t} b ${b}`);
    }
  });

  test('misuse is refused', () => {
    const m = model(5);
    const cache = m.createKVCache({ batch: 2 });
    const x = Tensor.zeros([1, 1, 32]);
    expect(() => m.forward(x, undefined, undefined, { kvCache: cache })).toThrow('forward: kvCache holds batch 2 but query has batch 1');
    expect(() => m.forward(x, Tensor.zeros([1, 3, 32]), undefined, { kvCache: m.createKVCache() })).toThrow('a kvCache is for self-attention');
    const other = new MultiHeadAttention({ embedDim: 32, numHeads: 8 }).createKVCache();
    expect(() => m.forward(x, undefined, undefined, { kvCache: other })).toThrow('kvCache has 8 heads of 4, this module 4 of 8');
    expect(() => m.forward(x, undefined, undefined, { kvCache: {} as KVCache })).toThrow('Expected KVCache for kvCache');
    expect(() => m.createKVCache({ batch: 0 })).toThrow('Expected positive integer for batch but received 0');
  });
});
