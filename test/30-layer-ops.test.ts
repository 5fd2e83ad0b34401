// The Transformer layer's ops: layerNorm (residual, input bias and sum output
// folded in), gelu, relu and linear (bias and activation in the GEMM's
// epilogue), against float64 references on awkward sizes and layouts; their
// async forms, thread-count independence, and errors from the public API and
// from the raw addon functions.
import { afterAll, describe, expect, test } from 'vitest';
import {
  Tensor,
  cpuInfo,
  gelu,
  geluAsync,
  getNumThreads,
  layerNorm,
  layerNormAsync,
  linear,
  linearAsync,
  matmul,
  packMatrix,
  relu,
  reluAsync,
  setNumThreads,
} from '../src';
import { activationParams, layerNormParams, linearParams, type LayerNormParams, type LinearParams } from '../src/params';
import {
  expectBitwiseEqual,
  expectClose,
  gemmTolerance,
  geluRef,
  geluTanhRef,
  layerNormRef,
  matmulRef,
  values,
} from './support/reference';
import native from './support/load-native.cjs';

const threadsBefore = getNumThreads();
afterAll(() => setNumThreads(threadsBefore));

/** Elementwise relative tolerance around a reference. */
const relTol = (want: Float64Array, rel: number, abs = 1e-30) => want.map((w) => rel * Math.abs(w) + abs);

