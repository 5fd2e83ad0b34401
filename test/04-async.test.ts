import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, test } from 'vitest';
import { Tensor, matmul, matmulAsync, softmax, softmaxAsync } from '../src';
import { expectBitwiseEqual } from './support/reference';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

describe('async forms', () => {
  test('matmulAsync gives the same bits as matmul', async () => {
    for (const [m, n, k, batch] of [
      [1, 7, 5, 1],
      [65, 33, 17, 1],
      [300, 257, 131, 1],
      [16, 16, 16, 48],
    ]) {
      const a = Tensor.randn([batch, m, k], { seed: m });
      const b = Tensor.randn([batch, n, k], { seed: n });
      const sync = matmul(a, b, { transposeB: true, alpha: 0.5 });
      const asyncOut = await matmulAsync(a, b, { transposeB: true, alpha: 0.5 });
      expectBitwiseEqual(asyncOut, sync, `${m}x${n}x${k}`);
    }
  });

  test('softmaxAsync gives the same bits as softmax, with masks', async () => {
    const x = Tensor.randn([4, 3, 9, 70], { seed: 5, std: 4 });
    const mask = Tensor.zeros([4, 1, 1, 70], 'uint8');
    mask.data.fill(1, 60, 70);
    const sync = softmax(x, { mask, causal: true, scale: 0.2 });
    const got = await softmaxAsync(x, { mask, causal: true, scale: 0.2 });
    expectBitwiseEqual(got, sync, 'softmax');
  });

  test('results land in the given out', async () => {
    const out = Tensor.zeros([8, 8]);
    const r = await matmulAsync(Tensor.randn([8, 3]), Tensor.randn([3, 8]), { out });
    expect(r).toBe(out);
    expect(out.data.some((v) => v !== 0)).toBe(true);
  });

  test('bad arguments reject with the same errors as the sync form', async () => {
    await expect(matmulAsync(1 as never, Tensor.zeros([2, 2]))).rejects.toThrow(TypeError);
    await expect(matmulAsync(Tensor.zeros([2, 3]), Tensor.zeros([2, 3]))).rejects.toThrow(RangeError);
    await expect(softmaxAsync(Tensor.zeros([2, 3]), { scale: NaN })).rejects.toThrow(
      'Expected finite number for scale but received NaN of type number',
    );
  });

  test('the event loop keeps running while the kernel works', async () => {
    const a = Tensor.randn([1200, 1200], { seed: 1 });
    const b = Tensor.randn([1200, 1200], { seed: 2 });
    let ticks = 0;
    let done = false;
    const timer = setInterval(() => ticks++, 0);
    const p = matmulAsync(a, b).then(() => {
      done = true;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(done).toBe(false); // the Promise did not settle synchronously...
    await p;
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0); // ...and timers fired while it ran
  });

  test('inputs stay alive until the Promise settles, even when the caller drops them', async () => {
    const expected = matmul(Tensor.randn([400, 300], { seed: 11 }), Tensor.randn([300, 500], { seed: 12 }));
    const start = () => matmulAsync(Tensor.randn([400, 300], { seed: 11 }), Tensor.randn([300, 500], { seed: 12 }));
    const pending = [start(), start(), start()];
    let junk: Float32Array[] = [];
    for (let i = 0; i < 5; ++i) {
      gc();
      // Churn the heap so freed memory would be reused.
      junk = Array.from({ length: 50 }, () => new Float32Array(120_000).fill(i));
    }
    for (const r of await Promise.all(pending)) expectBitwiseEqual(r, expected, 'after gc');
    // Had an output array been freed while its kernel ran, its memory could
    // have gone to these, and the kernel would have written into them.
    expect(junk.filter((a) => !a.every((v) => v === 4)).length).toBe(0);
  });

  test('many concurrent calls', async () => {
    const inputs = Array.from({ length: 24 }, (_, i) => [
      Tensor.randn([60 + i, 70], { seed: i }),
      Tensor.randn([70, 50], { seed: 100 + i }),
    ]);
    const results = await Promise.all(inputs.map(([a, b]) => matmulAsync(a, b)));
    results.forEach((r, i) => expectBitwiseEqual(r, matmul(inputs[i][0], inputs[i][1]), `call ${i}`));
  });
});
