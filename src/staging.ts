// How an operation gets the memory its kernel call uses.
//
// The sync forms (NOW) use tensors as they are and make contiguous copies at
// once. The async forms (Staging) keep the event loop free: every copy whose
// cost grows with the data runs in the addon's thread pool, or, when it must
// read memory the addon does not own, here in chunks of 1 MiB with a turn of
// the event loop between them.
//
// Why memory the addon does not own is copied at all: JavaScript can detach,
// transfer or shrink an ArrayBuffer at any time, and nothing can pin it while
// a kernel runs on another thread. An async kernel therefore only touches
// memory the addon owns (the storage of the library's tensors, see
// allocateStorage in tensor.ts). Arrays the caller supplied are copied into
// owned stand-ins before the kernel starts, and results copied back into the
// caller's `out` after it finished, each chunk after checking that the array
// still holds the elements. (The addon copies small arrays itself, and would
// copy large ones too, in one go; this layer does the large ones in chunks.)
//
// A plan function takes a Prep and asks it for the tensors it hands to the
// kernel; for an async form it then runs `staging.run(kernelCall)`:
//
//   const staging = new Staging('matmulAsync');
//   const call = planSomething(x, options, staging);   // staging.input(x, 'x'), staging.output(out, 'out') ...
//   await staging.run(() => native.somethingAsync(...call.args));
import { native } from './native';
import { type DType, Tensor, copyElements, copyParams, extentOf, isOwnedStorage, newTensor, sharesMemory } from './tensor';

/**
 * @internal An async kernel call made inside the addon's chain(): the result
 * it will produce (known before it runs), the Promise that settles when it
 * has run, and the tensors it writes.
 */
export interface Queued<T> {
  value: T;
  done: Promise<void>;
  writes: Tensor[];
}

/** @internal Whether every tensor a queued call writes is in the addon's memory (which a chained call requires). */
export const writesOwned = (writes: readonly Tensor[]): boolean => writes.every((t) => t.size === 0 || isOwnedStorage(t.data));

/** Memory not owned by the addon, up to this many bytes, is copied by the addon as the call starts. */
const STAGE_BYTES = 1 << 20;
/**
 * Elements one chunk copies on the main thread: about a millisecond, strided
 * or into fresh pages (each page's first touch costs microseconds).
 */
const CHUNK_ELEMENTS = 1 << 18;
/** Contiguous copies of up to this many elements are made on the main thread, at once. */
const INLINE_COPY_ELEMENTS = 1 << 16;

export interface Prep {
  /** True for the async forms. */
  readonly async: boolean;
  /** A tensor with t's elements that the kernel may read (t itself, or a stand-in). */
  input(t: Tensor, name: string): Tensor;
  /** A contiguous tensor with t's elements (t itself when it already is one that owns its array). */
  contiguous(t: Tensor): Tensor;
  /** Where the kernel writes `out` (out itself, or a stand-in copied back after the kernel); read first when `reads`. */
  output(out: Tensor, name: string, reads?: boolean): Tensor;
  /** A new tensor for a result (contents unspecified). */
  empty(shape: readonly number[], dtype?: DType): Tensor;
  /**
   * A parameter block to pass to the kernel later: the writers in params.ts
   * reuse one array per block, so one made before an await must be copied.
   */
  block(params: Float64Array): Float64Array;
}

/** The sync forms: everything as it is, copies now; results and copies in 'result' memory (see tensor.ts). */
export const NOW: Prep = {
  async: false,
  input: (t) => t,
  contiguous: (t) => {
    if (t.isContiguous() && t.offset === 0 && t.data.length === t.size) return t;
    const copy = newTensor(t.shape, t.dtype, false, 'result');
    copyElements(t, copy);
    return copy;
  },
  output: (out) => out,
  empty: (shape, dtype = 'float32') => newTensor(shape, dtype, false, 'result'),
  block: (params) => params,
};

/** Lets the event loop run (timers, I/O) before continuing. */
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Elements from a view's first element to one past its last (0 when empty). */
const spanOf = (t: Tensor): number => extentOf(t.shape, t.strides);

const bytesOf = (t: Tensor, elements: number): number => elements * (t.dtype === 'float32' ? 4 : 1);

/** Whether the view is large and in memory the addon does not own. */
function needsStandIn(t: Tensor): boolean {
  return t.size > 0 && !isOwnedStorage(t.data) && bytesOf(t, spanOf(t)) > STAGE_BYTES;
}

/** Throws unless t's array still holds every element of t (it may have been detached or shrunk). */
function checkHeld(t: Tensor, what: string): void {
  if (t.data.length < t.offset + spanOf(t)) {
    throw new RangeError(`${what}: its ArrayBuffer was detached or shrunk while the call ran`);
  }
}

/**
 * dst = src (same shape; dst's elements distinct) on the main thread, a chunk
 * of at most CHUNK_ELEMENTS at a time with a turn of the event loop after each;
 * `check` runs before each chunk.
 */
async function copyInChunks(src: Tensor, dst: Tensor, check: () => void): Promise<void> {
  for (const [s, d] of chunksOf(src, dst)) {
    check();
    copyElements(s, d);
    await yieldToLoop();
  }
}

