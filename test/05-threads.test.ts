import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { Tensor, cpuInfo, getNumThreads, matmul, setNumThreads, softmax } from '../src';
import { expectBitwiseEqual } from './support/reference';

const initial = getNumThreads();
afterAll(() => setNumThreads(initial));

function withThreads<T>(n: number, f: () => T): T {
  setNumThreads(n);
  try {
    return f();
  } finally {
    setNumThreads(initial);
  }
}

describe('thread count', () => {
  test('matmul results are bitwise identical for 1, 2, 3 and 4 threads', () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[517, 301], [301, 389], false, false],
      [[300, 1000], [300, 64], true, false],
      [[5, 2000], [700, 2000], false, true],
      [[12, 67, 59], [12, 61, 59], false, true],
      [[3, 250, 200], [200, 300], false, false],
    ];
    for (const [sa, sb, ta, tb] of cases) {
      const a = Tensor.randn(sa, { seed: sa[0] });
      const b = Tensor.randn(sb, { seed: sb[1] });
      const one = withThreads(1, () => matmul(a, b, { transposeA: ta, transposeB: tb }));
      for (const n of [2, 3, 4]) {
        const many = withThreads(n, () => matmul(a, b, { transposeA: ta, transposeB: tb }));
        expectBitwiseEqual(many, one, `${n} threads, a ${sa} b ${sb}`);
      }
    }
  });

  test('softmax results are bitwise identical for 1 and 2 threads', () => {
    const x = Tensor.randn([64, 8, 1000], { seed: 4, std: 5 });
    const one = withThreads(1, () => softmax(x, { scale: 0.7 }));
    const two = withThreads(2, () => softmax(x, { scale: 0.7 }));
    expectBitwiseEqual(two, one, 'softmax');
  });

  test('setNumThreads / getNumThreads / cpuInfo agree', () => {
    withThreads(3, () => {
      expect(getNumThreads()).toBe(3);
      expect(cpuInfo().threads).toBe(3);
    });
    expect(getNumThreads()).toBe(initial);
  });

  test('bad thread counts', () => {
    expect(() => setNumThreads(0)).toThrow('Expected integer in [1, 1024] for numThreads but received 0 of type number');
    expect(() => setNumThreads(1.5)).toThrow(RangeError);
    expect(() => setNumThreads('2' as never)).toThrow(TypeError);
    expect(getNumThreads()).toBe(initial);
  });

  test('defaults to the CPUs available, or ATTN_NUM_THREADS', () => {
    const dist = path.resolve(__dirname, '..', 'dist');
    const run = (env: NodeJS.ProcessEnv) =>
      Number(
        execFileSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(dist)}).getNumThreads()))`], {
          env: { ...process.env, ...env },
          encoding: 'utf8',
        }),
      );
    expect(run({ ATTN_NUM_THREADS: '' })).toBe(os.availableParallelism());
    expect(run({ ATTN_NUM_THREADS: '3' })).toBe(3);
  });
});