describe(`layerNorm (${process.env.ATTN_ISA} kernels)`, () => {
  test('awkward row lengths, each optional input on and off, against float64', () => {
    for (const n of [1, 2, 7, 16, 17, 33, 100, 257, 768, 1031]) {
      const x = Tensor.randn([3, n], { seed: n, std: 2 });
      const weight = Tensor.randn([n], { seed: n + 1 });
      const bias = Tensor.randn([n], { seed: n + 2 });
      const residual = Tensor.randn([3, n], { seed: n + 3 });
      const inputBias = Tensor.randn([n], { seed: n + 4 });
      for (let variant = 0; variant < 16; ++variant) {
        const opts = {
          weight: variant & 1 ? weight : undefined,
          bias: variant & 2 ? bias : undefined,
          residual: variant & 4 ? residual : undefined,
          inputBias: variant & 8 ? inputBias : undefined,
        };
        const want = layerNormRef(x, opts);
        // A one-element row normalises to 0 (then beta); tolerance relative to the output scale.
        expectClose(layerNorm(x, opts), want, relTol(want, 2e-6, 4e-6), `n=${n} variant ${variant}`);
      }
    }
  });

  test('rows far from zero keep their accuracy (mean 1e4, spread 1)', () => {
    const x = Tensor.randn([16, 768], { seed: 11, mean: 1e4, std: 1 });
    const got = layerNorm(x, { eps: 1e-12 });
    const want = layerNormRef(x, { eps: 1e-12 });
    let worst = 0;
    const g = values(got);
    for (let i = 0; i < g.length; ++i) worst = Math.max(worst, Math.abs(g[i] - want[i]));
    expect(worst).toBeLessThan(2e-6);
    // The residual carries the large part: z = (1e4 + N(0,1)) + (-2e4 + N(0,1)).
    const r = Tensor.randn([16, 768], { seed: 12, mean: -2e4, std: 1 });
    expectClose(layerNorm(x, { residual: r }), layerNormRef(x, { residual: r }), 2e-6, 'large residual');
  });

  test('strided and broadcast operands, rank 1 and 4, eps 1e-12', () => {
    const E = 37;
    const base = Tensor.randn([2, 5, E + 6], { seed: 21 });
    const x = base.narrow(2, 3, E); // rows 43 apart
    const residual = Tensor.randn([5, E], { seed: 22 }); // broadcast over the batch
    const weight = Tensor.randn([2 * E], { seed: 23 }).narrow(0, 0, E);
    const bias = Tensor.randn([E, 2], { seed: 24 }).select(1, 1); // stride 2: copied
    const opts = { residual, weight, bias, eps: 1e-12 };
    expectClose(layerNorm(x, opts), layerNormRef(x, opts), 5e-6, 'strided');
    const t = Tensor.randn([E, 3], { seed: 25 }).transpose(); // last axis not contiguous
    expectClose(layerNorm(t), layerNormRef(t), 5e-6, 'transposed');
    const v = Tensor.randn([E], { seed: 26 });
    expectClose(layerNorm(v), layerNormRef(v), 5e-6, 'rank 1');
    const four = Tensor.randn([2, 3, 4, 9], { seed: 27 });
    expectClose(layerNorm(four, { residual: Tensor.randn([4, 9], { seed: 28 }) }), layerNormRef(four, { residual: Tensor.randn([4, 9], { seed: 28 }) }), 5e-6, 'rank 4');
    expect(layerNorm(Tensor.zeros([0, 5])).shape).toEqual([0, 5]);
  });

  test('a constant row gives beta, not NaN, even with eps 1e-12', () => {
    const y = layerNorm(Tensor.full([2, 10], 3.5), { bias: Tensor.full([10], 0.25), eps: 1e-12 });
    expect(Array.from(y.data)).toEqual(new Array(20).fill(0.25));
  });

  test('in place over x or the residual, into a given out, and the sum output', () => {
    const x = Tensor.randn([4, 50], { seed: 31 });
    const r = Tensor.randn([4, 50], { seed: 32 });
    const b = Tensor.randn([50], { seed: 33 });
    const want = layerNorm(x, { residual: r, inputBias: b });
    const xi = x.clone();
    expect(layerNorm(xi, { residual: r, inputBias: b, out: xi })).toBe(xi);
    expectBitwiseEqual(xi, want, 'over x');
    const ri = r.clone();
    layerNorm(x, { residual: ri, inputBias: b, out: ri });
    expectBitwiseEqual(ri, want, 'over the residual');
    // sumOut = (x + r) + b in float32, here over the residual: a pre-norm stream.
    const stream = r.clone();
    const out = Tensor.empty([4, 50]);
    layerNorm(x, { residual: stream, inputBias: b, out, sumOut: stream });
    expectBitwiseEqual(out, want, 'with the sum');
    const xv = values(x);
    const rv = values(r);
    const bv = values(b);
    const sum = new Float32Array(200).map((_, i) => Math.fround(Math.fround(xv[i] + rv[i]) + bv[i % 50]));
    expectBitwiseEqual(stream, new Tensor(sum, [4, 50]), 'the sum');
  });

  test('async gives the same bits; thread counts do not change them', async () => {
    const x = Tensor.randn([300, 129], { seed: 41 });
    const opts = { residual: Tensor.randn([300, 129], { seed: 42 }), weight: Tensor.randn([129], { seed: 43 }), eps: 1e-6 };
    setNumThreads(1);
    const one = layerNorm(x, opts);
    setNumThreads(2);
    expectBitwiseEqual(layerNorm(x, opts), one, '2 threads');
    expectBitwiseEqual(await layerNormAsync(x, opts), one, 'async');
  });

  test('a large new result (written past the caches) has the same bits as out, on 1 and 2 threads', () => {
    // Results larger than any L2, rows on and off the vector alignment.
    for (const [shape, seed] of [
      [[2100, 768], 61],
      [[30000, 37], 62],
      [[3, 700, 501], 63],
    ] as const) {
      const x = Tensor.randn([...shape], { seed });
      const n = shape[shape.length - 1];
      const opts = { residual: Tensor.randn([...shape], { seed: seed + 100 }), weight: Tensor.randn([n], { seed: 3 }), bias: Tensor.randn([n], { seed: 4 }) };
      setNumThreads(1);
      const out = Tensor.zeros([...shape]);
      layerNorm(x, { ...opts, out });
      expectBitwiseEqual(layerNorm(x, opts), out, `new result ${shape}, 1 thread`);
      setNumThreads(2);
      expectBitwiseEqual(layerNorm(x, opts), out, `new result ${shape}, 2 threads`);
      const view = x.narrow(0, 1, shape[0] - 1); // starts a row in: off the vector alignment
      const viewOut = Tensor.zeros(view.shape);
      layerNorm(view, { weight: opts.weight, out: viewOut });
      expectBitwiseEqual(layerNorm(view, { weight: opts.weight }), viewOut, `a view of ${shape}`);
    }
  });

  test('bad input gets a named error', async () => {
    const x = Tensor.zeros([2, 4]);
    expect(() => layerNorm([1, 2] as never)).toThrow('Expected float32 Tensor for x but received an Array of length 2');
    expect(() => layerNorm(Tensor.zeros([]))).toThrow('Expected Tensor with at least 1 dimension for x');
    expect(() => layerNorm(x, { weight: Tensor.zeros([5]) })).toThrow('Expected Tensor of shape [4] for weight but received a float32 Tensor of shape [5]');
    expect(() => layerNorm(x, { bias: Tensor.zeros([4], 'uint8') })).toThrow(TypeError);
    expect(() => layerNorm(x, { eps: -1 })).toThrow('Expected finite non-negative number for eps but received -1 of type number');
    expect(() => layerNorm(x, { eps: NaN })).toThrow(RangeError);
    expect(() => layerNorm(x, { residual: Tensor.zeros([3, 4]) })).toThrow("layerNorm: residual of shape [3, 4] does not broadcast to x's shape [2, 4]");
    expect(() => layerNorm(x, { residual: Tensor.zeros([2, 1]) })).toThrow(/does not broadcast/);
    expect(() => layerNorm(x, { out: Tensor.zeros([4, 2]) })).toThrow('Expected Tensor of shape [2, 4] for out');
    expect(() => layerNorm(x, { out: Tensor.zeros([4, 2]).transpose() })).toThrow('Expected Tensor with a unit stride on its last axis for out');
    expect(() => layerNorm(x, { sumOut: Tensor.zeros([2, 5]) })).toThrow('Expected Tensor of shape [2, 4] for sumOut');
    expect(() => layerNorm(x, { axis: -1 } as never)).toThrow("Unknown option 'axis' for layerNorm");
    // Overlapping outputs are refused by the addon.
    const buf = Tensor.zeros([3, 4]);
    expect(() => layerNorm(buf.narrow(0, 0, 2), { out: buf.narrow(0, 1, 2) })).toThrow(
      'out must be x or the residual itself, or share no memory with the inputs',
    );
    expect(() => layerNorm(x, { out: buf.narrow(0, 0, 2), sumOut: buf.narrow(0, 1, 2) })).toThrow('out and sum must not share memory');
    await expect(layerNormAsync(x, { eps: -1 })).rejects.toThrow(RangeError);
  });
});

