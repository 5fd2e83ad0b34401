// A fresh multi-megabyte result on every call: memory stays flat, and the
// async forms, and the sync ones called between turns of the event loop (as a
// service calls them), reuse freed native blocks instead of faulting in fresh
// pages. Counts only, no timings.
import { describe, expect, test } from 'vitest';
import * as path from 'node:path';
import { onWidestIsa } from './support/isa';
import { distPath, runChild } from './support/child';

// Calls a 4 MiB-result matmul (k = 1: the cost is the memory) n times, sync
// (in one stretch, or one call per turn of the event loop) or async, and prints RSS after a quarter and at the end, minor page faults per
// call, and the addon's block cache counters.
type Mode = 'sync' | 'sync between turns' | 'async';
const child = (mode: Mode, n: number) => `
  const { native } = require(${JSON.stringify(path.join(distPath, 'native.js'))});
  const a = ak.Tensor.randn([1024, 1], { seed: 1 });
  const b = ak.Tensor.randn([1, 1024], { seed: 2 });
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  const call = ${mode === 'async' ? '() => ak.matmulAsync(a, b)' : mode === 'sync' ? '() => ak.matmul(a, b)' : 'async () => { await turn(); return ak.matmul(a, b); }'};
  (async () => {
    for (let i = 0; i < 100; ++i) await call();
    let rssQuarter = 0, faults = 0, peak = 0;
    for (let i = 0; i < ${n}; ++i) {
      if (i === ${n >> 2}) { rssQuarter = process.memoryUsage().rss; faults = process.resourceUsage().minorPageFault; }
      const r = await call();
      if (r.shape[0] !== 1024) throw new Error('bad shape');
      if (i % 256 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
    const calls = ${n} - ${n >> 2};
    console.log(JSON.stringify({
      rssQuarter, rssEnd: process.memoryUsage().rss, peak,
      faultsPerCall: (process.resourceUsage().minorPageFault - faults) / calls,
      cache: native.memoryStats(),
    }));
  })();
`;

describe.skipIf(!onWidestIsa)('memory of fresh results', () => {
  for (const mode of ['sync', 'sync between turns', 'async'] as const) {
    test(`${mode}: RSS stays flat over 3000 calls that each return 4 MiB`, () => {
      const r = runChild(child(mode, 3000));
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const m = JSON.parse(r.stdout);
      console.log(`${mode}: RSS ${(m.rssQuarter / 2 ** 20).toFixed(0)} -> ${(m.rssEnd / 2 ** 20).toFixed(0)} MiB (peak ${(m.peak / 2 ** 20).toFixed(0)}), ${m.faultsPerCall.toFixed(1)} minor page faults per call`);
      // Flat: the last three quarters (2250 calls, 8.8 GiB of results) add less than 64 MiB.
      expect(m.rssEnd - m.rssQuarter).toBeLessThan(64 * 2 ** 20);
      expect(m.peak).toBeLessThan(m.rssQuarter + 128 * 2 ** 20);
      if (mode !== 'sync') {
        // Results come from recycled blocks: far fewer faults than the 1024 pages of a fresh result.
        expect(m.faultsPerCall).toBeLessThan(128);
        expect(m.cache.reused).toBeGreaterThan(m.cache.allocated);
      }
    }, 300_000);
  }
});
