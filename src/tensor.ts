// Tensor: typed-array data, a shape, and strides (in elements) from an offset.
// Views (transpose, permute, narrow, select, expand, reshape of contiguous
// data) share the data; element loops live in the native addon.
import { native } from './native';
import { MAX_RANK as RANK_LIMIT, copyStridedParams, fillParams } from './params';
import { checkFinite, checkInteger, checkOptions, checkedProduct, describe, expected, sameShape, shapeString } from './validate';

export type DType = 'float32' | 'uint8';
export type TensorData = Float32Array | Uint8Array;

/** The most dimensions a tensor may have (the native kernels' limit). */
export const MAX_RANK = RANK_LIMIT;

export interface TensorOptions {
  /** Elements between neighbours along each axis; default row-major contiguous. */
  strides?: readonly number[];
  /** Index in `data` of element [0, 0, ...]; default 0. */
  offset?: number;
}

export interface RandomOptions {
  /** Any non-negative integer; the same seed gives the same values on every run and thread count. */
  seed?: number;
}

/** What Tensor#toArray returns and Tensor.from takes: a number, or Arrays of them nested once per axis. */
export type NestedArray = number | NestedArray[];

function checkShape(name: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) throw new TypeError(expected('Array of non-negative integers', name, shape));
  if (shape.length > MAX_RANK) {
    throw new RangeError(expected(`at most ${MAX_RANK} dimensions`, name, shape) + ` [${shape.join(', ')}]`);
  }
  for (let i = 0; i < shape.length; ++i) {
    const d = shape[i];
    if (!(Number.isSafeInteger(d) && d >= 0)) checkInteger(`${name}[${i}]`, d, 0); // throws with the index named
  }
  checkedProduct(name, shape);
  return [...shape];
}

function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; --d) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

/** Elements from the first to one past the last (0 when empty). */
export function extentOf(shape: readonly number[], strides: readonly number[]): number {
  let e = 1;
  for (let d = 0; d < shape.length; ++d) {
    if (shape[d] === 0) return 0;
    e += (shape[d] - 1) * strides[d];
  }
  return e;
}

// ------------------------------------------------------------ storage
//
// Memory the addon owns (an external ArrayBuffer over a reference-counted
// native block) is what async kernels work in: a job holds the block for as
// long as it runs, whatever JavaScript does to the ArrayBuffer meanwhile, and
// freed blocks are recycled instead of faulting in fresh pages. But Node frees
// external memory only when the event loop turns (it runs their finalizers
// from the loop), so a synchronous loop that made a fresh owned result on
// every call would pile up memory until it returned. Hence four kinds:
//  - 'owned': always the addon's (the results and copies of async forms,
//    which let the loop turn);
//  - 'auto': the addon's, unless OWNED_BYTES_PER_TURN have been handed out
//    since the loop last turned (tensors made by Tensor.zeros, randn, clone
//    and the like: usually long-lived, often used by async forms);
//  - 'result': the addon's while RESULT_BYTES_PER_TURN of it have been handed
//    out since the loop last turned (the results and copies of sync forms).
//    Between turns, as in a service, each call's result comes from blocks
//    freed earlier (a plain array of 128 KiB or more faults in most of its
//    pages on every call: the system allocator returns large freed blocks to
//    the system). A synchronous loop soon gets plain memory instead, which
//    V8 frees as it collects, where the addon's blocks would wait for a turn;
//  - 'plain': an ordinary typed array, freed by V8's garbage collector alone.
// Below OWNED_MIN_BYTES every tensor but an 'owned' one is plain (cheaper to
// make; async calls copy such small arrays as they start). 'Owned' ones are
// the addon's whatever their size: an async module forward chains its
// kernels through them (runAsync in multihead.ts).
export type Memory = 'owned' | 'auto' | 'result' | 'plain';

const OWNED_MIN_BYTES = 64 * 1024;
const OWNED_BYTES_PER_TURN = 256 * 1024 * 1024;
const RESULT_BYTES_PER_TURN = 32 * 1024 * 1024;
/** How much of the addon's memory a kind may take since the loop last turned (0: none). */
const BUDGET_PER_TURN: Record<Memory, number> = { owned: Infinity, auto: OWNED_BYTES_PER_TURN, result: RESULT_BYTES_PER_TURN, plain: 0 };

