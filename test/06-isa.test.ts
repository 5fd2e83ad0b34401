import { describe, expect, test } from 'vitest';
import { cpuInfo } from '../src';
import { runChild } from './support/child';

describe('runtime CPU dispatch', () => {
  test('the path forced by ATTN_ISA is the one in use', () => {
    const info = cpuInfo();
    expect(info.isa).toBe(process.env.ATTN_ISA);
    expect(info.requestedIsa).toBe(process.env.ATTN_ISA);
    expect(info.availableIsas).toContain(info.isa);
    expect(info.availableIsas).toContain('scalar');
  });

  test('cpuInfo reports features, caches and blocking consistent with the path', () => {
    const info = cpuInfo();
    const f = info.features;
    if (info.isa === 'avx512' || info.isa === 'amx') {
      expect(f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.osZmm).toBe(true);
      expect(info.vectorWidth).toBe(16);
    }
    if (info.isa === 'amx') {
      expect(f.amxTile && f.amxBf16 && f.osAmx).toBe(true);
      // The tile unit exists only on server cores from Sapphire Rapids on, whatever model a hypervisor reports.
      expect(info.family).toBe('intel-sapphire-rapids');
    }
    if (info.availableIsas.includes('amx')) expect(info.availableIsas).toContain('avx512');
    if (info.isa === 'avx2') expect(f.avx2 && f.fma && f.osYmm).toBe(true);
    if (info.isa === 'scalar') expect(info.vectorWidth).toBe(1);
    if (info.availableIsas.includes('avx512')) expect(info.availableIsas).toContain('avx2');
    expect(info.caches.l1d).toBeGreaterThanOrEqual(0);
    expect(info.gemmBlocking.kc).toBeGreaterThan(0);
    expect(info.gemmBlocking.mc % info.gemmBlocking.mr).toBe(0);
    expect(info.logicalCpus).toBeGreaterThanOrEqual(1);
    expect(info.addon).toMatch(/attention_kernels\.node$/);
    // Vendor, model and the family the tuning comes from.
    expect(typeof info.vendor).toBe('string');
    expect(typeof info.model).toBe('string');
    if (process.arch === 'x64') {
      expect(info.vendor.length).toBeGreaterThan(0);
      expect(info.cpuid.family).toBeGreaterThan(0);
      if (info.vendor === 'GenuineIntel') expect(info.family).toMatch(/^intel-/);
      if (info.vendor === 'AuthenticAMD' && info.cpuid.family >= 0x17) expect(info.family).toMatch(/^amd-zen/);
    }
    expect(info.tuning.family).toBe(info.family);
    expect(info.tuning.minParallelFlops).toBeGreaterThan(0);
    expect(info.tuning.basis.length).toBeGreaterThan(0);
    expect(typeof info.tuning.prefetchPanels).toBe('boolean');
    expect(typeof info.tuning.streamPanels).toBe('boolean');
    // The streaming prefetch is set for the AMD families, where it was measured.
    expect(info.tuning.streamPanels).toBe(info.family.startsWith('amd-'));
  });

  test('automatic choice is the widest available path', () => {
    const r = runChild('process.stdout.write(JSON.stringify(ak.cpuInfo()))', { ATTN_ISA: '' });
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout);
    const order = ['amx', 'avx512', 'avx2', 'neon', 'scalar'];
    expect(info.isa).toBe(order.find((isa) => info.availableIsas.includes(isa)));
    expect(info.requestedIsa).toBe('auto');
  });

  test('an unknown ATTN_ISA is a clear load error', () => {
    const r = runChild('ak.cpuInfo()', { ATTN_ISA: 'sse9' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('ATTN_ISA=sse9 is not a known path; expected one of auto, scalar, avx2, avx512, amx, neon');
  });

  test('an ATTN_ISA this CPU cannot run is a clear load error', () => {
    const foreign = process.arch === 'arm64' ? 'avx2' : 'neon';
    const r = runChild('ak.cpuInfo()', { ATTN_ISA: foreign });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`ATTN_ISA=${foreign}: this CPU cannot run ${foreign} (missing:`);
  });
});
