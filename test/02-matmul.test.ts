import { afterAll, describe, expect, test } from 'vitest';
import { Tensor, getNumThreads, matmul, packMatrix, setNumThreads } from '../src';
import { expectBitwiseEqual, expectClose, gemmTolerance, matmulRef, values } from './support/reference';

const threadsBefore = getNumThreads();
afterAll(() => setNumThreads(threadsBefore));

// Sizes around every tile edge (14/32 on AVX-512, 6/16 on AVX2, 4/4 scalar,
// 8/12 NEON), vector widths, primes, and block sizes.
const DIMS = [1, 2, 3, 5, 7, 8, 13, 14, 15, 16, 17, 29, 31, 32, 33, 47, 64, 65, 97, 131, 193, 257, 300];

let seed = 1;
const rand = (shape: number[]) => Tensor.randn(shape, { seed: seed++ });

function check(a: Tensor, b: Tensor, opts: Parameters<typeof matmul>[2] = {}, label = ''): Tensor {
  const prior = opts.out ? opts.out.clone() : undefined;
  const got = matmul(a, b, opts);
  const ref = matmulRef(a, b, { ...opts, c: prior });
  expect(got.shape).toEqual(ref.shape);
  const k = opts.transposeA ? a.shape[a.rank - 2] : a.shape[a.rank - 1];
  expectClose(got, ref.value, gemmTolerance(ref, k), label);
  return got;
}

describe('matmul against a float64 reference', () => {
  test('2-D shapes from 1 to 300, all transposes', () => {
    let cases = 0;
    for (let i = 0; i < DIMS.length; ++i) {
      for (let j = 0; j < DIMS.length; j += 2) {
        const m = DIMS[i];
        const n = DIMS[(j + i) % DIMS.length];
        const k = DIMS[(i * 7 + j * 3) % DIMS.length];
        const ta = (i + j) % 2 === 1;
        const tb = ((i + j) >> 1) % 2 === 1;
        const a = rand(ta ? [k, m] : [m, k]);
        const b = rand(tb ? [n, k] : [k, n]);
        check(a, b, { transposeA: ta, transposeB: tb }, `m=${m} n=${n} k=${k} ta=${ta} tb=${tb}`);
        cases++;
      }
    }
    expect(cases).toBeGreaterThan(250);
  });

  test('large, skinny and degenerate shapes', () => {
    const shapes: [number, number, number][] = [
      [300, 300, 300],
      [1, 300, 257],
      [257, 1, 300],
      [4, 1000, 64],
      [1000, 3, 17],
      [2, 3, 0],
      [0, 3, 4],
      [3, 0, 4],
    ];
    for (const [m, n, k] of shapes) {
      for (const [ta, tb] of [
        [false, false],
        [false, true],
        [true, false],
        [true, true],
      ]) {
        check(rand(ta ? [k, m] : [m, k]), rand(tb ? [n, k] : [k, n]), { transposeA: ta, transposeB: tb }, `${m}x${n}x${k}`);
      }
    }
  });

  test('infinities and NaN in a product of 64 rows (large enough for the tile unit) give what float32 gives', () => {
    // On the amx path an infinite part times a zero part would be NaN: such
    // products stay on the FMA units. Row 3 of a holds +inf, column 5 of b a NaN.
    const [m, k, n] = [64, 48, 40];
    const a = Tensor.full([m, k], 0.5);
    const b = Tensor.full([k, n], 0.25);
    a.data[3 * k + 7] = Infinity;
    b.data[11 * n + 5] = NaN;
    for (const [x, y] of [
      [a, b],
      [a, Tensor.full([k, n], 0.25)],
      [Tensor.full([m, k], 0.5), b],
    ] as const) {
      const c = matmul(x, y);
      for (let i = 0; i < m; ++i)
        for (let j = 0; j < n; ++j) {
          const v = c.data[i * n + j];
          const want = y === b && j === 5 ? NaN : x === a && i === 3 ? Infinity : 0.125 * k;
          if (!Object.is(v, want)) expect.fail(`c[${i}][${j}] is ${v}, expected ${want}`);
        }
    }
  });

  test('alpha and beta accumulate into out; beta 0 ignores NaN in out', () => {
    const a = rand([37, 41]);
    const b = rand([41, 29]);
    const out = rand([37, 29]);
    check(a, b, { alpha: -0.5, beta: 0.75, out }, 'alpha/beta');
    const nanOut = Tensor.full([37, 29], 0);
    nanOut.data.fill(NaN);
    const got = matmul(a, b, { out: nanOut, alpha: 2 });
    expect(values(got).some(Number.isNaN)).toBe(false);
    expect(got).toBe(nanOut);
  });
});

describe('a new result', () => {
  test('large new results (written past the caches where they can be) have the same bits as out, on 1 and 2 threads', () => {
    // Shallow products whose results are larger than any L2: rows of a
    // multiple of 16 floats (streamed), of 1000 (not), a bias and alpha,
    // batches, a packed weight, and one deeper than a depth block.
    const cases: [Tensor, Tensor | ReturnType<typeof packMatrix>, Parameters<typeof matmul>[2]][] = [
      [rand([1531, 24]), rand([24, 1024]), {}],
      [rand([1531, 24]), rand([24, 1040]), { bias: rand([1040]), alpha: 0.5 }],
      [rand([1500, 24]), rand([24, 1000]), {}],
      [rand([3, 700, 40]), rand([3, 40, 1024]), {}],
      [rand([1531, 40]), packMatrix(rand([40, 1024])), {}],
      [rand([64, 1500]), packMatrix(rand([1500, 1024])), {}],
    ];
    for (const [a, b, opts] of cases) {
      setNumThreads(1);
      const fresh = matmul(a, b, opts);
      const out = Tensor.zeros(fresh.shape);
      matmul(a, b, { ...opts, out });
      expectBitwiseEqual(fresh, out, `${a.shape} 1 thread`);
      setNumThreads(2);
      expectBitwiseEqual(matmul(a, b, opts), out, `${a.shape} 2 threads`);
    }
  });
});