describe(`gelu and relu (${process.env.ATTN_ISA} kernels)`, () => {
  const sweep = Tensor.from(Array.from({ length: 4001 }, (_, i) => -14 + i * 0.007));
  const sweepValues = values(sweep);

  test('exact GELU within a few ulp over [-14, 14], its tanh form, ReLU', () => {
    // Results below 2^-126 (GELU(x) for x below about -12.9) are zeros: the
    // kernels flush subnormals (README, Subnormal numbers).
    const want = sweepValues.map(geluRef).map((v) => (Math.abs(v) < 2 ** -126 ? 0 : v));
    expectClose(gelu(sweep), want, relTol(want, 1e-6, 1e-44), 'gelu');
    // The tanh form is ill-conditioned in its negative tail: compare where it is well-conditioned, then absolutely.
    const wantTanh = sweepValues.map(geluTanhRef);
    const tol = sweepValues.map((x, i) => 1e-6 * Math.abs(wantTanh[i]) * (1 + Math.abs(x) * (1 + 0.134 * x * x)) + 1e-30);
    expectClose(gelu(sweep, { approximate: 'tanh' }), wantTanh, tol, 'gelu tanh');
    expectClose(relu(sweep), sweepValues.map((x) => Math.max(x, 0)), 0, 'relu');
  });

  test('special values', () => {
    const s = Tensor.from([Infinity, -Infinity, NaN, -0, 0]);
    expect(Array.from(gelu(s).data)).toEqual([Infinity, -0, NaN, -0, 0]);
    expect(Array.from(gelu(s, { approximate: 'tanh' }).data)).toEqual([Infinity, -0, NaN, -0, 0]);
    expect(Array.from(relu(s).data).slice(0, 3)).toEqual([Infinity, 0, NaN]);
  });

  test('any shape and layout; in place; a scalar; async the same bits', async () => {
    const x = Tensor.randn([3, 17, 5], { seed: 51, std: 3 }).permute([2, 0, 1]); // strided: copied
    expectClose(gelu(x), values(x).map(geluRef), relTol(values(x).map(geluRef), 1e-6, 1e-30), 'permuted');
    const y = Tensor.randn([7, 33], { seed: 52 });
    const want = gelu(y);
    const yi = y.clone();
    expect(gelu(yi, { out: yi })).toBe(yi);
    expectBitwiseEqual(yi, want, 'in place');
    const row = Tensor.randn([4, 40], { seed: 53 }).narrow(1, 3, 30); // rows 40 apart
    expectClose(relu(row), values(row).map((v) => Math.max(v, 0)), 0, 'row view');
    expect(gelu(Tensor.from(1)).get()).toBeCloseTo(0.8413447, 6);
    expectBitwiseEqual(await geluAsync(y), want, 'async');
    expectBitwiseEqual(await geluAsync(y, { approximate: 'tanh' }), gelu(y, { approximate: 'tanh' }), 'async tanh');
    expectBitwiseEqual(await reluAsync(y), relu(y), 'async relu');
    const big = Tensor.randn([1 << 18], { seed: 54 });
    setNumThreads(1);
    const one = gelu(big);
    setNumThreads(2);
    expectBitwiseEqual(gelu(big), one, 'threads');
  });

  test('a large new result (ReLU\'s written past the caches) has the same bits as out, on 1 and 2 threads', () => {
    // One contiguous run, rows off the vector alignment, and a row view.
    const cases = [Tensor.randn([1531, 1029], { seed: 55 }), Tensor.randn([2000, 703], { seed: 56 }).narrow(1, 2, 700), Tensor.randn([(1 << 20) + 3], { seed: 57 })];
    for (const x of cases) {
      for (const [name, f] of [
        ['relu', (o?: Tensor) => relu(x, o ? { out: o } : undefined)],
        ['gelu', (o?: Tensor) => gelu(x, o ? { out: o } : undefined)],
      ] as const) {
        setNumThreads(1);
        const out = Tensor.zeros(x.shape);
        f(out);
        expectBitwiseEqual(f(), out, `${name} ${x.shape}, 1 thread`);
        setNumThreads(2);
        expectBitwiseEqual(f(), out, `${name} ${x.shape}, 2 threads`);
      }
    }
  });

  test('bad input gets a named error', async () => {
    expect(() => gelu(Tensor.zeros([2]), { approximate: 'fast' as never })).toThrow(
      "Expected 'none' or 'tanh' for approximate but received 'fast' of type string",
    );
    expect(() => gelu(Tensor.zeros([2]), { approximate: true as never })).toThrow(TypeError);
    expect(() => relu(Tensor.zeros([2], 'uint8'))).toThrow('Expected float32 Tensor for x but received a uint8 Tensor of shape [2]');
    expect(() => relu(Tensor.zeros([2]), { inplace: true } as never)).toThrow("Unknown option 'inplace' for relu");
    const buf = Tensor.zeros([10]);
    expect(() => relu(buf.narrow(0, 0, 6), { out: buf.narrow(0, 2, 6) })).toThrow('out must be x itself or share no memory with it');
    await expect(geluAsync(Tensor.zeros([2]), { out: Tensor.zeros([3]) })).rejects.toThrow('Expected Tensor of shape [2] for out');
  });
});

