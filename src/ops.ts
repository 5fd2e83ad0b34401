// matmul and softmax on Tensors, and the runtime controls.
import { Tensor, checkTensor, checkWritable, sharesMemory, dims } from './tensor';
import { native, addonPath, type NativeCpuInfo } from './native';
import { gemmParams, gemmWithPackedParams, packMatrixParams, softmaxParams } from './params';
import { NOW, Staging, writesOwned, type Prep, type Queued } from './staging';
import { broadcastsTo, checkBoolean, checkFinite, checkInteger, checkOptions, expected, sameShape, shapeString } from './validate';

export interface MatmulOptions {
  /** Use the transpose of a's last two axes. */
  transposeA?: boolean;
  /** Use the transpose of b's last two axes. */
  transposeB?: boolean;
  /** Scales the product (default 1). */
  alpha?: number;
  /** Scales the existing contents of `out` before adding (default 0; needs `out`). */
  beta?: number;
  /** Where to write the result; a float32 Tensor of the result's shape (may be a strided view). */
  out?: Tensor;
  /** [N]: added to every row of the result (a linear layer's bias), in the same pass. */
  bias?: Tensor;
}

export interface SoftmaxOptions {
  /** Multiplies the logits before the softmax (default 1). */
  scale?: number;
  /** float32 (added to the scaled logits) or uint8 (nonzero = masked); broadcast to x's shape. */
  mask?: Tensor;
  /** Masks keys after each query: row i of the last two axes keeps columns j <= i + cols - rows. */
  causal?: boolean;
  /** Where to write the result (x itself for in place). */
  out?: Tensor;
}

const MATMUL_OPTIONS = ['transposeA', 'transposeB', 'alpha', 'beta', 'out', 'bias'] as const;
const SOFTMAX_OPTIONS = ['scale', 'mask', 'causal', 'out'] as const;

// ------------------------------------------------------------ GEMM operands

interface Operand {
  data: Float32Array;
  offset: number;
  /** Leading dimension of the stored matrix. */
  ld: number;
  /** Stored as the transpose of the tensor's last two axes. */
  stored: boolean;
  batchStride: number;
}

/** One stride for all leading axes, or null when they do not flatten. */
function batchStride(t: Tensor): number | null {
  let stride: number | null = null;
  let expect = -1;
  for (let d = t.rank - 3; d >= 0; --d) {
    if (t.shape[d] === 1) continue;
    if (stride === null) {
      stride = t.strides[d];
    } else if (t.strides[d] !== expect) {
      return null;
    }
    expect = t.strides[d] * t.shape[d];
  }
  return stride ?? 0;
}

/** Describes t's last two axes [r, c] for the GEMM, copying (through prep) only when no stride layout fits. */
function operand(t: Tensor, prep: Prep = NOW): Operand {
  const r = t.shape[t.rank - 2];
  const c = t.shape[t.rank - 1];
  const sr = t.strides[t.rank - 2];
  const sc = t.strides[t.rank - 1];
  if (t.size === 0) {
    return { data: t.data as Float32Array, offset: 0, ld: Math.max(c, 1), stored: false, batchStride: 0 };
  }
  const bs = batchStride(t);
  if (bs !== null) {
    if ((c <= 1 || sc === 1) && (r <= 1 || sr >= Math.max(c, 1))) {
      return { data: t.data as Float32Array, offset: t.offset, ld: r <= 1 ? Math.max(c, 1) : sr, stored: false, batchStride: bs };
    }
    if ((r <= 1 || sr === 1) && (c <= 1 || sc >= Math.max(r, 1))) {
      return { data: t.data as Float32Array, offset: t.offset, ld: c <= 1 ? Math.max(r, 1) : sc, stored: true, batchStride: bs };
    }
  }
  const copy = prep.contiguous(t);
  return { data: copy.data as Float32Array, offset: 0, ld: Math.max(c, 1), stored: false, batchStride: r * c };
}

// ------------------------------------------------------------ packed matrices