/** The memory of a new result of function `fn`: the addon's for the async forms, 'result' for the sync ones. */
export const resultMemory = (fn: string): Memory => (fn.endsWith('Async') ? 'owned' : 'result');
let ownedThisTurn = 0;
const ownedBuffers = new WeakSet<ArrayBufferLike>();
const resetTurn = (): void => {
  ownedThisTurn = 0;
};

/** Whether a tensor's storage is the addon's memory (safe for async kernels as it is). */
export function isOwnedStorage(data: TensorData): boolean {
  return ownedBuffers.has(data.buffer);
}

/** Storage for n elements of `memory`'s kind (see above), zeroed when `zero`. */
export function allocateStorage(dtype: DType, n: number, zero: boolean, shape: readonly number[], memory: Memory): TensorData {
  const ctor = dtype === 'float32' ? Float32Array : Uint8Array;
  const bytes = n * ctor.BYTES_PER_ELEMENT;
  try {
    const budget = BUDGET_PER_TURN[memory];
    const large = bytes >= OWNED_MIN_BYTES || (memory === 'owned' && bytes > 0);
    if (large && budget > 0 && (ownedThisTurn === 0 || ownedThisTurn + bytes <= budget)) {
      if (ownedThisTurn === 0) setImmediate(resetTurn).unref();
      ownedThisTurn += bytes;
      const ab = native.allocate(bytes, zero);
      if (ab !== undefined) {
        ownedBuffers.add(ab);
        return new ctor(ab);
      }
    }
    if (zero || n === 0) return new ctor(n);
    // Not zeroed: reuses freed memory instead of faulting in fresh pages.
    const buf = Buffer.allocUnsafeSlow(bytes);
    return new ctor(buf.buffer, buf.byteOffset, n);
  } catch (err) {
    throw new RangeError(`Cannot allocate a tensor of shape ${shapeString(shape)} (${n} elements): ${(err as Error).message}`);
  }
}

/**
 * A copy of a shape or strides array, or of part of it as Array#slice takes
 * it. Tensors' shapes and strides are frozen, and V8's slice takes a slow
 * path on frozen arrays (about 20x a plain array's); spreading does not.
 */
export function dims(a: readonly number[], start?: number, end?: number): number[] {
  const copy = [...a];
  return start === undefined ? copy : copy.slice(start, end);
}

function normAxis(name: string, axis: unknown, rank: number): number {
  checkInteger(name, axis, -rank, rank - 1);
  return (axis as number) < 0 ? (axis as number) + rank : (axis as number);
}

// Set by Tensor#view just before it calls the constructor, which then takes
// these as they are (already checked) instead of validating its arguments:
// every tensor, view or not, is made by the constructor and has the same
// hidden class, which keeps the property reads on hot paths monomorphic.
let viewOf: { strides: number[]; offset: number } | null = null;

export class Tensor {
  readonly data: TensorData;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  readonly dtype: DType;

