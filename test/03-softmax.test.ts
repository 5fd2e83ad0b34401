import { describe, expect, test } from 'vitest';
import { Tensor, softmax } from '../src';
import { expectClose, softmaxRef, values } from './support/reference';

let seed = 100;
const rand = (shape: number[], std = 3) => Tensor.randn(shape, { seed: seed++, std });

// Absolute tolerance on probabilities: a few float32 ulps of 1.
const TOL = 2e-6;

describe('softmax against a float64 reference', () => {
  test('row lengths across vector widths and tails', () => {
    for (const cols of [1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257, 1000, 4099]) {
      const x = rand([3, cols]);
      expectClose(softmax(x), softmaxRef(x), TOL, `cols=${cols}`);
    }
  });

  test('rows sum to one', () => {
    const y = values(softmax(rand([50, 77], 10)));
    for (let r = 0; r < 50; ++r) {
      let s = 0;
      for (let c = 0; c < 77; ++c) s += y[r * 77 + c];
      expect(Math.abs(s - 1)).toBeLessThan(1e-5);
    }
  });

  test('scale', () => {
    const x = rand([4, 5, 67]);
    expectClose(softmax(x, { scale: 0.125 }), softmaxRef(x, { scale: 0.125 }), TOL, 'scale');
  });

  test('additive float32 mask, broadcast over leading axes', () => {
    const x = rand([2, 3, 5, 19]);
    const mask = rand([2, 1, 1, 19], 1);
    mask.data[4] = -Infinity;
    expectClose(softmax(x, { mask }), softmaxRef(x, { mask }), TOL, 'float mask');
    const full = rand([5, 19], 1);
    expectClose(softmax(x, { mask: full, scale: 0.5 }), softmaxRef(x, { mask: full, scale: 0.5 }), TOL, '2-D mask');
  });

  test('uint8 mask (nonzero = masked), broadcast', () => {
    const x = rand([2, 4, 6, 33]);
    const mask = Tensor.zeros([2, 1, 1, 33], 'uint8');
    for (let j = 20; j < 33; ++j) mask.data[33 + j] = 1; // batch 1: keys 20.. are padding
    mask.data[3] = 255;
    expectClose(softmax(x, { mask }), softmaxRef(x, { mask }), TOL, 'uint8 mask');
    const y = values(softmax(x, { mask }));
    expect(y[4 * 6 * 33 + 25]).toBe(0);
  });

  test('mask broadcast along the last axis (a per-row mask)', () => {
    const x = rand([3, 4, 10]);
    const rowMask = Tensor.from([[[0], [1], [0], [0]]], 'uint8'); // [1, 4, 1]
    const y = values(softmax(x, { mask: rowMask }));
    for (let b = 0; b < 3; ++b) for (let c = 0; c < 10; ++c) expect(y[b * 40 + 10 + c]).toBe(0);
    expectClose(softmax(x, { mask: rowMask }), softmaxRef(x, { mask: rowMask }), TOL, 'row mask');
  });

  test('causal, square and rectangular (query i sees keys j <= i + cols - rows)', () => {
    const sq = rand([2, 7, 7]);
    const y = values(softmax(sq, { causal: true }));
    expect(y[1]).toBe(0); // row 0 sees only key 0
    expect(y[0]).toBeCloseTo(1, 6);
    expectClose(softmax(sq, { causal: true }), softmaxRef(sq, { causal: true }), TOL, 'square');
    const wide = rand([3, 4, 41]); // 4 new queries after 37 cached keys
    expectClose(softmax(wide, { causal: true }), softmaxRef(wide, { causal: true }), TOL, 'wide');
    const tall = rand([6, 3]); // rows 0..2 see nothing: zeros
    const t = values(softmax(tall, { causal: true }));
    expect(Array.from(t.subarray(0, 9))).toEqual(new Array(9).fill(0));
    expectClose(softmax(tall, { causal: true }), softmaxRef(tall, { causal: true }), TOL, 'tall');
    const m = Tensor.zeros([7], 'uint8');
    m.data[2] = 1;
    expectClose(softmax(sq, { causal: true, mask: m, scale: 2 }), softmaxRef(sq, { causal: true, mask: m, scale: 2 }), TOL, 'causal+mask');
  });
});