/**
 * A matrix packed once into the GEMM kernel's panel layout, for a right-hand
 * operand used many times (a layer's weight). Pass it to matmul as `b`.
 * It is a snapshot: changing the source tensor afterwards does not change it.
 */
export class PackedMatrix {
  /** [K, N]: the shape it has as matmul's b. */
  readonly shape: readonly [number, number];
  /** @internal The addon's handle to the packed panels. */
  readonly handle: object;

  private constructor(handle: object, k: number, n: number) {
    this.handle = handle;
    this.shape = Object.freeze([k, n]) as readonly [number, number];
  }

  /** @internal Wraps a handle from the addon's packMatrix (use the packMatrix function). */
  static fromHandle(handle: object, k: number, n: number): PackedMatrix {
    return new PackedMatrix(handle, k, n);
  }

  toString(): string {
    return `PackedMatrix([${this.shape.join(', ')}])`;
  }
}

/**
 * Packs b [K, N] (or, with transpose, b [N, K] used as bᵀ — PyTorch's Linear
 * weight layout) for repeated use as matmul's right operand.
 */
export function packMatrix(b: Tensor, options?: { transpose?: boolean }): PackedMatrix {
  const call = preparePack(b, options, 'packMatrix', NOW);
  return PackedMatrix.fromHandle(native.packMatrix(call.data, call.params), call.k, call.n);
}

/** @internal packMatrix off the main thread (MultiHeadAttention packs its weights with it in forwardAsync). */
export async function packMatrixAsync(b: Tensor, options?: { transpose?: boolean }): Promise<PackedMatrix> {
  const staging = new Staging('packMatrixAsync');
  const call = preparePack(b, options, 'packMatrixAsync', staging);
  const handle = await staging.run(() => native.packMatrixAsync(call.data, call.params));
  return PackedMatrix.fromHandle(handle, call.k, call.n);
}

function preparePack(b: unknown, options: unknown, fn: string, prep: Prep): { data: Float32Array; params: Float64Array; k: number; n: number } {
  const B = checkTensor('b', b, 'float32');
  const opts = checkOptions<{ transpose?: boolean }>(fn, options, ['transpose']);
  const transpose = opts.transpose === undefined ? false : checkBoolean('transpose', opts.transpose);
  if (B.rank !== 2) throw new RangeError(expected('2-D Tensor', 'b', B));
  const p = operand(prep.input(B, 'b'), prep);
  const stored = transpose !== p.stored;
  const [r, c] = B.shape;
  const k = transpose ? c : r;
  const n = transpose ? r : c;
  return { data: p.data, params: prep.block(packMatrixParams({ k, n, ldb: p.ld, transB: stored ? 1 : 0, bOffset: p.offset })), k, n };
}

interface GemmCall {
  a: Float32Array;
  b: Float32Array | object;
  packed: boolean;
  /** What the caller gets back. */
  out: Tensor;
  /** What the kernel writes: out, or its stand-in (async). */
  target: Float32Array;
  bias: Float32Array | null;
  params: Float64Array;
}

