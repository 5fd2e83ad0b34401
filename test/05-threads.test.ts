import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { MAX_IDLE_SPIN, Tensor, cpuInfo, getIdleSpin, getNumThreads, matmul, setIdleSpin, setNumThreads, softmax } from '../src';
import { native } from '../src/native';
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

/** What the library's function `fn` returns in a fresh process with `env` added to the environment. */
function numberInChild(fn: string, env: NodeJS.ProcessEnv): number {
  const dist = path.resolve(__dirname, '..', 'dist');
  const script = `process.stdout.write(String(require(${JSON.stringify(dist)}).${fn}()))`;
  return Number(execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' }));
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

  test('idle spin: set, read back, checked; results the same whether the threads slept or polled', async () => {
    const spin = getIdleSpin();
    const a = Tensor.randn([300, 200], { seed: 21 });
    const b = Tensor.randn([200, 250], { seed: 22 });
    const one = withThreads(1, () => matmul(a, b));
    try {
      setNumThreads(2);
      for (const us of [0, 50, MAX_IDLE_SPIN]) {
        setIdleSpin(us);
        expect(getIdleSpin()).toBe(us);
        // Calls apart, so the workers poll through the gap or sleep and are woken.
        for (let i = 0; i < 3; ++i) {
          await new Promise((r) => setTimeout(r, 2));
          expectBitwiseEqual(matmul(a, b), one, `idle spin ${us} us, call ${i}`);
        }
      }
      expect(() => setIdleSpin(-1)).toThrow('Expected integer in [0, 1000000] for microseconds but received -1 of type number');
      expect(() => setIdleSpin(MAX_IDLE_SPIN + 1)).toThrow(RangeError);
      expect(() => setIdleSpin(0.5)).toThrow(RangeError);
      expect(() => setIdleSpin('10' as never)).toThrow(TypeError);
      expect(() => native.setIdleSpin(-1)).toThrow(RangeError);
      expect(() => native.setIdleSpin(undefined as never)).toThrow('for microseconds');
      expect(getIdleSpin()).toBe(MAX_IDLE_SPIN);
    } finally {
      setIdleSpin(spin);
      setNumThreads(initial);
    }
  });

  test('idle spin defaults to 10 ms, or ATTN_SPIN_US', () => {
    const run = (env: NodeJS.ProcessEnv) => numberInChild('getIdleSpin', env);
    expect(run({ ATTN_SPIN_US: '' })).toBe(10000);
    expect(run({ ATTN_SPIN_US: '0' })).toBe(0);
    expect(run({ ATTN_SPIN_US: '250' })).toBe(250);
    expect(run({ ATTN_SPIN_US: '-3' })).toBe(10000); // not a valid value: the default
  });

  test('defaults to the CPUs available, or ATTN_NUM_THREADS', () => {
    const run = (env: NodeJS.ProcessEnv) => numberInChild('getNumThreads', env);
    expect(run({ ATTN_NUM_THREADS: '' })).toBe(os.availableParallelism());
    expect(run({ ATTN_NUM_THREADS: '3' })).toBe(3);
  });
});