  /**
   * @param data Float32Array, Uint8Array, or an Array of numbers (copied into a Float32Array).
   * @param shape dimensions; without strides the data must hold exactly their product.
   */
  constructor(data: TensorData | readonly number[], shape: readonly number[], options?: TensorOptions) {
    if (viewOf !== null) {
      const v = viewOf;
      viewOf = null;
      this.data = data as TensorData;
      this.shape = Object.freeze(shape as number[]);
      this.strides = Object.freeze(v.strides);
      this.offset = v.offset;
      this.dtype = data instanceof Float32Array ? 'float32' : 'uint8';
      return;
    }
    let arr: TensorData;
    if (data instanceof Float32Array || data instanceof Uint8Array) {
      arr = data;
    } else if (Array.isArray(data)) {
      arr = Float32Array.from(data as number[]);
    } else {
      throw new TypeError(expected('Float32Array, Uint8Array or Array of numbers', 'data', data));
    }
    const dims = checkShape('shape', shape);
    const opts = checkOptions<TensorOptions>('Tensor', options, ['strides', 'offset']);
    const size = checkedProduct('shape', dims);
    let strides: number[];
    if (opts.strides !== undefined) {
      if (!Array.isArray(opts.strides) || opts.strides.length !== dims.length) {
        throw new RangeError(expected(`Array of ${dims.length} strides`, 'strides', opts.strides));
      }
      opts.strides.forEach((s, i) => {
        if (!(Number.isSafeInteger(s) && s >= 0)) checkInteger(`strides[${i}]`, s, 0);
      });
      strides = [...opts.strides];
    } else {
      strides = contiguousStrides(dims);
    }
    const offset = opts.offset === undefined ? 0 : checkInteger('offset', opts.offset, 0);
    if (opts.strides === undefined && opts.offset === undefined) {
      if (arr.length !== size) {
        throw new RangeError(
          `Expected data of length ${size} for shape ${shapeString(dims)} but received ${describe(data)}`,
        );
      }
    } else {
      const need = offset + extentOf(dims, strides);
      if (size > 0 && arr.length < need) {
        throw new RangeError(
          `Expected data of length at least ${need} for shape ${shapeString(dims)} with strides ${shapeString(
            strides,
          )} and offset ${offset} but received ${describe(data)}`,
        );
      }
    }
    this.data = arr;
    this.shape = Object.freeze(dims);
    this.strides = Object.freeze(strides);
    this.offset = offset;
    this.dtype = arr instanceof Float32Array ? 'float32' : 'uint8';
  }

  // ------------------------------------------------------------ constructors

  static zeros(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    if (dtype !== 'float32' && dtype !== 'uint8') throw new TypeError(expected("'float32' or 'uint8'", 'dtype', dtype));
    return newTensor(shape, dtype, true);
  }

  /**
   * A float32 tensor whose contents are unspecified (not zeroed): for outputs
   * that will be overwritten, e.g. `out` of matmul. Skips the zero fill and
   * reuses freed memory instead of faulting in fresh pages.
   */
  static empty(shape: readonly number[]): Tensor {
    return newTensor(shape, 'float32', false);
  }

  /** A tensor of `value` everywhere (any number, e.g. -Infinity for a mask). */
  static full(shape: readonly number[], value: number, dtype: DType = 'float32'): Tensor {
    if (typeof value !== 'number') throw new TypeError(expected('number', 'value', value));
    if (dtype !== 'float32' && dtype !== 'uint8') throw new TypeError(expected("'float32' or 'uint8'", 'dtype', dtype));
    const t = newTensor(shape, dtype, false);
    t.data.fill(value);
    return t;
  }

  /** Normal samples, deterministic for a seed (counter-based: independent of thread count). */
  static randn(shape: readonly number[], options?: RandomOptions & { mean?: number; std?: number }): Tensor {
    return randomTensor('Tensor.randn', shape, options, 0, ['mean', 0], ['std', 1], (_, std) => {
      if (std < 0) throw new RangeError(expected('non-negative number', 'std', std));
    });
  }

  /** Uniform samples in [low, high), deterministic for a seed. */
  static uniform(shape: readonly number[], options?: RandomOptions & { low?: number; high?: number }): Tensor {
    return randomTensor('Tensor.uniform', shape, options, 1, ['low', 0], ['high', 1], (low, high) => {
      if (!(high >= low)) throw new RangeError(expected(`number >= low (${low})`, 'high', high));
    });
  }