/** The result tensor (given or new) and its GEMM layout; the bias checked against n and apart from out. */
function outputAndBias(
  opts: Partial<MatmulOptions>,
  outShape: number[],
  n: number,
  beta: number,
  fn: string,
  inputs: [string, Tensor][],
  prep: Prep,
): { out: Tensor; oc: Operand; bias: Tensor | null } {
  let out: Tensor;
  if (opts.out !== undefined) {
    out = checkTensor('out', opts.out, 'float32');
    if (!sameShape(out.shape, outShape)) throw new RangeError(expected(`Tensor of shape ${shapeString(outShape)}`, 'out', out));
    checkWritable(fn, 'out', out);
    const layout = operand(out);
    if (layout.stored || layout.data !== out.data) {
      throw new RangeError(`${fn}: out must be row-major in its last two axes with one stride for its leading axes`);
    }
  } else {
    if (beta !== 0) throw new RangeError(`${fn}: beta is ${beta} but no out was given; beta scales the existing contents of out`);
    out = prep.empty(outShape); // every element is written (beta is 0)
  }
  let bias: Tensor | null = null;
  if (opts.bias !== undefined) {
    bias = checkTensor('bias', opts.bias, 'float32');
    if (bias.rank !== 1 || bias.shape[0] !== n) throw new RangeError(expected(`Tensor of shape [${n}]`, 'bias', bias));
    inputs = [...inputs, ['bias', bias]];
  }
  for (const [name, t] of inputs) {
    if (sharesMemory(out, t)) throw new RangeError(`${fn}: out must not share memory with ${name}`);
  }
  if (bias) {
    bias = prep.input(bias, 'bias');
    if (n > 1 && bias.strides[0] !== 1) bias = prep.contiguous(bias);
  }
  const oc = operand(prep.output(out, 'out', beta !== 0));
  return { out, oc, bias };
}

/** matmul with a PackedMatrix as b. */
function preparePacked(A: Tensor, P: PackedMatrix, opts: Partial<MatmulOptions>, fn: string, prep: Prep): GemmCall {
  if (opts.transposeB) throw new RangeError(`${fn}: transposeB does not apply to a PackedMatrix (choose it in packMatrix)`);
  const ta = opts.transposeA === undefined ? false : checkBoolean('transposeA', opts.transposeA);
  const alpha = opts.alpha === undefined ? 1 : checkFinite('alpha', opts.alpha);
  const beta = opts.beta === undefined ? 0 : checkFinite('beta', opts.beta);
  if (A.rank < 2) throw new RangeError(expected('Tensor with at least 2 dimensions', 'a', A));
  const [k, n] = P.shape;
  const [ar, ac] = dims(A.shape, -2);
  const m = ta ? ac : ar;
  const ka = ta ? ar : ac;
  if (ka !== k) {
    throw new RangeError(`${fn}: a.shape[${ta ? A.rank - 2 : A.rank - 1}] is ${ka} but the packed b has ${k} rows; the inner dimensions must match`);
  }
  const batchShape = dims(A.shape, 0, -2);
  const { out, oc, bias } = outputAndBias(opts, [...batchShape, m, n], n, beta, fn, [['a', A]], prep);
  const pa = operand(prep.input(A, 'a'), prep);
  const batch = batchShape.reduce((x, d) => x * d, 1);
  const params = prep.block(gemmWithPackedParams({
    m,
    transA: ta !== pa.stored ? 1 : 0,
    lda: pa.ld,
    ldc: oc.ld,
    aBatchStride: batchShape.length === 0 ? 0 : pa.batchStride,
    cBatchStride: oc.batchStride,
    batch,
    alpha,
    beta,
    streamOut: opts.out === undefined ? 1 : 0,
    aOffset: pa.offset,
    cOffset: oc.offset,
    biasOffset: bias ? bias.offset : 0,
  }));
  return { a: pa.data, b: P.handle, packed: true, out, target: oc.data, bias: bias ? (bias.data as Float32Array) : null, params };
}

/** The batch shape of the result: a's and b's leading axes, equal, or one side's when the other is 2-D. */
function batchShapeOf(batchA: readonly number[], batchB: readonly number[], fn: string): readonly number[] {
  if (batchA.length === 0) return batchB;
  if (batchB.length === 0 || sameShape(batchA, batchB)) return batchA;
  throw new RangeError(
    `${fn}: batch dimensions of a ${shapeString(batchA)} and b ${shapeString(batchB)} must be equal (or one operand must be 2-D)`,
  );
}

