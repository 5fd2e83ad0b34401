import { describe, expect, test } from 'vitest';
import { runChild } from './support/child';

// Fused attention keeps memory O(sequence): the [queries, keys] matrix of a
// 16384-token sequence with 8 heads would need 8 GiB.
describe('fused attention memory', () => {
  const isa = process.env.ATTN_ISA;
  // The scalar path needs about a minute for this size; the vector paths seconds.
  test.skipIf(isa === 'scalar')('Sq = Sk = 16384, 8 heads of 64, batch 1: less than 64 MiB beyond inputs and output', () => {
    const r = runChild(
      `const S = 16384, H = 8, D = 64;
       const q = ak.Tensor.randn([1, H, S, D], { seed: 1 });
       const k = ak.Tensor.randn([1, H, S, D], { seed: 2 });
       const v = ak.Tensor.randn([1, H, S, D], { seed: 3 });
       const out = ak.Tensor.full([1, H, S, D], 0.5); // pages touched before measuring
       // Warm up the kernels and the thread pool on a small problem.
       ak.attention(q.narrow(2, 0, 256), k.narrow(2, 0, 256), v.narrow(2, 0, 256));
       const before = process.memoryUsage().rss;
       const peakBefore = process.resourceUsage().maxRSS * 1024;
       const t0 = Date.now();
       ak.attention(q, k, v, { out });
       const seconds = (Date.now() - t0) / 1000;
       const peak = process.resourceUsage().maxRSS * 1024;
       let finite = true;
       for (let i = 0; i < out.data.length; i += 4099) finite = finite && Number.isFinite(out.data[i]);
       process.stdout.write(JSON.stringify({ extra: peak - Math.max(before, peakBefore), before, peak, seconds, finite }));`,
    );
    expect(r.stderr).toBe('');
    const m = JSON.parse(r.stdout);
    expect(m.finite).toBe(true);
    expect(m.extra).toBeLessThan(64 * 1024 * 1024);
  }, 300_000);
});
