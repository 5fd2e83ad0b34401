import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, test } from 'vitest';
import { Tensor, matmul, softmax } from '../src';
import { expectBitwiseEqual } from './support/reference';
import { distPath, runChild } from './support/child';
import { onWidestIsa } from './support/isa';

// Each worker loads the compiled package, computes, and posts the results.
const workerCode = `
const { parentPort, workerData } = require('node:worker_threads');
const ak = require(workerData.dist);
(async () => {
  const a = ak.Tensor.randn([workerData.m, 96], { seed: workerData.seed });
  const b = ak.Tensor.randn([96, 80], { seed: workerData.seed + 1 });
  const sync = ak.matmul(a, b);
  const viaAsync = await ak.matmulAsync(a, b);
  const sm = await ak.softmaxAsync(sync, { scale: 0.1 });
  parentPort.postMessage({ sync: sync.data, viaAsync: viaAsync.data, sm: sm.data, isa: ak.cpuInfo().isa });
})().catch((err) => parentPort.postMessage({ error: String(err && err.stack || err) }));
`;

interface Result {
  sync: Float32Array;
  viaAsync: Float32Array;
  sm: Float32Array;
  isa: string;
  error?: string;
}

function runWorker(m: number, seed: number): Promise<Result> {
  return new Promise((resolve, reject) => {
    const w = new Worker(workerCode, { eval: true, workerData: { dist: distPath, m, seed } });
    w.once('message', (msg: Result) => {
      if (msg.error) reject(new Error(msg.error));
      else resolve(msg);
      void w.terminate();
    });
    w.once('error', reject);
  });
}

function expected(m: number, seed: number) {
  const a = Tensor.randn([m, 96], { seed });
  const b = Tensor.randn([96, 80], { seed: seed + 1 });
  const c = matmul(a, b);
  return { c, sm: softmax(c, { scale: 0.1 }) };
}

describe('worker_threads', () => {
  test('the addon loads and computes in a worker, with the same bits as the main thread', async () => {
    const r = await runWorker(300, 9);
    const want = expected(300, 9);
    expect(r.isa).toBe(process.env.ATTN_ISA);
    expectBitwiseEqual(new Tensor(r.sync, [300, 80]), want.c, 'worker sync');
    expectBitwiseEqual(new Tensor(r.viaAsync, [300, 80]), want.c, 'worker async');
    expectBitwiseEqual(new Tensor(r.sm, [300, 80]), want.sm, 'worker softmax');
  });

  test('several workers and the main thread at once', async () => {
    const main = (async () => {
      for (let i = 0; i < 20; ++i) matmul(Tensor.randn([200, 200], { seed: i }), Tensor.randn([200, 200]));
    })();
    const results = await Promise.all([runWorker(400, 1), runWorker(250, 2), runWorker(333, 3), main]);
    for (const [i, [m, seed]] of [
      [400, 1],
      [250, 2],
      [333, 3],
    ].entries()) {
      expectBitwiseEqual(new Tensor((results[i] as Result).sync, [m, 80]), expected(m, seed).c, `worker ${i}`);
    }
  });

  test('terminating a worker while its async kernel runs is safe', async () => {
    const code = `
      const ak = require(${JSON.stringify(distPath)});
      const a = ak.Tensor.randn([1500, 1500]);
      for (let i = 0; i < 4; ++i) ak.matmulAsync(a, a);
      require('node:worker_threads').parentPort.postMessage('started');
    `;
    for (let round = 0; round < 3; ++round) {
      const w = new Worker(code, { eval: true });
      await new Promise((resolve) => w.once('message', resolve));
      await w.terminate();
    }
    // The process and the pool still work.
    const x = Tensor.randn([64, 64], { seed: 1 });
    expectBitwiseEqual(matmul(x, x), matmul(x, x), 'after terminate');
  });

  test.skipIf(!onWidestIsa)('terminating workers with sync and async kernels in flight, 30 times, never aborts the process', () => {
    // Each worker queues async kernels of every kind (small module forwards,
    // over the library's memory and over its own arrays, large enough to be
    // copied in chunks; some fail on the thread pool, out of memory, and
    // settle while the worker is torn down), then runs sync kernels, some of
    // which throw from the addon, until it is terminated at a varying moment.
    const worker = `
      const ak = require(${JSON.stringify(distPath)});
      const { parentPort, workerData: round } = require('node:worker_threads');
      const T = ak.Tensor;
      const a = T.randn([500, 500], { seed: round });
      const x = T.randn([1, 4, 200, 64], { seed: round + 1 });
      const mine = new T(new Float32Array(600 * 512).fill(0.5), [1, 600, 512]);
      const mha = new ak.MultiHeadAttention({ embedDim: 512, numHeads: 8, seed: round });
      const broadcast = T.zeros([1, 4]).expand([2 ** 40, 4]);
      const huge = T.zeros([1, 4]).expand([2 ** 48, 4]);
      const ignore = () => {};
      // Small forwards: each one chain on the addon's async thread, which
      // finishes while this thread spins below (its completion is then
      // queued for a main thread that never takes it).
      const small = new ak.MultiHeadAttention({ embedDim: 64, numHeads: 4, seed: round });
      const sx = T.randn([1, 3, 64]);
      small.forward(sx);
      for (let i = 0; i < 4; ++i) {
        small.forwardAsync(sx).catch(ignore);
        ak.matmulAsync(a, a).catch(ignore);
        ak.softmaxAsync(a, { causal: true }).catch(ignore);
        ak.attentionAsync(x, x, x, { needWeights: i % 2 === 0 }).catch(ignore);
        ak.attentionAsync(T.randn([2, 4]), broadcast, broadcast).catch(ignore);
        mha.forwardAsync(mine).catch(ignore);
      }
      const raw = require(${JSON.stringify(path.join(distPath, 'native.js'))}).native;
      const q = T.randn([8, 4]);
      parentPort.postMessage('started');
      for (let i = 0; ; ++i) {
        if (i % 64 === 0) ak.matmul(a, a);
        try { ak.attention(q, huge, huge); } catch (e) {}
        try { raw.gemm(1, 2, 3); } catch (e) {}
      }
    `;
    const r = runChild(`
      const { Worker } = require('node:worker_threads');
      (async () => {
        for (let round = 0; round < 30; ++round) {
          const w = new Worker(${JSON.stringify(worker)}, { eval: true, workerData: round });
          await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
          await new Promise((resolve) => setTimeout(resolve, round % 7));
          await w.terminate();
        }
        // The process, the pool and the addon still work.
        const a = ak.Tensor.randn([64, 64], { seed: 1 });
        const r = await ak.matmulAsync(a, a);
        console.log('done', r.shape.join('x'));
      })();
    `);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('done 64x64');
  }, 300_000);

  test('the package path used by workers is the compiled one', () => {
    expect(path.basename(distPath)).toBe('dist');
  });
});