function prepareMatmul(a: unknown, b: unknown, options: unknown, fn: string, prep: Prep): GemmCall {
  const A = checkTensor('a', a, 'float32');
  const opts = checkOptions<MatmulOptions>(fn, options, MATMUL_OPTIONS);
  if (b instanceof PackedMatrix) return preparePacked(A, b, opts, fn, prep);
  if (!(b instanceof Tensor)) throw new TypeError(expected('float32 Tensor or PackedMatrix', 'b', b));
  const B = checkTensor('b', b, 'float32');
  const ta = opts.transposeA === undefined ? false : checkBoolean('transposeA', opts.transposeA);
  const tb = opts.transposeB === undefined ? false : checkBoolean('transposeB', opts.transposeB);
  const alpha = opts.alpha === undefined ? 1 : checkFinite('alpha', opts.alpha);
  const beta = opts.beta === undefined ? 0 : checkFinite('beta', opts.beta);
  if (A.rank < 2) throw new RangeError(expected('Tensor with at least 2 dimensions', 'a', A));
  if (B.rank < 2) throw new RangeError(expected('Tensor with at least 2 dimensions', 'b', B));

  const [ar, ac] = dims(A.shape, -2);
  const [br, bc] = dims(B.shape, -2);
  const m = ta ? ac : ar;
  const k = ta ? ar : ac;
  const kb = tb ? bc : br;
  const n = tb ? br : bc;
  if (k !== kb) {
    const ai = ta ? A.rank - 2 : A.rank - 1;
    const bi = tb ? B.rank - 1 : B.rank - 2;
    throw new RangeError(
      `${fn}: a.shape[${ai}] is ${k} but b.shape[${bi}] is ${kb}; the inner dimensions must match (a ${shapeString(
        A.shape,
      )}${ta ? ' transposed' : ''}, b ${shapeString(B.shape)}${tb ? ' transposed' : ''})`,
    );
  }
  const batchA = dims(A.shape, 0, -2);
  const batchB = dims(B.shape, 0, -2);
  const batchShape = batchShapeOf(batchA, batchB, fn);
  const { out, oc, bias } = outputAndBias(opts, [...batchShape, m, n], n, beta, fn, [['a or b', A], ['a or b', B]], prep);
  const pa = operand(prep.input(A, 'a'), prep);
  const pb = operand(prep.input(B, 'b'), prep);
  const params = prep.block(gemmParams({
    m,
    n,
    k,
    transA: ta !== pa.stored ? 1 : 0,
    transB: tb !== pb.stored ? 1 : 0,
    lda: pa.ld,
    ldb: pb.ld,
    ldc: oc.ld,
    aBatchStride: batchA.length === 0 ? 0 : pa.batchStride,
    bBatchStride: batchB.length === 0 ? 0 : pb.batchStride,
    cBatchStride: oc.batchStride,
    batch: batchShape.reduce((p, d) => p * d, 1),
    alpha,
    beta,
    streamOut: opts.out === undefined ? 1 : 0,
    aOffset: pa.offset,
    bOffset: pb.offset,
    cOffset: oc.offset,
    biasOffset: bias ? bias.offset : 0,
  }));
  return { a: pa.data, b: pb.data, packed: false, out, target: oc.data, bias: bias ? (bias.data as Float32Array) : null, params };
}

/**
 * out = alpha · op(a) · op(b) + beta · out (+ bias), where op transposes the last two
 * axes when asked. a is [..., M, K] and b [..., K, N] (after op); leading axes
 * must be equal, or one operand 2-D (it is shared across the batch).
 */
export function matmul(a: Tensor, b: Tensor | PackedMatrix, options?: MatmulOptions): Tensor {
  const call = prepareMatmul(a, b, options, 'matmul', NOW);
  if (call.packed) {
    native.gemmWithPacked(call.a, call.b, call.target, call.bias, call.params);
  } else {
    native.gemm(call.a, call.b as Float32Array, call.target, call.bias, call.params);
  }
  return call.out;
}

/**
 * matmul off the main thread; resolves with `out`. Inputs must not change
 * (nor `out` be read) until it settles.
 */
