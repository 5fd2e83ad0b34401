import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { Tensor, cpuInfo, matmul } from '../src';
import { runChild } from './support/child';
import { expectClose, gemmTolerance, matmulRef } from './support/reference';

const root = path.resolve(__dirname, '..');

describe('addon loader', () => {
  test('reports the file it loaded', () => {
    const addon = cpuInfo().addon;
    expect(fs.existsSync(addon)).toBe(true);
    if (process.env.ATTN_ADDON) expect(addon).toBe(path.resolve(process.env.ATTN_ADDON));
  });

  test('a missing file: the error lists what was tried and how to build', () => {
    const r = runChild('ak.cpuInfo()', { ATTN_ADDON: '/nonexistent/attention_kernels.node' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('attention-kernels could not load its native addon. Tried:');
    expect(r.stderr).toContain('/nonexistent/attention_kernels.node: not found');
    expect(r.stderr).toContain('npm rebuild attention-kernels');
    expect(r.stderr).toMatch(/Node-API \d+/);
  });

  test('a file that is not an addon: the error carries the reason', () => {
    const r = runChild('ak.cpuInfo()', { ATTN_ADDON: path.join(root, 'package.json') });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`${path.join(root, 'package.json')}: `);
    expect(r.stderr).toMatch(/invalid ELF header|not a mach-o|not a valid Win32/i);
  });

  const builds = [
    ['node-gyp', path.join(root, 'build', 'Release', 'attention_kernels.node')],
    ['cmake-js', path.join(root, 'build-cmake', 'Release', 'attention_kernels.node')],
  ].filter(([, file]) => fs.existsSync(file));

  test.each(builds)('the %s binary can be chosen with ATTN_ADDON and computes correctly', (_, file) => {
    const r = runChild(
      `const a = ak.Tensor.randn([37, 41], { seed: 1 }), b = ak.Tensor.randn([41, 29], { seed: 2 });
       process.stdout.write(JSON.stringify({ addon: ak.cpuInfo().addon, c: Array.from(ak.matmul(a, b).data) }));`,
      { ATTN_ADDON: file },
    );
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.addon).toBe(file);
    const a = Tensor.randn([37, 41], { seed: 1 });
    const b = Tensor.randn([41, 29], { seed: 2 });
    const ref = matmulRef(a, b);
    expectClose(new Tensor(Float32Array.from(out.c), [37, 29]), ref.value, gemmTolerance(ref, 41), file);
    expect(matmul(a, b).shape).toEqual([37, 29]);
  });
});