describe(`linear (${process.env.ATTN_ISA} kernels)`, () => {
  const acts = [
    ['none', (v: number) => v],
    ['relu', (v: number) => Math.max(v, 0)],
    ['gelu', geluRef],
    ['gelu_tanh', geluTanhRef],
  ] as const;

  /** act(x Wᵀ + b) in float64, with the GEMM tolerance widened for the activation's slope. */
  function reference(x: Tensor, w: Tensor, b: Tensor | undefined, act: (v: number) => number) {
    const x2 = x.rank === 1 ? x.unsqueeze(0) : x.reshape([-1, x.shape[x.rank - 1]]);
    const ref = matmulRef(x2, w, { transposeB: true });
    const bv = b ? values(b) : null;
    const n = w.shape[0];
    const pre = ref.value.map((v, i) => v + (bv ? bv[i % n] : 0));
    const tol = gemmTolerance(ref, w.shape[1]).map((t, i) => 1.2 * t + 2e-6 * Math.abs(pre[i]) + 1e-30);
    return { want: pre.map(act), tol };
  }

  test('every activation, awkward sizes, on the packed and unpacked GEMM paths', () => {
    for (const [m, k, n] of [
      [1, 7, 5],
      [3, 64, 33],
      [37, 129, 67],
      [130, 300, 257],
      [9, 2100, 40],
    ]) {
      const x = Tensor.randn([m, k], { seed: m + k });
      const w = Tensor.randn([n, k], { seed: n, std: 1 / Math.sqrt(k) });
      const b = Tensor.randn([n], { seed: n + 1 });
      for (const [name, fn] of acts) {
        const { want, tol } = reference(x, w, b, fn);
        expectClose(linear(x, w, { bias: b, activation: name }), want, tol, `${m}x${k}x${n} ${name}`);
        const packed = packMatrix(w, { transpose: true });
        expectClose(linear(x, packed, { bias: b, activation: name }), want, tol, `${m}x${k}x${n} ${name} packed`);
        if (name !== 'none') {
          // The epilogue applies the same function as the separate pass: bitwise.
          const plain = linear(x, packed, { bias: b });
          const separate = name === 'relu' ? relu(plain) : gelu(plain, { approximate: name === 'gelu' ? 'none' : 'tanh' });
          expectBitwiseEqual(linear(x, packed, { bias: b, activation: name }), separate, `${m}x${k}x${n} ${name} fused = separate`);
        }
      }
    }
  });

  test('layouts: batch axes, a vector, row views, a transposed or strided weight, a given out, K = 0', () => {
    const w = Tensor.randn([6, 10], { seed: 61 });
    const b = Tensor.randn([6], { seed: 62 });
    const x3 = Tensor.randn([2, 3, 10], { seed: 63 });
    const y3 = linear(x3, w, { bias: b, activation: 'gelu' });
    expect(y3.shape).toEqual([2, 3, 6]);
    const r = reference(x3, w, b, geluRef);
    expectClose(y3, r.want, r.tol, 'batch axes');
    const v = Tensor.randn([10], { seed: 64 });
    expect(linear(v, w).shape).toEqual([6]);
    expectClose(linear(v, w), reference(v, w, undefined, (t) => t).want, 1e-5, 'vector');
    const rows = Tensor.randn([5, 16], { seed: 65 }).narrow(1, 2, 10);
    expectClose(linear(rows, w), reference(rows.contiguous(), w, undefined, (t) => t).want, 1e-5, 'row view');
    const wt = w.transpose().contiguous().transpose(); // stored [in, out]
    expectBitwiseEqual(linear(x3, wt, { bias: b }), matmul(x3, wt, { transposeB: true, bias: b }), 'weight stored transposed');
    const ws = Tensor.randn([6, 20], { seed: 66 }).narrow(1, 0, 10).transpose().transpose(); // row stride 20
    expectClose(linear(x3, ws), reference(x3, ws.contiguous(), undefined, (t) => t).want, 1e-5, 'weight rows 20 apart');
    const gapped = Tensor.randn([6, 10, 2], { seed: 67 }).select(2, 0); // strides [20, 2]: copied
    expectClose(linear(x3, gapped), reference(x3, gapped.contiguous(), undefined, (t) => t).want, 1e-5, 'copied weight');
    const out = Tensor.zeros([2, 3, 8]).narrow(2, 1, 6);
    expect(linear(x3, w, { bias: b, activation: 'gelu', out })).toBe(out);
    expectBitwiseEqual(out, y3, 'into a row view');
    const empty = linear(Tensor.zeros([4, 0]), Tensor.zeros([3, 0]), { bias: Tensor.from([1, -2, 3]), activation: 'relu' });
    expect(Array.from(empty.data)).toEqual([1, 0, 3, 1, 0, 3, 1, 0, 3, 1, 0, 3]);
  });

  test('a packed weight wider and deeper than one cache block: rows split over threads, same bits', () => {
    // n crosses this CPU's column block, k spans several depth blocks, m
    // leaves a partial row tile on each thread.
    const n = cpuInfo().gemmBlocking.nc + 45;
    const [m, k] = [131, 1100];
    const x = Tensor.randn([m, k], { seed: 81 });
    const w = Tensor.randn([n, k], { seed: 82, std: 1 / Math.sqrt(k) });
    const b = Tensor.randn([n], { seed: 83 });
    const packed = packMatrix(w, { transpose: true });
    setNumThreads(1);
    const one = linear(x, packed, { bias: b, activation: 'gelu' });
    setNumThreads(2);
    const two = linear(x, packed, { bias: b, activation: 'gelu' });
    expectBitwiseEqual(two, one, '2 threads');
    expectBitwiseEqual(linear(x, w, { bias: b, activation: 'gelu' }), one, 'packed = unpacked');
    // Against float64 on the last rows (the partial tile) over every column.
    const rows = 9;
    const { want, tol } = reference(x.narrow(0, m - rows, rows), w, b, geluRef);
    expectClose(two.narrow(0, m - rows, rows), want, tol, `${m}x${k}x${n} gelu packed`);
  });

  test('a packed weight with 64 rows of input: an infinity in x or in the weight gives infinities, not NaN', () => {
    const [m, k, n] = [64, 40, 48];
    const x = Tensor.full([m, k], 0.5);
    x.data[5 * k + 2] = -Infinity;
    const w = Tensor.full([n, k], 0.25);
    const wInf = Tensor.full([n, k], 0.25);
    wInf.data[9 * k + 4] = Infinity;
    const y = linear(x, packMatrix(w, { transpose: true }), { bias: Tensor.full([n], 1) });
    const z = linear(Tensor.full([m, k], 0.5), packMatrix(wInf, { transpose: true }));
    for (let i = 0; i < m; ++i)
      for (let j = 0; j < n; ++j) {
        const wantY = i === 5 ? -Infinity : 0.125 * k + 1;
        const wantZ = j === 9 ? Infinity : 0.125 * k;
        if (y.data[i * n + j] !== wantY) expect.fail(`y[${i}][${j}] is ${y.data[i * n + j]}, expected ${wantY}`);
        if (z.data[i * n + j] !== wantZ) expect.fail(`z[${i}][${j}] is ${z.data[i * n + j]}, expected ${wantZ}`);
      }
  });

  test('async gives the same bits; thread counts do not change them', async () => {
    const x = Tensor.randn([200, 300], { seed: 71 });
    const w = packMatrix(Tensor.randn([500, 300], { seed: 72 }), { transpose: true });
    const b = Tensor.randn([500], { seed: 73 });
    setNumThreads(1);
    const one = linear(x, w, { bias: b, activation: 'gelu' });
    setNumThreads(2);
    expectBitwiseEqual(linear(x, w, { bias: b, activation: 'gelu' }), one, '2 threads');
    expectBitwiseEqual(await linearAsync(x, w, { bias: b, activation: 'gelu' }), one, 'async');
  });

  test('bad input gets a named error', async () => {
    const x = Tensor.zeros([3, 4]);
    expect(() => linear(x, Tensor.zeros([5, 3]))).toThrow(
      'linear: x.shape[1] is 4 but weight.shape[1] is 3; weight is [outFeatures, inFeatures]',
    );
    expect(() => linear(x, Tensor.zeros([5]))).toThrow('Expected 2-D Tensor [outFeatures, inFeatures] for weight');
    expect(() => linear(x, new Float32Array(20) as never)).toThrow('Expected float32 Tensor or PackedMatrix for weight');
    expect(() => linear(x, packMatrix(Tensor.zeros([5, 3]), { transpose: true }))).toThrow(
      'linear: x.shape[1] is 4 but the packed weight has 3 input features (rows)',
    );
    expect(() => linear(x, Tensor.zeros([5, 4]), { activation: 'swish' as never })).toThrow(
      "Expected 'none', 'relu', 'gelu' or 'gelu_tanh' for activation but received 'swish' of type string",
    );
    expect(() => linear(x, Tensor.zeros([5, 4]), { bias: Tensor.zeros([4]) })).toThrow('Expected Tensor of shape [5] for bias');
    expect(() => linear(x, Tensor.zeros([5, 4]), { out: Tensor.zeros([5, 3]).transpose() })).toThrow(/unit stride on its last axis/);
    expect(() => linear(Tensor.zeros([2, 3, 4]), Tensor.zeros([5, 4]), { out: Tensor.zeros([3, 2, 5]).transpose(0, 1) })).toThrow(
      /out must be rows with a unit last stride and one stride between them/,
    );
    const shared = Tensor.zeros([3, 4]);
    expect(() => linear(shared, Tensor.zeros([4, 4]), { out: shared })).toThrow('out must not share memory with x or the weight');
    await expect(linearAsync(x, Tensor.zeros([5, 3]))).rejects.toThrow(RangeError);
  });
});