export async function matmulAsync(a: Tensor, b: Tensor | PackedMatrix, options?: MatmulOptions): Promise<Tensor> {
  const staging = new Staging('matmulAsync');
  const call = prepareMatmul(a, b, options, 'matmulAsync', staging);
  await staging.run(() =>
    call.packed
      ? native.gemmWithPackedAsync(call.a, call.b, call.target, call.bias, call.params)
      : native.gemmAsync(call.a, call.b as Float32Array, call.target, call.bias, call.params),
  );
  return call.out;
}

/**
 * @internal matmulAsync's call made now, for a chain (see runAsync in
 * multihead.ts); undefined, having called nothing, when it needs copies made
 * first or writes memory the addon does not own.
 */
export function matmulQueued(a: Tensor, b: Tensor | PackedMatrix, options?: MatmulOptions): Queued<Tensor> | undefined {
  const staging = new Staging('matmulAsync');
  const call = prepareMatmul(a, b, options, 'matmulAsync', staging);
  if (!staging.direct || !writesOwned([call.out])) return undefined;
  const done = call.packed
    ? native.gemmWithPackedAsync(call.a, call.b, call.target, call.bias, call.params)
    : native.gemmAsync(call.a, call.b as Float32Array, call.target, call.bias, call.params);
  return { value: call.out, done, writes: [call.out] };
}

// ------------------------------------------------------------ softmax

interface SoftmaxCall {
  x: Float32Array;
  /** What the caller gets back. */
  out: Tensor;
  /** What the kernel writes: out, or its stand-in (async). */
  target: Float32Array;
  mask: Float32Array | Uint8Array | null;
  params: Float64Array;
}

/** The native code of a mask's dtype: 1 float32 (added), 2 uint8 (nonzero = masked); 0 for no mask. */
export function maskKind(t: Tensor | null | undefined): 0 | 1 | 2 {
  if (!t) return 0;
  return t.dtype === 'float32' ? 1 : 2;
}

/** The given out (checked against x's shape, unit last stride, distinct elements, apart from x unless it is x) or a new tensor. */
function softmaxOutput(opts: Partial<SoftmaxOptions>, X: Tensor, fn: string, prep: Prep): Tensor {
  if (opts.out === undefined) return prep.empty(X.shape);
  const out = checkTensor('out', opts.out, 'float32');
  if (!sameShape(out.shape, X.shape)) {
    throw new RangeError(expected(`Tensor of shape ${shapeString(X.shape)}`, 'out', out));
  }
  const last = X.rank - 1;
  if (out.shape[last] > 1 && out.strides[last] !== 1) {
    throw new RangeError(expected('Tensor with a unit stride on its last axis', 'out', out));
  }
  checkWritable(fn, 'out', out);
  const at = (t: Tensor) => t.data.byteOffset + t.offset * 4;
  let sameLayout = true;
  for (let d = 0; d < X.rank; ++d) sameLayout = sameLayout && (out.strides[d] === X.strides[d] || X.shape[d] <= 1);
  const inPlace = out.data.buffer === X.data.buffer && at(out) === at(X) && sameLayout;
  if (!inPlace && sharesMemory(out, X)) throw new RangeError(`${fn}: out must be x itself or not share memory with it`);
  return out;
}

/** The mask as a view of x's shape (stride 0 on broadcast axes), its last axis contiguous. */
function softmaxMask(mask: unknown, X: Tensor, fn: string, prep: Prep): Tensor {
  let M = checkTensor('mask', mask);
  if (!broadcastsTo(M.shape, X.shape)) {
    throw new RangeError(`${fn}: mask of shape ${shapeString(M.shape)} does not broadcast to x's shape ${shapeString(X.shape)}`);
  }
  M = prep.input(M, 'mask');
  if (M.shape.length > 0 && M.shape[M.rank - 1] > 1 && M.strides[M.rank - 1] !== 1) M = prep.contiguous(M);
  return M.expand(X.shape);
}