describe('bias (a linear layer in one pass)', () => {
  test('bias is added to every row, with alpha, beta, batches and both paths', () => {
    for (const [m, n, k] of [
      [1, 7, 5],
      [3, 40, 9],
      [70, 65, 33],
      [300, 257, 64],
    ]) {
      const a = rand([2, m, k]);
      const w = rand([n, k]);
      const bias = rand([n]);
      const got = matmul(a, w, { transposeB: true, bias, alpha: 0.5 });
      const ref = matmulRef(a, w, { transposeB: true, alpha: 0.5 });
      const bv = values(bias);
      for (let i = 0; i < ref.value.length; ++i) {
        ref.value[i] += bv[i % n];
        ref.magnitude[i] += Math.abs(bv[i % n]);
      }
      expectClose(got, ref.value, gemmTolerance(ref, k), `bias ${m}x${n}x${k}`);
    }
    const out = rand([4, 6]);
    const prior = values(out);
    const a = rand([4, 3]);
    const b = rand([3, 6]);
    const bias = rand([6]);
    matmul(a, b, { out, beta: 2, bias });
    const ref = matmulRef(a, b);
    const bv = values(bias);
    for (let i = 0; i < 24; ++i) expect(out.data[i]).toBeCloseTo(ref.value[i] + 2 * prior[i] + bv[i % 6], 5);
    expect(() => matmul(a, b, { bias: rand([5]) })).toThrow('Expected Tensor of shape [6] for bias');
  });
});

describe('strided and offset operands', () => {
  test('row-strided views (leading dimension > columns) and byteOffset subarrays', () => {
    const big = rand([70, 90]);
    const a = big.narrow(0, 3, 50).narrow(1, 7, 33); // ld 90, offset
    const store = new Float32Array(5000).map((_, i) => Math.sin(i));
    const sub = store.subarray(17); // byteOffset 68
    const b = new Tensor(sub, [33, 21], { strides: [40, 1], offset: 5 });
    check(a, b, {}, 'strided a, subarray b');
  });

  test('transposed views are used in place as transposed operands', () => {
    const a = rand([45, 60]).transpose(); // [60, 45], column-major
    const b = rand([70, 45]).transpose(); // [45, 70]
    check(a, b, {}, 'transposed views');
    check(a, rand([70, 45]), { transposeB: true }, 'view + flag');
    check(rand([60, 45]).transpose(), rand([45, 70]), { transposeA: true }, 'double transpose');
  });

  test('views with no unit stride are copied first', () => {
    const base = rand([40, 60]);
    const a = new Tensor(base.data, [20, 15], { strides: [120, 2] });
    const b = new Tensor(base.data, [15, 10], { strides: [3, 200] });
    check(a, b, {}, 'gather views');
  });

  test('out may be a strided view; only its elements are written', () => {
    const canvas = Tensor.full([40, 50], 7);
    const out = canvas.narrow(0, 5, 31).narrow(1, 11, 23);
    const a = rand([31, 19]);
    const b = rand([19, 23]);
    check(a, b, { out }, 'strided out');
    const v = values(canvas);
    for (let r = 0; r < 40; ++r) {
      for (let c = 0; c < 50; ++c) {
        const inside = r >= 5 && r < 36 && c >= 11 && c < 34;
        if (!inside) expect(v[r * 50 + c]).toBe(7);
      }
    }
  });
});

describe('batched matmul', () => {
  test('equal leading axes', () => {
    check(rand([3, 4, 17, 33]), rand([3, 4, 33, 29]), {}, 'batched 4-D');
    check(rand([5, 33, 17]), rand([5, 29, 33]), { transposeA: true, transposeB: true }, 'batched transposes');
  });

  test('a 2-D operand is shared across the batch', () => {
    check(rand([6, 19, 31]), rand([31, 23]), {}, '2-D b');
    check(rand([19, 31]), rand([6, 31, 23]), {}, '2-D a');
    check(rand([2, 3, 1, 64]), rand([64, 100]), {}, 'batched vectors');
  });

  test('expanded (stride 0) and permuted batch views', () => {
    const shared = rand([1, 31, 23]).expand([6, 31, 23]);
    check(rand([6, 19, 31]), shared, {}, 'expanded b');
    const permuted = rand([19, 6, 31]).permute([1, 0, 2]); // [6, 19, 31], batch stride 31, rows stride 186
    check(permuted, rand([6, 31, 23]), {}, 'permuted a');
    const heads = rand([2, 7, 4, 16]).permute([0, 2, 1, 3]); // [2, 4, 7, 16]: batch axes do not flatten
    check(heads, rand([2, 4, 16, 9]), {}, 'head-split view');
  });

  test('batch sizes that cross the per-item and per-thread paths', () => {
    for (const [batch, m, n, k] of [
      [64, 16, 16, 16],
      [3, 200, 150, 100],
      [7, 1, 300, 64],
      [2, 300, 300, 300],
    ]) {
      check(rand([batch, m, k]), rand([batch, k, n]), {}, `batch ${batch} ${m}x${n}x${k}`);
    }
  });
});