  /** A tensor of `dtype` (default float32) from nested Arrays of numbers; the shape is read from the nesting. */
  static from(values: NestedArray[] | number, dtype: DType = 'float32'): Tensor {
    const shape: number[] = [];
    let probe: NestedArray = values;
    while (Array.isArray(probe)) {
      shape.push(probe.length);
      probe = probe.length > 0 ? probe[0] : 0;
    }
    const flat: number[] = [];
    const walk = (v: NestedArray, depth: number, where: string): void => {
      if (depth === shape.length) {
        if (typeof v !== 'number') throw new TypeError(expected('number', `values${where}`, v));
        flat.push(v);
        return;
      }
      if (!Array.isArray(v) || v.length !== shape[depth]) {
        throw new RangeError(expected(`Array of length ${shape[depth]}`, `values${where}`, v));
      }
      v.forEach((x, i) => walk(x, depth + 1, `${where}[${i}]`));
    };
    walk(values, 0, '');
    if (dtype !== 'float32' && dtype !== 'uint8') throw new TypeError(expected("'float32' or 'uint8'", 'dtype', dtype));
    const t = newTensor(shape, dtype, false);
    t.data.set(flat);
    return t;
  }

  // ------------------------------------------------------------ properties

  get size(): number {
    let n = 1;
    for (const d of this.shape) n *= d;
    return n;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** True when the elements are exactly data[offset .. offset + size) in row-major order. */
  isContiguous(): boolean {
    let s = 1;
    for (let d = this.shape.length - 1; d >= 0; --d) {
      if (this.shape[d] !== 1 && this.strides[d] !== s) return false;
      s *= this.shape[d];
    }
    return true;
  }

  // ------------------------------------------------------------ copies

  /** This tensor when it is contiguous and owns its whole array, else a contiguous copy. */
  contiguous(): Tensor {
    if (this.isContiguous() && this.offset === 0 && this.data.length === this.size) return this;
    return this.clone();
  }

  /** A contiguous copy. */
  clone(): Tensor {
    const out = newTensor(this.shape, this.dtype, false);
    copyElements(this, out, true);
    return out;
  }

  /**
   * Copies `src` into this tensor (which may be a view, but not one whose
   * elements share memory, such as an expanded one), broadcasting `src` to
   * this shape. Returns this tensor.
   */
  assign(src: Tensor): this {
    checkTensor('src', src, this.dtype);
    checkWritable('assign', 'this tensor', this);
    copyElements(sameShape(src.shape, this.shape) ? src : src.expand(this.shape), this);
    return this;
  }

  // ------------------------------------------------------------ views

  /** Same data, new shape (one entry may be -1). A view when contiguous, else a copy. */
  reshape(shape: readonly number[]): Tensor {
    if (!Array.isArray(shape)) throw new TypeError(expected('Array of integers', 'shape', shape));
    const dims = [...shape];
    const free = dims.indexOf(-1);
    if (free >= 0) {
      const rest = dims.reduce((p, d, i) => (i === free ? p : p * d), 1);
      if (rest === 0 || this.size % rest !== 0) {
        throw new RangeError(`Cannot reshape ${shapeString(this.shape)} to ${shapeString(shape)}`);
      }
      dims[free] = this.size / rest;
    }
    checkShape('shape', dims);
    if (checkedProduct('shape', dims) !== this.size) {
      throw new RangeError(
        `Expected shape with ${this.size} elements for reshape of ${shapeString(this.shape)} but received ${shapeString(shape)}`,
      );
    }
    const src = this.isContiguous() ? this : this.clone();
    return src.view(dims, contiguousStrides(dims), src.offset);
  }

  /** Reorders the axes: result axis i is this tensor's axis dims[i]. A view. */
  permute(dims: readonly number[]): Tensor {
    if (!Array.isArray(dims) || dims.length !== this.rank) {
      throw new RangeError(expected(`permutation of ${this.rank} axes`, 'dims', dims));
    }
    const axes = dims.map((a, i) => (Number.isInteger(a) && a >= 0 && a < this.rank ? a : normAxis(`dims[${i}]`, a, this.rank)));
    if (new Set(axes).size !== axes.length) {
      throw new RangeError(expected(`permutation of ${this.rank} axes`, 'dims', dims) + ` [${dims.join(', ')}]`);
    }
    return this.view(
      axes.map((a) => this.shape[a]),
      axes.map((a) => this.strides[a]),
      this.offset,
    );
  }

  /** Swaps two axes (default: the last two). A view. */
  transpose(dim0 = -2, dim1 = -1): Tensor {
    const a = normAxis('dim0', dim0, this.rank);
    const b = normAxis('dim1', dim1, this.rank);
    const axes = Array.from({ length: this.rank }, (_, i) => i);
    axes[a] = b;
    axes[b] = a;
    return this.permute(axes);
  }

  /** Elements [start, start + length) along `dim`. A view. */
  narrow(dim: number, start: number, length: number): Tensor {
    const d = normAxis('dim', dim, this.rank);
    checkInteger('start', start, 0, this.shape[d]);
    checkInteger('length', length, 0, this.shape[d] - start);
    const shape = [...this.shape];
    shape[d] = length;
    return this.view(shape, [...this.strides], this.offset + (length > 0 ? start * this.strides[d] : 0));
  }

  /** Index `index` along `dim`, removing that axis. A view. */
  select(dim: number, index: number): Tensor {
    const d = normAxis('dim', dim, this.rank);
    checkInteger('index', index, 0, this.shape[d] - 1);
    const shape = dims(this.shape);
    const strides = dims(this.strides);
    shape.splice(d, 1);
    strides.splice(d, 1);
    return this.view(shape, strides, this.offset + index * this.strides[d]);
  }

  /** Splits axis `dim` into `sizes` (their product must be its length). Always a view. */
  unflatten(dim: number, sizes: readonly number[]): Tensor {
    const d = normAxis('dim', dim, this.rank);
    if (!Array.isArray(sizes) || sizes.length === 0) throw new TypeError(expected('non-empty Array of sizes', 'sizes', sizes));
    sizes.forEach((n, i) => {
      if (!(Number.isSafeInteger(n) && n >= 0)) checkInteger(`sizes[${i}]`, n, 0);
    });
    const n = sizes.reduce((p, x) => p * x, 1);
    if (n !== this.shape[d]) {
      throw new RangeError(
        `Expected sizes with product ${this.shape[d]} (axis ${d} of ${shapeString(this.shape)}) but received ${shapeString(sizes)}`,
      );
    }
    const inner = contiguousStrides(sizes).map((s) => s * this.strides[d]);
    return this.view(
      [...dims(this.shape, 0, d), ...sizes, ...dims(this.shape, d + 1)],
      [...dims(this.strides, 0, d), ...inner, ...dims(this.strides, d + 1)],
      this.offset,
    );
  }

  /** Merges axes start..end (inclusive) into one: a view when their strides allow, else a copy. */
  flatten(start = 0, end = -1): Tensor {
    const a = normAxis('start', start, this.rank);
    const b = normAxis('end', end, this.rank);
    if (b < a) throw new RangeError(`Expected end >= start for flatten but received start ${start}, end ${end}`);
    let mergeable = true;
    for (let d = a; d < b; ++d) {
      if (this.shape[d + 1] !== 1 && this.shape[d] !== 1 && this.strides[d] !== this.strides[d + 1] * this.shape[d + 1]) {
        mergeable = false;
      }
    }
    const size = dims(this.shape, a, b + 1).reduce((p, x) => p * x, 1);
    const shape = [...dims(this.shape, 0, a), size, ...dims(this.shape, b + 1)];
    if (!mergeable) return this.clone().reshape(shape);
    let stride = 1;
    for (let d = b; d >= a; --d) {
      if (this.shape[d] !== 1) {
        stride = this.strides[d];
        break;
      }
    }
    return this.view(shape, [...dims(this.strides, 0, a), stride, ...dims(this.strides, b + 1)], this.offset);
  }

  /** Inserts an axis of length 1 at `dim`. A view. */
  unsqueeze(dim: number): Tensor {
    const d = normAxis('dim', dim, this.rank + 1);
    const shape = [...this.shape];
    const strides = [...this.strides];
    shape.splice(d, 0, 1);
    strides.splice(d, 0, d < this.rank ? this.strides[d] * this.shape[d] : 1);
    return this.view(shape, strides, this.offset);
  }

  /** Broadcasts axes of length 1 (and new leading axes) to `shape`, with stride 0. A view. */
  expand(shape: readonly number[]): Tensor {
    const dims = checkShape('shape', shape);
    if (dims.length < this.rank) {
      throw new RangeError(`Cannot expand ${shapeString(this.shape)} to fewer dimensions ${shapeString(dims)}`);
    }
    const lead = dims.length - this.rank;
    const strides = dims.map((n, i) => {
      if (i < lead) return 0;
      const own = this.shape[i - lead];
      if (own === n) return this.strides[i - lead];
      if (own === 1) return 0;
      throw new RangeError(`Cannot expand ${shapeString(this.shape)} to ${shapeString(dims)}: axis ${i} is ${own}`);
    });
    return this.view(dims, strides, this.offset);
  }

  /** A view that needs no checking: derived from this tensor's own valid layout. */
  private view(shape: number[], strides: number[], offset: number): Tensor {
    viewOf = { strides, offset };
    return new Tensor(this.data, shape);
  }

  // ------------------------------------------------------------ reading

  /** One element. */
  get(...index: number[]): number {
    if (index.length !== this.rank) {
      throw new RangeError(expected(`${this.rank} indices`, 'index', index) + ` [${index.join(', ')}]`);
    }
    let off = this.offset;
    index.forEach((v, d) => {
      checkInteger(`index[${d}]`, v, 0, this.shape[d] - 1);
      off += v * this.strides[d];
    });
    return this.data[off];
  }

  /** Nested Arrays of numbers (a number for rank 0). */
  toArray(): NestedArray {
    const t = this.contiguous();
    const build = (d: number, off: number): NestedArray => {
      if (d === t.rank) return t.data[off];
      const out: NestedArray[] = [];
      for (let i = 0; i < t.shape[d]; ++i) out.push(build(d + 1, off + i * t.strides[d]));
      return out;
    };
    return build(0, t.offset);
  }

  toString(): string {
    return `Tensor(${this.dtype}, ${shapeString(this.shape)})`;
  }
}

/**
 * True when no two elements of a view share a memory location: with the axes
 * of length > 1 sorted by stride, each stride steps past everything the
 * smaller axes span (the addon applies the same rule).
 */
export function hasDistinctElements(t: Tensor): boolean {
  // Index loops: shapes are frozen, and V8's map, filter, every and some take
  // a slow path on frozen arrays (0.1-0.6 us each for a few elements).
  const { shape, strides } = t;
  const axes: number[] = [];
  for (let d = 0; d < shape.length; ++d) {
    if (shape[d] === 0) return true;
    if (shape[d] > 1) {
      // Insertion by stride (a handful of axes).
      let i = axes.length;
      axes.push(d);
      while (i > 0 && strides[axes[i - 1]] > strides[d]) {
        axes[i] = axes[i - 1];
        --i;
      }
      axes[i] = d;
    }
  }
  let span = 1;
  for (const d of axes) {
    if (strides[d] < span) return false;
    span += strides[d] * (shape[d] - 1);
  }
  return true;
}

/** PyTorch's words for a written-to view whose elements alias, after the function and argument. */
export function checkWritable(fn: string, name: string, t: Tensor): void {
  if (!hasDistinctElements(t)) {
    throw new RangeError(
      `${fn}: ${name} (shape ${shapeString(t.shape)}, strides ${shapeString(t.strides)}): unsupported operation: more than one ` +
        'element of the written-to tensor refers to a single memory location. Please clone() the tensor before performing the operation.',
    );
  }
}

/** Whether two tensors' element ranges share bytes of one buffer. */
export function sharesMemory(a: Tensor, b: Tensor): boolean {
  return a.data.buffer === b.data.buffer && a.size > 0 && b.size > 0 && rangesOverlap(a, b);
}

/**
 * @internal The arrays that kernels queued in an open chain (runAsync in
 * multihead.ts) will write, while one is open: a copy made here from one of
 * them (or into one) would run before those kernels. copyElements throws
 * ChainHazard instead, and the chain's runner runs that step after the chain.
 */
export const chainWrites: { arrays: Set<TensorData> | null } = { arrays: null };

/** @internal See chainWrites. */
export class ChainHazard extends Error {
  constructor() {
    super('a copy from memory that a queued kernel writes');
  }
}

/**
 * dst = src element by element (same shape and dtype); dst's elements must be
 * distinct. `fresh`: dst is a new result nobody has read yet (a large one is
 * then written past the caches).
 */
export function copyElements(src: Tensor, dst: Tensor, fresh = false): void {
  if (src.size === 0) return;
  if (chainWrites.arrays && (chainWrites.arrays.has(src.data) || chainWrites.arrays.has(dst.data))) throw new ChainHazard();
  if (src.data.buffer === dst.data.buffer && rangesOverlap(src, dst)) {
    // Overlapping views of one buffer: go through a private copy.
    const tmp = newTensor(src.shape, src.dtype, false, 'plain');
    copyElements(src, tmp);
    copyElements(tmp, dst);
    return;
  }
  native.copyStrided(src.data, dst.data, copyParams(src, dst, fresh));
}

/** The copyStrided parameter block for dst = src (same shape); `fresh` as for copyElements. */
export function copyParams(src: Tensor, dst: Tensor, fresh = false): Float64Array {
  return copyStridedParams({
    rank: src.rank,
    srcOffset: src.offset,
    dstOffset: dst.offset,
    streamOut: fresh ? 1 : 0,
    shape: src.shape,
    srcStrides: src.strides,
    dstStrides: dst.strides,
  });
}

/**
 * A float32 tensor of deterministic random samples: distribution 0 normal
 * (a mean, b standard deviation), 1 uniform in [a, b). The options are the
 * seed and the two parameters, named and defaulted by `a` and `b`; `check`
 * refuses bad pairs.
 */
function randomTensor(
  fn: string,
  shape: readonly number[],
  options: unknown,
  distribution: 0 | 1,
  [aName, aDefault]: [string, number],
  [bName, bDefault]: [string, number],
  check: (a: number, b: number) => void,
): Tensor {
  const opts = checkOptions<Record<string, unknown>>(fn, options, ['seed', aName, bName]);
  const seed = opts.seed === undefined ? 0 : checkInteger('seed', opts.seed, 0);
  const a = opts[aName] === undefined ? aDefault : checkFinite(aName, opts[aName]);
  const b = opts[bName] === undefined ? bDefault : checkFinite(bName, opts[bName]);
  check(a, b);
  const t = newTensor(shape, 'float32', false);
  const params = fillParams({ distribution, seed, meanOrLow: a, stdOrHigh: b, dstOffset: t.offset, count: t.size });
  native.fill(t.data as Float32Array, params);
  return t;
}

function rangesOverlap(a: Tensor, b: Tensor): boolean {
  const bytes = a.dtype === 'float32' ? 4 : 1;
  const a0 = a.data.byteOffset + a.offset * bytes;
  const b0 = b.data.byteOffset + b.offset * bytes;
  const a1 = a0 + extentOf(a.shape, a.strides) * bytes;
  const b1 = b0 + extentOf(b.shape, b.strides) * bytes;
  return a0 < b1 && b0 < a1;
}

/** A new contiguous tensor of `shape` (checked) in `memory` of that kind, zeroed when `zero`. */
export function newTensor(shape: readonly number[], dtype: DType, zero: boolean, memory: Memory = 'auto'): Tensor {
  const dims = checkShape('shape', shape);
  const n = checkedProduct('shape', dims);
  return new Tensor(allocateStorage(dtype, n, zero, dims, memory), dims);
}

/** A new float32 result of shape `shape` for function `fn`, in resultMemory(fn). */
export function newResult(shape: readonly number[], fn: string): Tensor {
  return newTensor(shape, 'float32', false, resultMemory(fn));
}

/** Throws unless `value` is a Tensor of `dtype` (any dtype when omitted). */
export function checkTensor(name: string, value: unknown, dtype?: DType): Tensor {
  if (!(value instanceof Tensor)) {
    throw new TypeError(expected(dtype ? `${dtype} Tensor` : 'Tensor', name, value));
  }
  if (dtype && value.dtype !== dtype) throw new TypeError(expected(`${dtype} Tensor`, name, value));
  return value;
}