describe('softmax edge cases', () => {
  test('a fully masked row is zeros, not NaN', () => {
    const x = rand([3, 17]);
    const mask = Tensor.zeros([3, 17], 'uint8');
    mask.data.fill(1, 17, 34);
    const y = values(softmax(x, { mask }));
    expect(Array.from(y.subarray(17, 34))).toEqual(new Array(17).fill(0));
    expect(y.subarray(0, 17).some((v) => v > 0)).toBe(true);
    const fm = Tensor.full([17], -Infinity);
    expect(values(softmax(x, { mask: fm })).every((v) => v === 0)).toBe(true);
  });

  test('-Infinity entries get zero weight; an all -Infinity row is zeros', () => {
    const x = Tensor.from([
      [-Infinity, 0, -Infinity, 1],
      [-Infinity, -Infinity, -Infinity, -Infinity],
    ]);
    const y = values(softmax(x));
    expect(y[0]).toBe(0);
    expect(y[2]).toBe(0);
    expect(y[1]).toBeCloseTo(1 / (1 + Math.E), 6);
    expect(Array.from(y.subarray(4))).toEqual([0, 0, 0, 0]);
  });

  test('logits of ±1e4 do not overflow', () => {
    const x = Tensor.from([
      [1e4, -1e4, 1e4 - 1, 0],
      [-1e4, -1e4 + 2, -1e4, -1e4],
    ]);
    expectClose(softmax(x), softmaxRef(x), TOL, '±1e4');
    const y = values(softmax(x));
    expect(y.every(Number.isFinite)).toBe(true);
  });

  test('a NaN in a row makes that row NaN, and only that row', () => {
    for (const cols of [1, 5, 16, 40]) {
      const x = rand([3, cols]);
      x.data[cols + cols - 1] = NaN;
      const y = values(softmax(x));
      expect(Array.from(y.subarray(cols, 2 * cols)).every(Number.isNaN)).toBe(true);
      expect(y.subarray(0, cols).some(Number.isNaN)).toBe(false);
      expect(y.subarray(2 * cols).some(Number.isNaN)).toBe(false);
    }
    const hidden = Tensor.from([[-Infinity, NaN, -Infinity]]);
    expect(values(softmax(hidden)).every(Number.isNaN)).toBe(true);
  });

  test('a NaN under a uint8 mask is ignored', () => {
    const x = Tensor.from([[1, NaN, 2]]);
    const mask = Tensor.from([0, 1, 0], 'uint8');
    const y = values(softmax(x, { mask }));
    expect(y[1]).toBe(0);
    expect(y[0] + y[2]).toBeCloseTo(1, 6);
  });
});

describe('softmax outputs and views', () => {
  test('in place gives the same bits as out of place', () => {
    const x = rand([5, 300]);
    const expected = softmax(x, { scale: 0.3 });
    const y = softmax(x, { scale: 0.3, out: x });
    expect(y).toBe(x);
    expect(Buffer.from(x.data.buffer).equals(Buffer.from(expected.data.buffer))).toBe(true);
  });

  test('a new result (long rows, or a large result, written past the caches) has the same bits as out', () => {
    // Rows in runs and one at a time, masked and causal, at several lengths;
    // short rows of results larger than any L2 (streamed too), rows of
    // lengths that leave them off the vector alignment among them.
    for (const [shape, options] of [
      [[3, 5, 4099], {}],
      [[64, 1000], { scale: 0.5 }],
      [[2, 3, 700], { causal: true }],
      [[4, 2050], { mask: Tensor.randn([2050], { seed: 9 }) }],
      [[7, 33], {}],
      [[2600, 256], {}],
      [[5300, 100], { scale: 0.5 }],
      [[3, 1000, 177], { causal: true }],
      [[1500, 500], { mask: Tensor.randn([500], { seed: 10 }) }],
    ] as const) {
      const x = rand([...shape]);
      const out = Tensor.zeros([...shape]);
      softmax(x, { ...options, out });
      const fresh = softmax(x, options);
      expect(Buffer.from(fresh.data.buffer, fresh.data.byteOffset, fresh.data.byteLength).equals(Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength))).toBe(true);
    }
  });

  test('strided input views, strided out, and subarray storage', () => {
    const big = rand([9, 60]);
    const x = big.narrow(1, 5, 41); // row stride 60
    const store = new Float32Array(1000);
    const out = new Tensor(store.subarray(3), [9, 41], { strides: [50, 1], offset: 2 });
    softmax(x, { out });
    expectClose(out, softmaxRef(x), TOL, 'strided');
    const xt = rand([30, 4]).transpose(); // last axis not contiguous: copied
    expectClose(softmax(xt), softmaxRef(xt), TOL, 'transposed');
  });
});
