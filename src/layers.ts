// The Transformer layer's building blocks on Tensors: LayerNorm (with the
// residual add and a bias folded in), GELU and ReLU, and linear layers with
// the activation applied in the GEMM's epilogue.
import { native } from './native';
import { PackedMatrix } from './ops';
import { activationParams, layerNormParams, linearParams } from './params';
import { type Queued, writesOwned } from './staging';
import { Tensor, checkTensor, dims, newResult } from './tensor';
import { broadcastsTo, checkFinite, checkOptions, describe, expected, sameShape, shapeString } from './validate';

/** An activation applied elementwise: ReLU, GELU with erf ('gelu'), or GELU's tanh approximation ('gelu_tanh'). */
export type Activation = 'relu' | 'gelu' | 'gelu_tanh';

export interface LayerNormOptions {
  /** γ, [N] where N is x's last dimension (default: none, i.e. ones). */
  weight?: Tensor;
  /** β, [N] (default: none, i.e. zeros). */
  bias?: Tensor;
  /** Added to the variance (default 1e-5). */
  eps?: number;
  /** Added to x before normalising (the residual connection); broadcasts to x's shape, its last dimension N. */
  residual?: Tensor;
  /** [N], added to x before normalising too (the bias of the linear layer that produced x). */
  inputBias?: Tensor;
  /** Where to write the result: a Tensor of x's shape with a unit last stride; x or the residual itself for in place. */
  out?: Tensor;
  /**
   * Also write x + residual + inputBias here (a pre-norm layer's residual
   * stream, which continues past the norm): x's shape, a unit last stride; x
   * or the residual itself for in place. Apart from out.
   */
  sumOut?: Tensor;
}

export interface GeluOptions {
  /** 'none' (default): x Φ(x) with the exact erf; 'tanh': 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))). */
  approximate?: 'none' | 'tanh';
  /** Where to write the result (x itself for in place). */
  out?: Tensor;
}

export interface ReluOptions {
  /** Where to write the result (x itself for in place). */
  out?: Tensor;
}

export interface LinearOptions {
  /** [outFeatures], added to every row. */
  bias?: Tensor;
  /** Applied to the result in the same pass (default 'none'). */
  activation?: Activation | 'none';
  /** Where to write the result: [..., outFeatures], rows with a unit last stride and one stride between them. */
  out?: Tensor;
}

const LAYER_NORM_OPTIONS = ['weight', 'bias', 'eps', 'residual', 'inputBias', 'out', 'sumOut'] as const;
const GELU_OPTIONS = ['approximate', 'out'] as const;
const RELU_OPTIONS = ['out'] as const;
const LINEAR_OPTIONS = ['bias', 'activation', 'out'] as const;

/** The native code of an activation (native/kernels/kernel_table.h). */
const ACTIVATION_CODE = { none: 0, relu: 1, gelu: 2, gelu_tanh: 3 } as const;

/** @internal The native code of an activation name, checked; `name` is the option's name in errors. */
export function activationCode(name: string, value: unknown): 0 | 1 | 2 | 3 {
  if (typeof value === 'string' && Object.prototype.hasOwnProperty.call(ACTIVATION_CODE, value)) {
    return ACTIVATION_CODE[value as keyof typeof ACTIVATION_CODE];
  }
  const what = "'none', 'relu', 'gelu' or 'gelu_tanh'";
  throw new (typeof value === 'string' ? RangeError : TypeError)(expected(what, name, value));
}

/** t itself when its last axis is contiguous (or has at most one element), else a contiguous copy. */
function unitLast(t: Tensor): Tensor {
  const last = t.rank - 1;
  return t.shape[last] > 1 && t.strides[last] !== 1 ? t.contiguous() : t;
}

/** A float32 [n] vector with a unit stride (copied when strided). */
function rowVector(name: string, value: unknown, n: number): Tensor {
  const t = checkTensor(name, value, 'float32');
  if (t.rank !== 1 || t.shape[0] !== n) throw new RangeError(expected(`Tensor of shape [${n}]`, name, t));
  return unitLast(t);
}