describe('the native layer functions check bounds and overlap themselves', () => {
  const lnParams = (change: Partial<LayerNormParams> = {}) =>
    layerNormParams({
      rank: 2,
      streamOut: 0,
      shape: [2, 4],
      xStrides: [4, 1],
      xOffset: 0,
      residualStrides: [4, 1],
      residualOffset: 0,
      outStrides: [4, 1],
      outOffset: 0,
      shiftOffset: 0,
      weightOffset: 0,
      biasOffset: 0,
      sumStrides: [4, 1],
      sumOffset: 0,
      eps: 1e-5,
      ...change,
    });
  const linParams = (change: Partial<LinearParams> = {}) =>
    linearParams({ m: 2, n: 3, k: 4, lda: 4, xOffset: 0, ldw: 4, wTransposed: 0, wOffset: 0, ldc: 3, outOffset: 0, biasOffset: 0, activation: 0, ...change });
  const f = (n: number) => new Float32Array(n);

  test('layerNorm', () => {
    expect(() => native.layerNorm(f(7), null, null, null, null, f(8), null, lnParams())).toThrow(
      'x is too short: the view needs 8 elements from offset 0 but its array has 7',
    );
    expect(() => native.layerNorm(f(8), f(8), null, null, null, f(8), null, lnParams({ residualOffset: 1 }))).toThrow('residual is too short');
    expect(() => native.layerNorm(f(8), null, f(3), null, null, f(8), null, lnParams())).toThrow('shift is too short');
    expect(() => native.layerNorm(f(8), null, null, f(8), null, f(8), null, lnParams({ weightOffset: 5 }))).toThrow('weight is too short');
    expect(() => native.layerNorm(f(8), null, null, null, null, f(8), null, lnParams({ outStrides: [2, 1] }))).toThrow('out: unsupported operation: more than one element of the written-to tensor refers to a single memory location');
    expect(() => native.layerNorm(f(8), null, null, null, null, f(8), null, lnParams({ xStrides: [4, 2] }))).toThrow(
      'the last axis of x must be contiguous (stride 1)',
    );
    expect(() => native.layerNorm(f(8), null, null, null, null, f(8), null, lnParams({ rank: 9 }))).toThrow(RangeError);
    expect(() => native.layerNorm(f(8), null, null, null, null, f(8), null, lnParams({ eps: -1 }))).toThrow(
      'Expected finite non-negative number for eps',
    );
    const buf = f(16);
    expect(() => native.layerNorm(buf, null, null, null, null, buf, null, lnParams({ outOffset: 2 }))).toThrow(
      'out must be x or the residual itself, or share no memory with the inputs',
    );
    expect(() => native.layerNorm(f(8), null, buf.subarray(0, 4), null, null, buf, null, lnParams())).toThrow(/out must be/);
    expect(() => native.layerNorm(f(8), null, null, null, null, buf, buf, lnParams({ sumOffset: 4 }))).toThrow('out and sum must not share memory');
    expect(() => native.layerNorm(buf, null, null, null, null, f(8), buf, lnParams({ sumOffset: 1, sumStrides: [4, 1] }))).toThrow(
      'sum must be x or the residual itself, or share no memory with the inputs',
    );
    expect(() => native.layerNorm(f(8), null, null, null, null, f(8), null, Float64Array.from([1]))).toThrow(
      'Expected 50 entries in layerNorm parameters but received 1',
    );
    native.layerNorm(buf, null, null, null, null, buf, null, lnParams()); // exactly in place: fine
  });

  test('activation', () => {
    const params = (outOffset = 0) =>
      activationParams({ kind: 2, streamOut: 0, rank: 1, shape: [6], xStrides: [1], xOffset: 0, outStrides: [1], outOffset });
    expect(() => native.activation(f(5), f(6), params())).toThrow('x is too short');
    const buf = f(8);
    expect(() => native.activation(buf, buf, params(1))).toThrow('out must be x itself or share no memory with it');
    expect(() => native.activation(f(6), f(6), activationParams({ kind: 4, streamOut: 0, rank: 1, shape: [6], xStrides: [1], xOffset: 0, outStrides: [1], outOffset: 0 }))).toThrow(
      RangeError,
    );
    native.activation(buf, buf, params());
  });

  test('linear', () => {
    expect(() => native.linear(f(7), f(12), f(6), null, linParams())).toThrow('x is too short');
    expect(() => native.linear(f(8), f(11), f(6), null, linParams())).toThrow('weight is too short');
    expect(() => native.linear(f(8), f(12), f(5), null, linParams())).toThrow('out is too short');
    expect(() => native.linear(f(8), f(12), f(6), f(2), linParams())).toThrow('bias is too short');
    expect(() => native.linear(f(8), f(12), f(6), null, linParams({ ldw: 3 }))).toThrow('ldw is smaller than the rows it must hold');
    expect(() => native.linear(f(8), f(12), f(6), null, linParams({ activation: 4 }))).toThrow(RangeError);
    const buf = f(32);
    expect(() => native.linear(f(8), buf, buf.subarray(10), null, linParams())).toThrow('out must not share memory with x or the weight');
    expect(() => native.linear(buf, f(12), buf.subarray(4), null, linParams())).toThrow('out must not share memory with x or the weight');
    const packed = native.packMatrix(f(12), Float64Array.from([3, 4, 4, 0, 0])); // [k 3, n 4]
    expect(() => native.linear(f(8), packed, f(6), null, linParams())).toThrow('the packed weight is [3, 4], expected [4, 3]');
    expect(() => native.linear(f(8), {} as never, f(6), null, linParams())).toThrow('Expected Float32Array for weight but received an object');
  });
});
