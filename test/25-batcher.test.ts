import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, test } from 'vitest';
import { Batcher, BatcherError, MultiHeadAttention, Tensor, type PackedOptions } from '../src';
import { values } from './support/reference';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let seed = 2200;
const rand = (shape: number[]) => Tensor.randn(shape, { seed: seed++ });
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

function maxDiff(a: Tensor, b: Tensor): number {
  const x = values(a);
  const y = values(b);
  expect(x.length).toBe(y.length);
  let m = 0;
  for (let i = 0; i < x.length; ++i) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

/**
 * A module whose batches wait until released: it records each batch's
 * sequence lengths and answers x + 1 in a buffer of its own that every batch
 * overwrites (as a module reusing its workspace would), so a result that were
 * a view of the batch's output would change under its caller.
 */
function gatedModule() {
  const batches: number[][] = [];
  let waiting: (() => void)[] = [];
  let fail: unknown = null;
  let out = new Float32Array(0);
  const forward = async (x: Tensor, o: PackedOptions) => {
    batches.push(Array.from(o.sequenceLengths));
    await new Promise<void>((resolve) => waiting.push(resolve));
    if (fail) throw fail;
    if (out.length < x.size) out = new Float32Array(x.size);
    const xs = values(x);
    for (let i = 0; i < x.size; ++i) out[i] = xs[i] + 1;
    return new Tensor(out.subarray(0, x.size), x.shape);
  };
  return {
    forward,
    batches,
    /** Lets every batch that waits finish. */
    release() {
      const w = waiting;
      waiting = [];
      w.forEach((f) => f());
    },
    failNext(err: unknown) {
      fail = err;
    },
    /** Resolves once `n` batches have started. */
    async started(n: number) {
      while (batches.length < n) await turn();
    },
  };
}

/** x + 1, as the gated module answers. */
const plusOne = (x: Tensor) => new Tensor(Float32Array.from(values(x), (v) => v + 1), x.shape);

describe('Batcher with MultiHeadAttention', () => {
  const m = new MultiHeadAttention({ embedDim: 32, numHeads: 4, seed: 7 });
  for (const t of [m.inProjBias!, m.outProjBias!]) t.assign(Tensor.randn(t.shape as number[], { seed: 1, std: 0.1 }));

  test('each caller gets exactly its own rows, as if it ran alone', async () => {
    const b = new Batcher(m, { maxBatchTokens: 300 });
    const lengths = [1, 17, 56, 57, 128, 129, 3, 200, 5, 400, 24, 25, 2, 90];
    const xs = lengths.map((n) => rand([n, 32]));
    // A strided view too: packed without a copy of its own.
    xs.push(rand([40, 64]).narrow(1, 16, 32));
    const results = await Promise.all(xs.map((x) => b.run(x)));
    results.forEach((r, i) => {
      expect(r.shape).toEqual([xs[i].shape[0], 32]);
      expect(maxDiff(r, m.forward(xs[i]).output), `request ${i}`).toBeLessThanOrEqual(1e-5);
    });
    const s = b.stats();
    expect(s.requests).toBe(xs.length);
    expect(s.tokens).toBe(lengths.reduce((a, c) => a + c, 40));
    expect(s.batches).toBeGreaterThan(1); // 1137 tokens, at most 300 per batch (the 400-token request alone)
    expect(s.meanBatchTokens).toBeCloseTo(s.tokens / s.batches, 10);
    expect(s.meanBatchRequests).toBeCloseTo(s.requests / s.batches, 10);
    expect(s.queueDepth).toBe(0);
    expect(s.running).toBe(0);
    await b.close();
  });

  test('a function as the module: causal self-attention, each as if alone', async () => {
    const b = new Batcher((x, o) => m.forwardAsync(x, undefined, undefined, { ...o, causal: true }), { embedDim: 32 });
    const xs = [9, 1, 33, 70].map((n) => rand([n, 32]));
    const results = await Promise.all(xs.map((x) => b.run(x)));
    results.forEach((r, i) => expect(maxDiff(r, m.forward(xs[i], undefined, undefined, { causal: true }).output)).toBeLessThanOrEqual(1e-5));
    expect(b.stats().batches).toBe(1);
  });

  test('a module with forwardAsync(x, { sequenceLengths }) that returns a Tensor (the layers\' form)', async () => {
    const layer = {
      dModel: 32,
      forwardAsync: async (x: Tensor, o: PackedOptions) => (await m.forwardAsync(x, undefined, undefined, o)).output,
    };
    const b = new Batcher(layer);
    expect(b.embedDim).toBe(32);
    const xs = [3, 30].map((n) => rand([n, 32]));
    const results = await Promise.all(xs.map((x) => b.run(x)));
    results.forEach((r, i) => expect(maxDiff(r, m.forward(xs[i]).output)).toBeLessThanOrEqual(1e-5));
  });

  test('bad requests reject alone; their batch-mates are answered', async () => {
    const b = new Batcher(m);
    const good = [rand([5, 32]), rand([12, 32])];
    const bad: [unknown, unknown, string | RegExp][] = [
      [rand([5, 31]), undefined, 'Expected Tensor [tokens ≥ 1, 32] for x but received a float32 Tensor of shape [5, 31]'],
      [rand([1, 5, 32]), undefined, 'Expected Tensor [tokens ≥ 1, 32] for x but received a float32 Tensor of shape [1, 5, 32]'],
      [Tensor.zeros([0, 32]), undefined, 'Expected Tensor [tokens ≥ 1, 32]'],
      [Tensor.zeros([5, 32], 'uint8'), undefined, 'Expected float32 Tensor for x but received a uint8 Tensor of shape [5, 32]'],
      [[[1, 2]], undefined, 'Expected float32 Tensor for x but received an Array of length 1'],
      [rand([5, 32]), { timeout: 5 }, "Unknown option 'timeout' for Batcher.run"],
      [rand([5, 32]), { signal: {} }, 'Expected AbortSignal for signal but received an object'],
    ];
    const pending = [b.run(good[0]), ...bad.map(([x, o]) => b.run(x as Tensor, o as never)), b.run(good[1])];
    const settled = await Promise.allSettled(pending);
    expect(settled[0].status).toBe('fulfilled');
    expect(settled[settled.length - 1].status).toBe('fulfilled');
    bad.forEach(([, , message], i) => {
      const s = settled[i + 1];
      expect(s.status).toBe('rejected');
      expect(String((s as PromiseRejectedResult).reason)).toMatch(message);
    });
    expect((settled[1] as PromiseRejectedResult).reason).toBeInstanceOf(RangeError);
    expect((settled[4] as PromiseRejectedResult).reason).toBeInstanceOf(TypeError);
    expect(maxDiff((settled[settled.length - 1] as PromiseFulfilledResult<Tensor>).value, m.forward(good[1]).output)).toBeLessThanOrEqual(1e-5);
    expect(b.stats()).toMatchObject({ requests: 2, rejected: bad.length, batches: 1 });
  });

  test('bad construction', () => {
    expect(() => new Batcher({} as never)).toThrow(TypeError);
    expect(() => new Batcher(null as never)).toThrow('Expected MultiHeadAttention, a module with forwardAsync(x, { sequenceLengths }), or a function');
    expect(() => new Batcher(async (x: Tensor) => x)).toThrow('Expected embedDim in the Batcher options');
    expect(() => new Batcher(m, { maxBatchTokens: 0 })).toThrow('Expected positive integer for maxBatchTokens but received 0 of type number');
    expect(() => new Batcher(m, { maxDelayMs: -1 })).toThrow(RangeError);
    expect(() => new Batcher(m, { maxQueue: 0 })).toThrow(RangeError);
    expect(() => new Batcher(m, { maxBatch: 3 } as never)).toThrow("Unknown option 'maxBatch' for Batcher");
  });
});

describe('Batcher scheduling', () => {
  test('requests of one turn form one batch; those arriving while it runs form the next, up to maxBatchTokens', async () => {
    const g = gatedModule();
    const b = new Batcher(g.forward, { embedDim: 4, maxBatchTokens: 20 });
    const xs = [3, 4, 5].map((n) => rand([n, 4]));
    const first = xs.map((x) => b.run(x));
    await g.started(1);
    expect(g.batches).toEqual([[3, 4, 5]]);
    expect(b.stats()).toMatchObject({ running: 3, queueDepth: 0 });
    // While it runs: 7 + 6 + 5 = 18 tokens fit in one batch, the next 9 do not.
    const ys = [7, 6, 5, 9].map((n) => rand([n, 4]));
    const second = ys.map((y) => b.run(y));
    expect(b.stats()).toMatchObject({ queueDepth: 4, queuedTokens: 27 });
    g.release();
    const firstOut = await Promise.all(first);
    await g.started(2);
    expect(g.batches[1]).toEqual([7, 6, 5]);
    g.release();
    await g.started(3);
    expect(g.batches[2]).toEqual([9]);
    g.release();
    const secondOut = await Promise.all(second);
    // Copies: the later batches overwrote the buffer the first answers came from.
    firstOut.forEach((r, i) => expect(maxDiff(r, plusOne(xs[i]))).toBe(0));
    secondOut.forEach((r, i) => expect(maxDiff(r, plusOne(ys[i]))).toBe(0));
    expect(b.stats()).toMatchObject({ batches: 3, requests: 7, tokens: 39, meanBatchRequests: 7 / 3 });
  });

  test('a request longer than maxBatchTokens runs alone', async () => {
    const g = gatedModule();
    const b = new Batcher(g.forward, { embedDim: 2, maxBatchTokens: 8, maxDelayMs: 0 });
    const long = rand([30, 4]).narrow(1, 1, 2); // strided: packed into a buffer of its own
    const p = [b.run(rand([3, 2])), b.run(long), b.run(rand([2, 2]))];
    for (let n = 1; n <= 3; ++n) {
      await g.started(n);
      g.release();
    }
    const out = await Promise.all(p);
    expect(g.batches).toEqual([[3], [30], [2]]);
    expect(maxDiff(out[1], plusOne(long))).toBe(0);
  });

  test('a full queue rejects at once (backpressure)', async () => {
    const g = gatedModule();
    const b = new Batcher(g.forward, { embedDim: 2, maxQueue: 2, maxDelayMs: 0 });
    const running = b.run(rand([1, 2]));
    await g.started(1);
    const waiting = [b.run(rand([1, 2])), b.run(rand([2, 2]))];
    const refused = b.run(rand([1, 2]));
    await expect(refused).rejects.toThrow('Batcher queue is full: 2 requests are waiting (maxQueue); retry later');
    await expect(refused).rejects.toBeInstanceOf(BatcherError);
    await expect(refused).rejects.toMatchObject({ code: 'ERR_BATCHER_QUEUE_FULL' });
    expect(b.stats()).toMatchObject({ queueDepth: 2, rejected: 1 });
    g.release();
    await running;
    await g.started(2);
    g.release();
    await Promise.all(waiting);
  });

  test('an aborted signal removes a waiting request; one already running rejects but its batch goes on', async () => {
    const g = gatedModule();
    const b = new Batcher(g.forward, { embedDim: 2, maxDelayMs: 0 });
    const c1 = new AbortController();
    const x1 = rand([3, 2]);
    const x2 = rand([4, 2]);
    const running = [b.run(x1, { signal: c1.signal }), b.run(x2)];
    await g.started(1);
    const c2 = new AbortController();
    const c3 = new AbortController();
    const x5 = rand([6, 2]);
    const waiting = [b.run(rand([5, 2]), { signal: c2.signal }), b.run(x5), b.run(rand([7, 2]), { signal: c3.signal })];
    c2.abort();
    c3.abort(new Error('client went away'));
    await expect(waiting[0]).rejects.toMatchObject({ name: 'AbortError' });
    await expect(waiting[2]).rejects.toThrow('client went away');
    expect(b.stats()).toMatchObject({ queueDepth: 1, queuedTokens: 6, aborted: 2 });
    // Running already: rejects at once with the reason; its batch-mate is answered.
    c1.abort();
    await expect(running[0]).rejects.toMatchObject({ name: 'AbortError' });
    g.release();
    expect(maxDiff(await running[1], plusOne(x2))).toBe(0);
    await g.started(2);
    expect(g.batches).toEqual([[3, 4], [6]]);
    g.release();
    expect(maxDiff(await waiting[1], plusOne(x5))).toBe(0);
    // A signal aborted before run() rejects at once and never queues.
    const done = new AbortController();
    done.abort(new Error('too late'));
    await expect(b.run(rand([1, 2]), { signal: done.signal })).rejects.toThrow('too late');
    expect(b.stats()).toMatchObject({ aborted: 4, queueDepth: 0, batches: 2 });
  });

  test('close() rejects what waits, lets the running batch finish, and refuses new requests', async () => {
    const g = gatedModule();
    const b = new Batcher(g.forward, { embedDim: 2, maxDelayMs: 0 });
    const x = rand([2, 2]);
    const running = b.run(x);
    await g.started(1);
    const waiting = [b.run(rand([1, 2])), b.run(rand([3, 2]))];
    let closed = false;
    const closing = b.close().then(() => (closed = true));
    for (const w of waiting) {
      await expect(w).rejects.toThrow('Batcher was closed before this request ran');
      await expect(w).rejects.toMatchObject({ code: 'ERR_BATCHER_CLOSED' });
    }
    await expect(b.run(rand([1, 2]))).rejects.toThrow('Batcher is closed: no new requests');
    await turn();
    expect(closed).toBe(false);
    g.release();
    expect(maxDiff(await running, plusOne(x))).toBe(0);
    await closing;
    expect(closed).toBe(true);
    expect(g.batches.length).toBe(1);
    await b.close(); // again: nothing left
  });

  test('a failing batch rejects each of its requests with the error; the next batch runs', async () => {
    const g = gatedModule();
    const b = new Batcher(g.forward, { embedDim: 2, maxDelayMs: 0 });
    const boom = new Error('module failed');
    const first = [b.run(rand([1, 2])), b.run(rand([2, 2]))];
    await g.started(1);
    const next = b.run(rand([3, 2]));
    g.failNext(boom);
    g.release();
    for (const p of first) await expect(p).rejects.toBe(boom);
    g.failNext(null);
    await g.started(2);
    g.release();
    await next;
    expect(b.stats()).toMatchObject({ batches: 2, failedBatches: 1, requests: 3 });
    // A module that answers with the wrong shape: a clear error for each request.
    const wrong = new Batcher(async () => Tensor.zeros([1, 2]), { embedDim: 2 });
    const bad = [wrong.run(rand([2, 2])), wrong.run(rand([3, 2]))];
    for (const p of bad) {
      await expect(p).rejects.toThrow(
        'Batcher: the module returned a float32 Tensor of shape [1, 2] for a batch of 5 tokens; expected a float32 Tensor [5, features] or { output } holding one',
      );
    }
  });
});

describe('Batcher over many requests', () => {
  test('1e5 requests: no growth of heap or RSS, no listener left behind', async () => {
    const m = new MultiHeadAttention({ embedDim: 8, numHeads: 2, seed: 3 });
    const b = new Batcher(m, { maxBatchTokens: 2048, maxQueue: 1000 });
    const controller = new AbortController(); // one signal shared by every request
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const inputs = [1, 2, 3, 4, 5].map((n) => rand([n, 8]));
    const wave = async (count: number) => {
      const inFlight = 500;
      let sent = 0;
      const client = async () => {
        while (sent < count) {
          const x = inputs[sent++ % inputs.length];
          const r = await b.run(x, sent % 2 ? { signal: controller.signal } : undefined);
          if (r.shape[0] !== x.shape[0]) throw new Error('wrong rows');
        }
      };
      await Promise.all(Array.from({ length: inFlight }, client));
    };
    const measure = () => {
      gc();
      gc();
      return { heap: process.memoryUsage().heapUsed, rss: process.memoryUsage().rss };
    };
    await wave(20_000); // warm up: buffers, pooled workspaces, JIT
    const before = measure();
    await wave(80_000);
    const after = measure();
    process.off('warning', onWarning);
    expect(warnings.map((w) => w.message)).toEqual([]);
    expect(b.stats()).toMatchObject({ requests: 100_000, queueDepth: 0, rejected: 0, aborted: 0 });
    expect(after.heap - before.heap, `heap ${before.heap} -> ${after.heap}`).toBeLessThan(8 << 20);
    expect(after.rss - before.rss, `rss ${before.rss} -> ${after.rss}`).toBeLessThan(64 << 20);
  }, 120_000);
});