/** The given output `name` (x's shape, a unit last stride) or a new tensor. */
function outputLike(out: unknown, shape: readonly number[], fn: string, name = 'out'): Tensor {
  if (out === undefined) return newResult(shape, fn);
  const o = checkTensor(name, out, 'float32');
  if (!sameShape(o.shape, shape)) throw new RangeError(expected(`Tensor of shape ${shapeString(shape)}`, name, o));
  if (o.rank > 0 && o.shape[o.rank - 1] > 1 && o.strides[o.rank - 1] !== 1) {
    throw new RangeError(expected('Tensor with a unit stride on its last axis', name, o));
  }
  return o;
}

/** A scalar (rank 0) tensor as [1], for the row kernels; other tensors as they are. */
const atLeast1d = (t: Tensor): Tensor => (t.rank === 0 ? t.reshape([1]) : t);

// ------------------------------------------------------------ layerNorm

/** A checked call: the result tensor, and the addon call that fills it, now or off the main thread. */
interface NativeCall {
  out: Tensor;
  run(): void;
  runAsync(): Promise<void>;
  /** What the kernel writes (out, and sumOut when given): the writes of a queued call. */
  writes?: Tensor[];
}

type F32 = Float32Array;

/** Runs a checked call now and returns its result. */
function now(call: NativeCall): Tensor {
  call.run();
  return call.out;
}

/** Runs a checked call off the main thread and resolves with its result. */
async function later(call: NativeCall): Promise<Tensor> {
  await call.runAsync();
  return call.out;
}

/** Makes a checked call's async kernel call now, for a chain (see runAsync in multihead.ts); undefined, having called nothing, when it writes memory the addon does not own. */
function queued(call: NativeCall): Queued<Tensor> | undefined {
  const writes = call.writes ?? [call.out];
  if (!writesOwned(writes)) return undefined;
  return { value: call.out, done: call.runAsync(), writes };
}

function prepareLayerNorm(x: unknown, options: unknown, fn: string): NativeCall {
  const X0 = checkTensor('x', x, 'float32');
  const opts = checkOptions<LayerNormOptions>(fn, options, LAYER_NORM_OPTIONS);
  if (X0.rank < 1) throw new RangeError(expected('Tensor with at least 1 dimension', 'x', X0));
  const n = X0.shape[X0.rank - 1];
  const eps = opts.eps === undefined ? 1e-5 : checkFinite('eps', opts.eps);
  if (eps < 0) throw new RangeError(expected('finite non-negative number', 'eps', eps));
  const weight = opts.weight === undefined ? null : rowVector('weight', opts.weight, n);
  const bias = opts.bias === undefined ? null : rowVector('bias', opts.bias, n);
  const shift = opts.inputBias === undefined ? null : rowVector('inputBias', opts.inputBias, n);
  let residual: Tensor | null = null;
  if (opts.residual !== undefined) {
    const R = checkTensor('residual', opts.residual, 'float32');
    if (R.rank === 0 || R.shape[R.rank - 1] !== n || !broadcastsTo(R.shape, X0.shape)) {
      throw new RangeError(`${fn}: residual of shape ${shapeString(R.shape)} does not broadcast to x's shape ${shapeString(X0.shape)}`);
    }
    residual = unitLast(R).expand(X0.shape);
  }
  const out = outputLike(opts.out, X0.shape, fn);
  const sum = opts.sumOut === undefined ? null : outputLike(opts.sumOut, X0.shape, fn, 'sumOut');
  const X = unitLast(X0);
  const params = layerNormParams({
    rank: X.rank,
    streamOut: opts.out === undefined ? 1 : 0,
    shape: X.shape,
    xStrides: X.strides,
    xOffset: X.offset,
    residualStrides: residual ? residual.strides : [],
    residualOffset: residual ? residual.offset : 0,
    outStrides: out.strides,
    outOffset: out.offset,
    shiftOffset: shift ? shift.offset : 0,
    weightOffset: weight ? weight.offset : 0,
    biasOffset: bias ? bias.offset : 0,
    sumStrides: sum ? sum.strides : [],
    sumOffset: sum ? sum.offset : 0,
    eps,
  });
  const data = (t: Tensor | null) => (t ? (t.data as F32) : null);
  const args = [X.data as F32, data(residual), data(shift), data(weight), data(bias), out.data as F32, data(sum), params] as const;
  return { out, run: () => native.layerNorm(...args), runAsync: () => native.layerNormAsync(...args), writes: sum ? [out, sum] : [out] };
}