function prepareSoftmax(x: unknown, options: unknown, fn: string, prep: Prep): SoftmaxCall {
  const X0 = checkTensor('x', x, 'float32');
  const opts = checkOptions<SoftmaxOptions>(fn, options, SOFTMAX_OPTIONS);
  const scale = opts.scale === undefined ? 1 : checkFinite('scale', opts.scale);
  const causal = opts.causal === undefined ? false : checkBoolean('causal', opts.causal);
  if (X0.rank < 1) throw new RangeError(expected('Tensor with at least 1 dimension', 'x', X0));
  if (causal && X0.rank < 2) {
    throw new RangeError(expected('Tensor with at least 2 dimensions (causal masks the last two)', 'x', X0));
  }
  const out = softmaxOutput(opts, X0, fn, prep);
  const M0 = opts.mask === undefined ? null : checkTensor('mask', opts.mask);
  if (M0 && sharesMemory(out, M0)) throw new RangeError(`${fn}: out must not share memory with mask`);
  const target = prep.output(out, 'out');
  let X = prep.input(X0, 'x');
  const last = X.rank - 1;
  if (X.shape[last] > 1 && X.strides[last] !== 1) X = prep.contiguous(X);
  const M = M0 === null ? null : softmaxMask(M0, X, fn, prep);
  const params = prep.block(softmaxParams({
    rank: X.rank,
    scale,
    causal: causal ? 1 : 0,
    streamOut: opts.out === undefined ? 1 : 0,
    maskKind: maskKind(M),
    xOffset: X.offset,
    outOffset: target.offset,
    maskOffset: M ? M.offset : 0,
    shape: X.shape,
    xStrides: X.strides,
    outStrides: target.strides,
    maskStrides: M ? M.strides : [],
  }));
  return { x: X.data as Float32Array, out, target: target.data as Float32Array, mask: M ? M.data : null, params };
}

/**
 * Softmax along the last axis of scale · x (+ mask). A row whose every entry
 * is masked (or -Infinity) is all zeros; a NaN in a row makes the row NaN.
 */
export function softmax(x: Tensor, options?: SoftmaxOptions): Tensor {
  const call = prepareSoftmax(x, options, 'softmax', NOW);
  native.softmax(call.x, call.target, call.mask, call.params);
  return call.out;
}

/** softmax off the main thread; resolves with `out`. */
export async function softmaxAsync(x: Tensor, options?: SoftmaxOptions): Promise<Tensor> {
  const staging = new Staging('softmaxAsync');
  const call = prepareSoftmax(x, options, 'softmaxAsync', staging);
  await staging.run(() => native.softmaxAsync(call.x, call.target, call.mask, call.params));
  return call.out;
}

// ------------------------------------------------------------ runtime

export interface CpuInfo extends NativeCpuInfo {
  /** The addon file in use. */
  addon: string;
}

/** The kernel path in use, the CPU features and caches it was chosen from, and the thread count. */
export function cpuInfo(): CpuInfo {
  return { ...native.cpuInfo(), addon: addonPath };
}

/** Threads the kernels use (the calling thread included), process-wide. */
export function setNumThreads(n: number): void {
  checkInteger('numThreads', n, 1, 1024);
  native.setNumThreads(n);
}

export function getNumThreads(): number {
  return native.getNumThreads();
}

/** The most microseconds setIdleSpin takes (one second). */
export const MAX_IDLE_SPIN = 1_000_000;

/**
 * How long (microseconds, default 10000 or the ATTN_SPIN_US environment
 * variable) the pool's threads keep polling for work after a kernel before
 * they sleep, process-wide. Requests that come closer together than this get
 * every thread at once; on a virtual machine a thread that went to sleep
 * often runs late or slowly for a while after it wakes (a call soon after can
 * take longer on two threads than on one). The thread that runs async calls
 * polls for as long. 0 saves the CPU time between infrequent requests (async
 * calls then run on libuv's pool).
 */
export function setIdleSpin(microseconds: number): void {
  checkInteger('microseconds', microseconds, 0, MAX_IDLE_SPIN);
  native.setIdleSpin(microseconds);
}

export function getIdleSpin(): number {
  return native.getIdleSpin();
}
