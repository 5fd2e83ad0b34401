import { describe, expect, test } from 'vitest';
import { Tensor, getNumThreads, setNumThreads } from '../src';
import { hasDistinctElements } from '../src/tensor';
import { values } from './support/reference';

describe('Tensor construction', () => {
  test('from data and shape, with dtype from the array type', () => {
    const t = new Tensor(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.strides).toEqual([3, 1]);
    expect(t.dtype).toBe('float32');
    expect(t.size).toBe(6);
    expect(t.rank).toBe(2);
    expect(t.get(1, 2)).toBe(6);
    const m = new Tensor(new Uint8Array([0, 1]), [2]);
    expect(m.dtype).toBe('uint8');
    expect(new Tensor([1, 2, 3], [3]).data).toBeInstanceOf(Float32Array);
  });

  test('shape is checked against the data length', () => {
    expect(() => new Tensor(new Float32Array(5), [2, 3])).toThrow(RangeError);
    expect(() => new Tensor(new Float32Array(5), [2, 3])).toThrow(
      'Expected data of length 6 for shape [2, 3] but received a Float32Array of length 5',
    );
    expect(() => new Tensor(new Float32Array(7), [2, 3])).toThrow(RangeError);
  });

  test('bad shapes and data name the argument and value', () => {
    expect(() => new Tensor(new Float32Array(6), [2, -3])).toThrow(
      'Expected non-negative integer for shape[1] but received -3 of type number',
    );
    expect(() => new Tensor(new Float32Array(6), [2, 1.5] as number[])).toThrow(RangeError);
    expect(() => new Tensor(new Float32Array(6), [2, '3'] as unknown as number[])).toThrow(TypeError);
    expect(() => new Tensor(new Float32Array(6), 6 as unknown as number[])).toThrow(TypeError);
    expect(() => new Tensor(new Float64Array(6) as unknown as Float32Array, [6])).toThrow(
      'Expected Float32Array, Uint8Array or Array of numbers for data but received a Float64Array of length 6',
    );
    expect(() => new Tensor(new Float32Array(1), [1, 1, 1, 1, 1, 1, 1, 1, 1])).toThrow(RangeError);
    expect(() => new Tensor(new Float32Array(6), [6], { stride: [1] } as never)).toThrow(
      /Unknown option 'stride' for Tensor/,
    );
  });

  test('shape products that overflow are refused before allocating', () => {
    expect(() => Tensor.zeros([2 ** 30, 2 ** 30, 2 ** 30])).toThrow(RangeError);
    expect(() => Tensor.zeros([2 ** 30, 2 ** 30, 2 ** 30])).toThrow(/fewer than 2\^53 elements/);
    expect(() => Tensor.zeros([2 ** 26, 2 ** 26])).toThrow(/Cannot allocate a tensor of shape/);
  });

  test('strided views over a subarray with a byteOffset', () => {
    const buf = new Float32Array(20).map((_, i) => i);
    const sub = buf.subarray(3, 15); // byteOffset 12
    const t = new Tensor(sub, [3, 2], { strides: [4, 2], offset: 1 });
    expect(values(t)).toEqual(Float64Array.from([4, 6, 8, 10, 12, 14]));
    expect(() => new Tensor(sub, [3, 2], { strides: [4, 2], offset: 4 })).toThrow(RangeError);
  });

  test('zeros, full, from', () => {
    expect(Array.from(Tensor.zeros([2, 2]).data)).toEqual([0, 0, 0, 0]);
    expect(Tensor.zeros([3], 'uint8').dtype).toBe('uint8');
    expect(Array.from(Tensor.full([3], 2.5).data)).toEqual([2.5, 2.5, 2.5]);
    const t = Tensor.from([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    expect(t.shape).toEqual([3, 2]);
    expect(t.toArray()).toEqual([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    expect(() => Tensor.from([[1, 2], [3]])).toThrow('Expected Array of length 2 for values[1]');
    expect(() => Tensor.zeros([2], 'float16' as never)).toThrow(TypeError);
  });
});

describe('seeded random tensors', () => {
  test('randn is deterministic for a seed and differs across seeds', () => {
    const a = Tensor.randn([1000], { seed: 7 });
    const b = Tensor.randn([1000], { seed: 7 });
    const c = Tensor.randn([1000], { seed: 8 });
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer))).toBe(true);
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(c.data.buffer))).toBe(false);
  });

  test('randn has the requested moments; prefixes agree across lengths', () => {
    const t = Tensor.randn([200_001], { seed: 3, mean: 2, std: 0.5 });
    const v = values(t);
    const mean = v.reduce((s, x) => s + x, 0) / v.length;
    const variance = v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length;
    expect(Math.abs(mean - 2)).toBeLessThan(0.01);
    expect(Math.abs(variance - 0.25)).toBeLessThan(0.01);
    const short = Tensor.randn([10], { seed: 3, mean: 2, std: 0.5 });
    expect(Array.from(short.data)).toEqual(Array.from(t.data.subarray(0, 10)));
  });

  test('uniform stays in range', () => {
    const u = values(Tensor.uniform([50_000], { seed: 1, low: -0.25, high: 0.75 }));
    expect(Math.min(...u)).toBeGreaterThanOrEqual(-0.25);
    expect(Math.max(...u)).toBeLessThan(0.75);
    expect(() => Tensor.uniform([3], { low: 1, high: 0 })).toThrow(RangeError);
    expect(() => Tensor.randn([3], { seed: -1 })).toThrow('Expected non-negative integer for seed but received -1');
    expect(() => Tensor.randn([3], { std: NaN })).toThrow(RangeError);
  });
});