/**
 * Layer normalisation along the last axis, PyTorch's F.layer_norm over
 * [N]: (z - mean) / √(var + eps) · weight + bias with z = x + residual +
 * inputBias, so a residual connection (and the bias of the layer before) cost
 * no extra pass. The statistics are exact for rows far from zero too.
 */
export function layerNorm(x: Tensor, options?: LayerNormOptions): Tensor {
  return now(prepareLayerNorm(x, options, 'layerNorm'));
}

/** layerNorm off the main thread; resolves with the result. Inputs must not change until it settles. */
export async function layerNormAsync(x: Tensor, options?: LayerNormOptions): Promise<Tensor> {
  return later(prepareLayerNorm(x, options, 'layerNormAsync'));
}

/** @internal layerNormAsync's kernel call made now, for a chain (see runAsync in multihead.ts). */
export function layerNormQueued(x: Tensor, options?: LayerNormOptions): Queued<Tensor> | undefined {
  return queued(prepareLayerNorm(x, options, 'layerNormAsync'));
}

// ------------------------------------------------------------ gelu, relu

function prepareActivation(x: unknown, code: number, out: unknown, fn: string): NativeCall {
  const X0 = checkTensor('x', x, 'float32');
  const o = outputLike(out, X0.shape, fn);
  const X = unitLast(atLeast1d(X0));
  const O = atLeast1d(o);
  const params = activationParams({
    kind: code,
    streamOut: out === undefined ? 1 : 0,
    rank: X.rank,
    shape: X.shape,
    xStrides: X.strides,
    xOffset: X.offset,
    outStrides: O.strides,
    outOffset: O.offset,
  });
  const args = [X.data as F32, O.data as F32, params] as const;
  return { out: o, run: () => native.activation(...args), runAsync: () => native.activationAsync(...args) };
}

function geluCall(x: unknown, options: unknown, fn: string): NativeCall {
  const opts = checkOptions<GeluOptions>(fn, options, GELU_OPTIONS);
  const approximate = opts.approximate ?? 'none';
  if (approximate !== 'none' && approximate !== 'tanh') {
    throw new (typeof approximate === 'string' ? RangeError : TypeError)(expected("'none' or 'tanh'", 'approximate', approximate));
  }
  return prepareActivation(x, approximate === 'tanh' ? ACTIVATION_CODE.gelu_tanh : ACTIVATION_CODE.gelu, opts.out, fn);
}

/** GELU, x Φ(x) (PyTorch's F.gelu), exact through erf, or its tanh approximation with approximate: 'tanh'. */
export function gelu(x: Tensor, options?: GeluOptions): Tensor {
  return now(geluCall(x, options, 'gelu'));
}

/** gelu off the main thread. */
export async function geluAsync(x: Tensor, options?: GeluOptions): Promise<Tensor> {
  return later(geluCall(x, options, 'geluAsync'));
}

function reluCall(x: unknown, options: unknown, fn: string): NativeCall {
  const opts = checkOptions<ReluOptions>(fn, options, RELU_OPTIONS);
  return prepareActivation(x, ACTIVATION_CODE.relu, opts.out, fn);
}

/** max(x, 0) elementwise (NaN stays NaN). */
export function relu(x: Tensor, options?: ReluOptions): Tensor {
  return now(reluCall(x, options, 'relu'));
}

/** relu off the main thread. */
export async function reluAsync(x: Tensor, options?: ReluOptions): Promise<Tensor> {
  return later(reluCall(x, options, 'reluAsync'));
}

// ------------------------------------------------------------ linear

/** t [..., c] as rows: its data, offset and the stride between rows, or null when the leading axes do not flatten. */
function rowsOf(t: Tensor): { rows: number; ld: number } | null {
  const c = t.shape[t.rank - 1];
  if (c > 1 && t.strides[t.rank - 1] !== 1) return null;
  let rows = 1;
  let ld = -1;
  let expect = -1;
  for (let d = t.rank - 2; d >= 0; --d) {
    rows *= t.shape[d];
    if (t.shape[d] === 1) continue;
    if (ld < 0) {
      ld = t.strides[d];
    } else if (t.strides[d] !== expect) {
      return null;
    }
    expect = t.strides[d] * t.shape[d];
  }
  if (ld < 0) ld = Math.max(c, 1); // a single row
  if (rows > 1 && ld < c) return null;
  return { rows, ld: Math.max(ld, 1) };
}