/** Matching views of src and dst (same shape) of at most CHUNK_ELEMENTS elements each, covering them. */
function* chunksOf(src: Tensor, dst: Tensor): Generator<[Tensor, Tensor]> {
  if (src.size === 0) return;
  if (src.size <= CHUNK_ELEMENTS || src.rank === 0) {
    yield [src, dst];
    return;
  }
  const inner = src.size / src.shape[0];
  if (inner > CHUNK_ELEMENTS) {
    for (let i = 0; i < src.shape[0]; ++i) yield* chunksOf(src.select(0, i), dst.select(0, i));
    return;
  }
  const rows = Math.max(1, Math.floor(CHUNK_ELEMENTS / inner));
  for (let i = 0; i < src.shape[0]; i += rows) {
    const n = Math.min(rows, src.shape[0] - i);
    yield [src.narrow(0, i, n), dst.narrow(0, i, n)];
  }
}

/** dst.data[0, extent) = src.data[src.offset, src.offset + extent), a chunk at a time. */
async function copySpanInChunks(src: Tensor, dst: Tensor, extent: number, check: () => void): Promise<void> {
  for (let i = 0; i < extent; i += CHUNK_ELEMENTS) {
    check();
    const n = Math.min(CHUNK_ELEMENTS, extent - i);
    dst.data.set(src.data.subarray(src.offset + i, src.offset + i + n), i);
    await yieldToLoop();
  }
}

/** dst = src (same shape) in the addon's thread pool; both must be in owned memory or small. */
const copyOffThread = (src: Tensor, dst: Tensor): Promise<void> => native.copyStridedAsync(src.data, dst.data, copyParams(src, dst));

/** The async forms: records the copies a plan needs, then runs them, the kernel and the copies back. */
export class Staging implements Prep {
  readonly async = true;
  private readonly before: (() => Promise<void>)[] = [];
  private readonly after: (() => Promise<void>)[] = [];
  /** Stand-ins and copies made so far, by the tensor they stand for (q, k and v are often one tensor). */
  private readonly made = new Map<Tensor, Tensor>();

  /** `fn` names the operation in errors. */
  constructor(private readonly fn: string) {}

  input(t: Tensor, name: string): Tensor {
    if (!needsStandIn(t)) return t;
    const known = this.made.get(t);
    if (known) return known;
    const standIn = this.standIn(t, name);
    this.made.set(t, standIn);
    return standIn;
  }

  private standIn(t: Tensor, name: string): Tensor {
    const extent = spanOf(t);
    const check = () => checkHeld(t, `${this.fn}: ${name}`);
    if (extent <= 2 * t.size + 1024) {
      // Dense enough: copy its span as it is, and view the copy with t's strides.
      const span = newTensor([extent], t.dtype, false, 'owned');
      this.before.push(() => copySpanInChunks(t, span, extent, check));
      return new Tensor(span.data, t.shape, { strides: t.strides, offset: 0 });
    }
    const copy = newTensor(t.shape, t.dtype, false, 'owned');
    this.before.push(() => copyInChunks(t, copy, check));
    return copy;
  }

  contiguous(t: Tensor): Tensor {
    if (t.isContiguous() && t.offset === 0 && t.data.length === t.size) return t;
    const known = this.made.get(t);
    if (known && known.isContiguous() && known.offset === 0) return known;
    const copy = newTensor(t.shape, t.dtype, false, 'owned');
    this.made.set(t, copy);
    this.before.push(async () => {
      if (t.size <= INLINE_COPY_ELEMENTS) {
        copyElements(t, copy);
      } else if (needsStandIn(t)) {
        await copyInChunks(t, copy, () => checkHeld(t, this.fn));
      } else {
        await copyOffThread(t, copy);
      }
    });
    return copy;
  }

  output(out: Tensor, name: string, reads = false): Tensor {
    if (!needsStandIn(out)) return out;
    const standIn = newTensor(out.shape, out.dtype, false, 'owned');
    const check = () => checkHeld(out, `${this.fn}: ${name}`);
    if (reads) this.before.push(() => copyInChunks(out, standIn, check));
    this.after.push(() => copyInChunks(standIn, out, check));
    return standIn;
  }

  empty(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    return newTensor(shape, dtype, false, 'owned');
  }

  block(params: Float64Array): Float64Array {
    return params.slice();
  }

  /** Whether the kernel call needs no copy made here (run() then calls it at once). */
  get direct(): boolean {
    return this.before.length === 0 && this.after.length === 0;
  }

  /** Makes the recorded copies, runs the kernel call, copies the results back. */
  run<T>(kernel: () => Promise<T>): Promise<T> {
    if (this.before.length === 0 && this.after.length === 0) return kernel(); // the usual case: nothing to copy here
    return this.runSteps(kernel);
  }

  private async runSteps<T>(kernel: () => Promise<T>): Promise<T> {
    for (const step of this.before) await step();
    const result = await kernel();
    for (const step of this.after) await step();
    return result;
  }
}

/**
 * dst = src (same shape; dst's elements distinct) without blocking the event
 * loop: in the addon's thread pool, with stand-ins for large memory the addon
 * does not own.
 */
export async function copyAsync(src: Tensor, dst: Tensor, fn: string): Promise<void> {
  if (src.size === 0) return;
  if (sharesMemory(src, dst)) {
    const tmp = newTensor(src.shape, src.dtype, false, 'owned');
    await copyAsync(src, tmp, fn);
    await copyAsync(tmp, dst, fn);
    return;
  }
  const staging = new Staging(fn);
  const s = staging.input(src, 'src');
  const d = staging.output(dst, 'dst');
  await staging.run(async () => {
    if (src.size <= INLINE_COPY_ELEMENTS) copyElements(s, d);
    else await copyOffThread(s, d);
  });
}