describe('views', () => {
  const base = () => new Tensor(Float32Array.from({ length: 24 }, (_, i) => i), [2, 3, 4]);

  test('transpose and permute share data', () => {
    const t = base();
    const tt = t.transpose();
    expect(tt.shape).toEqual([2, 4, 3]);
    expect(tt.data).toBe(t.data);
    expect(tt.get(1, 3, 2)).toBe(t.get(1, 2, 3));
    const p = t.permute([2, 0, 1]);
    expect(p.shape).toEqual([4, 2, 3]);
    expect(p.get(3, 1, 2)).toBe(t.get(1, 2, 3));
    expect(tt.isContiguous()).toBe(false);
    expect(() => t.permute([0, 0, 1])).toThrow(RangeError);
  });

  test('narrow, select, unsqueeze, expand', () => {
    const t = base();
    const n = t.narrow(2, 1, 2);
    expect(n.shape).toEqual([2, 3, 2]);
    expect(n.get(1, 2, 1)).toBe(t.get(1, 2, 2));
    const s = t.select(1, 2);
    expect(s.shape).toEqual([2, 4]);
    expect(s.get(1, 3)).toBe(t.get(1, 2, 3));
    expect(t.unsqueeze(1).shape).toEqual([2, 1, 3, 4]);
    const row = new Tensor([1, 2, 3], [1, 3]);
    const e = row.expand([4, 2, 3]);
    expect(e.strides).toEqual([0, 0, 1]);
    expect(values(e).length).toBe(24);
    expect(() => row.expand([2, 4])).toThrow(RangeError);
  });

  test('contiguous copies only when needed; clone always copies', () => {
    const t = base();
    expect(t.contiguous()).toBe(t);
    const c = t.transpose(0, 2).contiguous();
    expect(c.isContiguous()).toBe(true);
    expect(values(c)).toEqual(values(t.transpose(0, 2)));
    expect(t.clone().data).not.toBe(t.data);
    const u8 = new Tensor(Uint8Array.from([1, 2, 3, 4, 5, 6]), [2, 3]).transpose();
    expect(Array.from(u8.contiguous().data)).toEqual([1, 4, 2, 5, 3, 6]);
  });

  test('permutes made contiguous, large and awkward (copied in tiles), float32 and uint8, into views off the alignment', () => {
    const index = (shape: number[]) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return new Tensor(Float32Array.from({ length: n }, (_, i) => i), shape);
    };
    // Element i of the contiguous result holds the source's flat index at the same multi-index.
    const mismatches = (got: ArrayLike<number>, t: Tensor, map: (v: number) => number) => {
      let bad = 0;
      const idx = new Array<number>(t.rank).fill(0);
      for (let i = 0; i < t.size; ++i) {
        let off = t.offset;
        for (let d = 0; d < t.rank; ++d) off += idx[d] * t.strides[d];
        if (got[i] !== map(off)) bad++;
        for (let d = t.rank - 1; d >= 0 && ++idx[d] === t.shape[d]; --d) idx[d] = 0;
      }
      return bad;
    };
    for (const [shape, perm] of [
      [[700, 900], [1, 0]],
      [[3, 37, 70], [0, 2, 1]],
      [[5, 130, 17], [2, 0, 1]],
      [[2, 200, 300], [2, 1, 0]],
      [[4, 33, 8, 65], [0, 2, 3, 1]],
    ] as const) {
      const t = index([...shape]).permute([...perm]);
      expect(mismatches(t.contiguous().data, t, (v) => v)).toBe(0);
      const store = new Float32Array(t.size + 3);
      const dst = new Tensor(store.subarray(1, 1 + t.size), t.shape); // 4 bytes past the 16-byte alignment
      dst.assign(t);
      expect(mismatches(dst.data, t, (v) => v)).toBe(0);
      const u8 = new Tensor(Uint8Array.from(index([...shape]).data, (v) => v % 251), [...shape]).permute([...perm]);
      expect(mismatches(u8.contiguous().data, u8, (v) => v % 251)).toBe(0);
    }
  });

  test('clones of large tensors and of narrowed views (new results, written past the caches) hold every element, on 1 and 2 threads', () => {
    const before = getNumThreads();
    try {
      for (const threads of [1, 2]) {
        setNumThreads(threads);
        // Contiguous (one run), a narrowed view (a copy per row), uint8, and a small one.
        const big = Tensor.randn([1031, 1027], { seed: 3 });
        const c = big.clone();
        expect(c.data.buffer === big.data.buffer).toBe(false);
        expect(Buffer.compare(Buffer.from(c.data.buffer, c.data.byteOffset, c.data.byteLength), Buffer.from(big.data.buffer, big.data.byteOffset, big.data.byteLength))).toBe(0);
        const narrow = big.narrow(1, 3, 1001);
        const nc = narrow.contiguous();
        let bad = 0;
        const got = nc.data, src = big.data;
        for (let r = 0; r < 1031; ++r) for (let j = 0; j < 1001; ++j) if (got[r * 1001 + j] !== src[r * 1027 + 3 + j]) bad++;
        expect(bad).toBe(0);
        const bytes = new Uint8Array(3 * 1024 * 1024 + 5);
        for (let i = 0; i < bytes.length; ++i) bytes[i] = (i * 7) & 255;
        const u8 = new Tensor(bytes, [bytes.length]);
        const uc = u8.clone();
        expect(Buffer.compare(Buffer.from(uc.data.buffer, uc.data.byteOffset, uc.data.byteLength), Buffer.from(u8.data.buffer, u8.data.byteOffset, u8.data.byteLength))).toBe(0);
        const small = Tensor.randn([3, 5], { seed: 4 });
        expect(Array.from(small.clone().data)).toEqual(Array.from(small.data));
      }
    } finally {
      setNumThreads(before);
    }
  });

  test('reshape is a view of contiguous data and infers -1', () => {
    const t = base();
    const r = t.reshape([6, -1]);
    expect(r.shape).toEqual([6, 4]);
    expect(r.data).toBe(t.data);
    const rt = t.transpose().reshape([-1]);
    expect(values(rt)).toEqual(values(t.transpose()));
    expect(() => t.reshape([5, -1])).toThrow(RangeError);
    expect(() => t.reshape([5, 5])).toThrow(/Expected shape with 24 elements/);
  });

  test('get checks indices', () => {
    const t = base();
    expect(() => t.get(0, 0)).toThrow(RangeError);
    expect(() => t.get(0, 3, 0)).toThrow('Expected integer in [0, 2] for index[1] but received 3 of type number');
  });

  test('whether a view has distinct elements agrees with listing their offsets', () => {
    // Random shapes (some axes of length 0 or 1) and strides (0, overlapping,
    // permuted): the rule written-to views are checked with, against brute force.
    let state = 12345;
    const rand = (n: number) => (state = (state * 1103515245 + 12345) % 2 ** 31) % n;
    let distinct = 0;
    for (let trial = 0; trial < 3000; ++trial) {
      const rank = 1 + rand(4);
      const shape = Array.from({ length: rank }, () => rand(4));
      const strides = Array.from({ length: rank }, () => rand(13));
      const size = shape.reduce((p, d) => p * d, 1);
      const t = new Tensor(new Float32Array(256), shape, { strides });
      const offsets = new Set<number>();
      for (let i = 0; i < size; ++i) {
        let rest = i;
        let off = 0;
        for (let d = rank - 1; d >= 0; --d) {
          off += (rest % shape[d]) * strides[d];
          rest = Math.floor(rest / shape[d]);
        }
        offsets.add(off);
      }
      const want = offsets.size === size;
      // The rule is sufficient, not necessary: interleaved strides (2 and 3 over
      // lengths 2 and 2, say) can be distinct and still refused.
      if (hasDistinctElements(t)) expect(want).toBe(true);
      if (want) distinct++;
      if (shape.filter((d) => d > 1).length <= 1) expect(hasDistinctElements(t)).toBe(want);
      // The rule itself: axes of length > 1 by stride, each stepping past what the smaller ones span.
      const axes = shape.map((_, d) => d).filter((d) => shape[d] > 1).sort((a, b) => strides[a] - strides[b]);
      let span = 1;
      let rule = true;
      for (const d of axes) {
        rule = rule && strides[d] >= span;
        span += strides[d] * (shape[d] - 1);
      }
      expect(hasDistinctElements(t)).toBe(shape.includes(0) || rule);
    }
    expect(distinct).toBeGreaterThan(300);
  });
});