function prepareLinear(x: unknown, weight: unknown, options: unknown, fn: string): NativeCall {
  let X = checkTensor('x', x, 'float32');
  const opts = checkOptions<LinearOptions>(fn, options, LINEAR_OPTIONS);
  if (X.rank < 1) throw new RangeError(expected('Tensor with at least 1 dimension', 'x', X));
  const k = X.shape[X.rank - 1];
  let n: number;
  let w: { data: F32 | object; ld: number; transposed: number; offset: number };
  if (weight instanceof PackedMatrix) {
    if (weight.shape[0] !== k) {
      throw new RangeError(`${fn}: x.shape[${X.rank - 1}] is ${k} but the packed weight has ${weight.shape[0]} input features (rows)`);
    }
    n = weight.shape[1];
    w = { data: weight.handle, ld: 1, transposed: 0, offset: 0 };
  } else {
    if (!(weight instanceof Tensor)) throw new TypeError(expected('float32 Tensor or PackedMatrix', 'weight', weight));
    let W = checkTensor('weight', weight, 'float32');
    if (W.rank !== 2) throw new RangeError(expected('2-D Tensor [outFeatures, inFeatures]', 'weight', W));
    if (W.shape[1] !== k) {
      throw new RangeError(`${fn}: x.shape[${X.rank - 1}] is ${k} but weight.shape[1] is ${W.shape[1]}; weight is [outFeatures, inFeatures]`);
    }
    n = W.shape[0];
    const [sr, sc] = W.strides;
    let layout: { ld: number; transposed: number } | null = null;
    if ((k <= 1 || sc === 1) && (n <= 1 || sr >= k)) layout = { ld: Math.max(n <= 1 ? k : sr, 1), transposed: 0 };
    else if ((n <= 1 || sr === 1) && (k <= 1 || sc >= n)) layout = { ld: Math.max(k <= 1 ? n : sc, 1), transposed: 1 };
    if (!layout) {
      W = W.contiguous();
      layout = { ld: Math.max(k, 1), transposed: 0 };
    }
    w = { data: W.data as F32, offset: W.offset, ...layout };
  }
  const bias = opts.bias === undefined ? null : rowVector('bias', opts.bias, n);
  const activation = opts.activation === undefined ? 0 : activationCode('activation', opts.activation);
  const outShape = [...dims(X.shape, 0, -1), n];
  const out = outputLike(opts.out, outShape, fn);
  const oRows = rowsOf(out);
  if (!oRows) throw new RangeError(`${fn}: out must be rows with a unit last stride and one stride between them (${describe(out)})`);
  let xRows = rowsOf(X);
  if (!xRows) {
    X = X.contiguous();
    xRows = rowsOf(X)!;
  }
  const params = linearParams({
    m: xRows.rows,
    n,
    k,
    lda: xRows.ld,
    xOffset: X.offset,
    ldw: w.ld,
    wTransposed: w.transposed,
    wOffset: w.offset,
    ldc: Math.max(oRows.ld, n, 1),
    outOffset: out.offset,
    biasOffset: bias ? bias.offset : 0,
    activation,
  });
  const args = [X.data as F32, w.data, out.data as F32, bias ? (bias.data as F32) : null, params] as const;
  return { out, run: () => native.linear(...args), runAsync: () => native.linearAsync(...args) };
}

/**
 * A linear layer, PyTorch's F.linear: act(x · weightᵀ + bias) with weight
 * [outFeatures, inFeatures] as PyTorch stores it (or packMatrix(weight,
 * { transpose: true })); the bias and the activation are applied as the GEMM
 * writes its result. x is [..., inFeatures]; the result [..., outFeatures].
 */
export function linear(x: Tensor, weight: Tensor | PackedMatrix, options?: LinearOptions): Tensor {
  return now(prepareLinear(x, weight, options, 'linear'));
}

/** linear off the main thread. */
export async function linearAsync(x: Tensor, weight: Tensor | PackedMatrix, options?: LinearOptions): Promise<Tensor> {
  return later(prepareLinear(x, weight, options, 'linearAsync'));
}

/** @internal linearAsync's kernel call made now, for a chain (see runAsync in multihead.ts). */
export function linearQueued(x: Tensor, weight: Tensor | PackedMatrix, options?: LinearOptions): Queued<Tensor> | undefined {
  return queued(prepareLinear(x, weight, options, 'linearAsync'));
}
