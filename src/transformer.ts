// Transformer encoder and decoder layers and their stacks, as PyTorch's
// nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder
// and nn.TransformerDecoder compute them with batch_first=True in inference
// (dropout off): multi-head attention, Add & Norm, the feed-forward network
// (linear, activation, linear), Add & Norm; post-norm (the 2017 paper's order)
// or pre-norm (normFirst).
//
// Each residual add is folded into the LayerNorm that follows it (which also
// adds the bias of the linear layer before it), or into the GEMM that
// produces the sublayer's output (accumulating into the residual stream);
// the feed-forward's first GEMM writes activations directly.
import { activationCode, layerNorm, layerNormAsync, layerNormQueued, linear, linearAsync, linearQueued, type Activation, type LayerNormOptions, type LinearOptions } from './layers';
import { KVCache, MultiHeadAttention, Workspaces, runAsync, runSync, type ForwardPlan, type Steps } from './multihead';
import { type MatmulOptions, type PackedMatrix } from './ops';
import { type Queued } from './staging';
import { Tensor, checkTensor, dims, newResult, newTensor } from './tensor';
import { checkBoolean, checkFinite, checkInteger, checkOptions, checkSequenceLengths, describe, expected, sameShape, shapeString } from './validate';

export interface TransformerLayerOptions {
  /** Model width E (d_model). */
  dModel: number;
  /** Attention heads; must divide dModel. */
  numHeads: number;
  /** Hidden width of the feed-forward network (default 2048). */
  dimFeedforward?: number;
  /** The feed-forward network's activation (default 'relu'; 'gelu' is exact, 'gelu_tanh' its tanh approximation). */
  activation?: Activation;
  /** LayerNorm before each sublayer (pre-norm) instead of after the residual add (default false). */
  normFirst?: boolean;
  /** The LayerNorms' eps (default 1e-5). */
  layerNormEps?: number;
  /** Biases in the attention, the linear layers and the LayerNorms (default true). */
  bias?: boolean;
  /** Seed of the deterministic initialisation (default 0). */
  seed?: number;
}

export interface TransformerStackOptions extends TransformerLayerOptions {
  /** Layers in the stack. */
  numLayers: number;
  /** A LayerNorm after the last layer (default false). */
  finalNorm?: boolean;
  /** The final LayerNorm's eps (default layerNormEps, as nn.Transformer makes it). */
  finalNormEps?: number;
}

export interface EncoderForwardOptions {
  /** [S, S] or [batch·heads, S, S] (or broadcasting to [batch, heads, S, S]): uint8 nonzero = masked, or float32 added. */
  srcMask?: Tensor;
  /** [batch, S] ([S] unbatched): uint8 nonzero = padding, or float32 added. */
  srcKeyPaddingMask?: Tensor;
  /** Each position attends only to itself and the positions before it. */
  causal?: boolean;
  /**
   * Packed variable-length input: src is [totalTokens, dModel], the tokens of
   * sequence i following those of sequence i - 1. Every GEMM runs once over
   * all tokens; attention stays within each sequence and computes no padding.
   * The output is packed the same way. Not with srcMask or srcKeyPaddingMask.
   */
  sequenceLengths?: readonly number[] | Int32Array;
}

export interface DecoderForwardOptions {
  /** Self-attention mask, [T, T] or [batch·heads, T, T] (with a cache: T new steps by all cached ones). */
  tgtMask?: Tensor;
  /** Cross-attention mask, [T, S] or [batch·heads, T, S]. */
  memoryMask?: Tensor;
  /** [batch, T] padding of the target (with a cache: of every step so far). */
  tgtKeyPaddingMask?: Tensor;
  /** [batch, S] padding of the memory. */
  memoryKeyPaddingMask?: Tensor;
  /** Causal self-attention (the decoder's usual mask; default true with a cache). */
  causal?: boolean;
  /** Incremental decoding: the steps' keys and values are appended to the cache, the memory's projected once. */
  cache?: TransformerDecoderCache;
}

export interface TransformerFromStateDictOptions {
  numHeads: number;
  /** Default 'relu'. */
  activation?: Activation;
  /** Default false. */
  normFirst?: boolean;
  /** Default 1e-5. */
  layerNormEps?: number;
  /** Prepended to every name, e.g. 'encoder.layers.0.' */
  prefix?: string;
}

export interface TransformerStackFromStateDictOptions extends TransformerFromStateDictOptions {
  /** Layers to read (default: as many as the state dict has, layers.0. to layers.N-1.). */
  numLayers?: number;
  /** The final LayerNorm's eps, when there is one (default layerNormEps). */
  finalNormEps?: number;
}

/** A linear layer's parameters: weight [out, in] (PyTorch's layout) and bias [out]. */
export interface LinearParameters {
  readonly weight: Tensor;
  readonly bias?: Tensor;
}

/** A LayerNorm's parameters: weight (γ) and bias (β), [dModel]. */
export interface LayerNormParameters {
  readonly weight: Tensor;
  readonly bias?: Tensor;
}

const LAYER_OPTIONS = ['dModel', 'numHeads', 'dimFeedforward', 'activation', 'normFirst', 'layerNormEps', 'bias', 'seed'] as const;
const STACK_OPTIONS = [...LAYER_OPTIONS, 'numLayers', 'finalNorm', 'finalNormEps'] as const;
const ENCODER_FORWARD_OPTIONS = ['srcMask', 'srcKeyPaddingMask', 'causal', 'sequenceLengths'] as const;
const DECODER_FORWARD_OPTIONS = ['tgtMask', 'memoryMask', 'tgtKeyPaddingMask', 'memoryKeyPaddingMask', 'causal', 'cache'] as const;
const FROM_STATE_DICT_OPTIONS = ['numHeads', 'activation', 'normFirst', 'layerNormEps', 'prefix'] as const;
const STACK_FROM_STATE_DICT_OPTIONS = [...FROM_STATE_DICT_OPTIONS, 'numLayers', 'finalNormEps'] as const;
const ACTIVATION_NAMES: Record<number, Activation> = { 1: 'relu', 2: 'gelu', 3: 'gelu_tanh' };

// ------------------------------------------------------------ configuration

interface LayerConfig {
  dModel: number;
  numHeads: number;
  dimFeedforward: number;
  activation: Activation;
  normFirst: boolean;
  layerNormEps: number;
  bias: boolean;
}

function checkActivation(value: unknown): Activation {
  const code = activationCode('activation', value);
  if (code === 0) throw new RangeError(expected("'relu', 'gelu' or 'gelu_tanh'", 'activation', value));
  return ACTIVATION_NAMES[code];
}

function checkEps(value: unknown, name = 'layerNormEps'): number {
  const eps = checkFinite(name, value);
  if (eps < 0) throw new RangeError(expected('finite non-negative number', name, value));
  return eps;
}

// Seeds: a stack's layer i gets seed * 1024 + i, a layer's attention modules seed * 4 + 1 and + 2.
const MAX_LAYER_SEED = 2 ** 37;
const MAX_STACK_SEED = 2 ** 27;

function checkLayerConfig(opts: Partial<TransformerLayerOptions>, options: unknown, what: string, maxSeed: number): LayerConfig & { seed: number } {
  if (options === undefined) throw new TypeError(expected('options object with dModel and numHeads', `${what} options`, options));
  const dModel = checkInteger('dModel', opts.dModel, 1);
  const numHeads = checkInteger('numHeads', opts.numHeads, 1);
  if (dModel % numHeads !== 0) {
    throw new RangeError(`Expected numHeads that divides dModel ${dModel} but received ${numHeads} of type number`);
  }
  return {
    dModel,
    numHeads,
    dimFeedforward: opts.dimFeedforward === undefined ? 2048 : checkInteger('dimFeedforward', opts.dimFeedforward, 1),
    activation: opts.activation === undefined ? 'relu' : checkActivation(opts.activation),
    normFirst: opts.normFirst === undefined ? false : checkBoolean('normFirst', opts.normFirst),
    layerNormEps: opts.layerNormEps === undefined ? 1e-5 : checkEps(opts.layerNormEps),
    bias: opts.bias === undefined ? true : checkBoolean('bias', opts.bias),
    seed: opts.seed === undefined ? 0 : checkInteger('seed', opts.seed, 0, maxSeed),
  };
}

/** A linear layer initialised as torch.nn.Linear does: weight and bias uniform in ±1/√in. */
function initialLinear(out: number, inp: number, bias: boolean, seed: number): LinearParameters {
  const bound = 1 / Math.sqrt(inp);
  const weight = Tensor.uniform([out, inp], { seed, low: -bound, high: bound });
  return bias ? { weight, bias: Tensor.uniform([out], { seed: seed + 1, low: -bound, high: bound }) } : { weight };
}

/** A LayerNorm initialised as torch.nn.LayerNorm does: weight ones, bias zeros. */
function initialNorm(E: number, bias: boolean): LayerNormParameters {
  const weight = Tensor.full([E], 1);
  return bias ? { weight, bias: Tensor.zeros([E]) } : { weight };
}

// ------------------------------------------------------------ steps

/** One operation, in its three forms, as a step of a forward. */
function* op(run: () => Tensor, later: () => Promise<Tensor>, queue: () => Queued<Tensor> | undefined): Steps<Tensor> {
  return (yield { kind: 'op', run, runAsync: later, queue }) as Tensor;
}

const normStep = (x: Tensor, o: LayerNormOptions) => op(() => layerNorm(x, o), () => layerNormAsync(x, o), () => layerNormQueued(x, o));
const linearStep = (x: Tensor, w: PackedMatrix, o: LinearOptions) =>
  op(() => linear(x, w, o), () => linearAsync(x, w, o), () => linearQueued(x, w, o));

function* matmulStep(a: Tensor, b: PackedMatrix, options: MatmulOptions): Steps<Tensor> {
  return (yield { kind: 'matmul', a, b, options }) as Tensor;
}

/** LayerNorm options for a norm's parameters. */
const normOf = (n: LayerNormParameters, eps: number) => ({ weight: n.weight, bias: n.bias, eps });

// ------------------------------------------------------------ masks

/** An attention mask as MultiHeadAttention takes it, checked under the caller's name against `queries` x `keys`. */
function checkAttnMask(name: string, mask: unknown, B: number, h: number, queries: number, keys: number): Tensor {
  const m = checkTensor(name, mask);
  const [q, k] = dims(m.shape, -2);
  const lead = dims(m.shape, 0, -2);
  const okLead =
    m.rank === 2 ||
    (m.rank === 3 && (lead[0] === B * h || lead[0] === 1 || lead[0] === h)) ||
    (m.rank === 4 && (lead[0] === B || lead[0] === 1) && (lead[1] === h || lead[1] === 1));
  if (!okLead || (q !== queries && q !== 1) || k !== keys) {
    throw new RangeError(expected(`Tensor [${queries}, ${keys}] or [${B * h}, ${queries}, ${keys}]`, name, m));
  }
  return m;
}

/** A key padding mask [B, keys] ([keys] unbatched), as [B, keys]. */
function checkKeyPadding(name: string, mask: unknown, B: number, keys: number, batched: boolean): Tensor {
  const m = checkTensor(name, mask);
  const want = batched ? [B, keys] : [keys];
  if (!sameShape(m.shape, want)) throw new RangeError(expected(`Tensor of shape ${shapeString(want)}`, name, m));
  return batched ? m : m.unsqueeze(0);
}

/** The masks of one attention, in MultiHeadAttention's option names. */
interface AttnMasks {
  attnMask?: Tensor;
  keyPaddingMask?: Tensor;
  causal: boolean;
  /** Packed sequences (encoder self-attention over [1, totalTokens, E]). */
  sequenceLengths?: Int32Array;
}

/** A model input [B, S, E] or unbatched [S, E], as [B, S, E]. */
function lift(name: string, value: unknown, E: number): { t: Tensor; batched: boolean } {
  const t = checkTensor(name, value, 'float32');
  if ((t.rank !== 2 && t.rank !== 3) || t.shape[t.rank - 1] !== E) {
    throw new RangeError(expected(`Tensor [batch, seq, ${E}] or [seq, ${E}]`, name, t));
  }
  return t.rank === 3 ? { t, batched: true } : { t: t.unsqueeze(0), batched: false };
}

// ------------------------------------------------------------ decoder cache

/**
 * The state of incremental decoding with a TransformerDecoder(Layer): each
 * layer's self-attention keys and values of the steps so far, and its
 * cross-attention keys and values of `memory`, projected on the first step
 * and reused. Create with createCache; one forward at a time per cache.
 */
export class TransformerDecoderCache {
  readonly batch: number;
  /** @internal Per layer: the self-attention cache. */
  readonly selfKV: KVCache[];
  /** @internal Per layer: the memory's keys and values ([B, S, E] views), once projected. */
  memoryKV: { K: Tensor; V: Tensor }[] = [];
  /** @internal The memory tensor they were projected from. */
  memory: Tensor | undefined;
  /** @internal A forward is using the cache. */
  busy = false;

  /** @internal Use createCache. */
  constructor(batch: number, layers: number, numHeads: number, headDim: number, capacity: number) {
    this.batch = batch;
    this.selfKV = Array.from({ length: layers }, () => new KVCache(batch, numHeads, headDim, capacity));
  }

  /** Steps decoded so far. */
  get length(): number {
    return this.selfKV[0].length;
  }

  /** Forgets every step and the memory's projection (keeps the buffers). */
  reset(): void {
    for (const c of this.selfKV) c.reset();
    this.memoryKV = [];
    this.memory = undefined;
  }

  /** Keeps the first `length` steps (the memory's projection stays). */
  truncate(length: number): void {
    checkInteger('length', length, 0, this.length);
    for (const c of this.selfKV) c.truncate(length);
  }
}

function checkCacheOptions(options: unknown): { batch: number; capacity: number } {
  const opts = checkOptions<{ batch?: number; capacity?: number }>('createCache', options, ['batch', 'capacity']);
  return {
    batch: opts.batch === undefined ? 1 : checkInteger('batch', opts.batch, 1),
    capacity: opts.capacity === undefined ? 64 : checkInteger('capacity', opts.capacity, 1),
  };
}

// ------------------------------------------------------------ state dicts

/** Tensors of a state dict by full name, for one module under `prefix`. */
class StateDict {
  readonly entries: Map<string, unknown>;

  constructor(
    stateDict: unknown,
    readonly prefix: string,
  ) {
    if (stateDict instanceof StateDict) {
      this.entries = stateDict.entries;
      return;
    }
    if (stateDict === null || typeof stateDict !== 'object') {
      throw new TypeError(expected('object or Map of Tensors', 'stateDict', stateDict));
    }
    this.entries = new Map(stateDict instanceof Map ? stateDict : Object.entries(stateDict));
  }

  /** The same tensors under a longer prefix. */
  under(more: string): StateDict {
    return new StateDict(this, this.prefix + more);
  }

  has(name: string): boolean {
    return this.entries.has(this.prefix + name);
  }

  /** Names under the prefix (without it). */
  names(): string[] {
    return [...this.entries.keys()].filter((k) => k.startsWith(this.prefix)).map((k) => k.slice(this.prefix.length));
  }

  /** A float32 tensor named `name`, or undefined. */
  get(name: string): Tensor | undefined {
    const v = this.entries.get(this.prefix + name);
    return v === undefined ? undefined : checkTensor(`stateDict['${this.prefix}${name}']`, v, 'float32');
  }

  /** A copy of tensor `name`, which must have shape `want` (`show` describes it in the error, e.g. [dimFeedforward, 64]). */
  shaped(name: string, want: number[], show = shapeString(want)): Tensor {
    const t = this.get(name);
    if (!t) throw new RangeError(`fromStateDict: missing tensor '${this.prefix}${name}' of shape ${show}`);
    if (!sameShape(t.shape, want)) {
      throw new RangeError(`fromStateDict: tensor '${this.prefix}${name}' has shape ${shapeString(t.shape)}, expected ${show}`);
    }
    return t.clone();
  }

  unexpected(name: string, have: string[]): never {
    throw new RangeError(
      `fromStateDict: unexpected tensor '${this.prefix}${name}' in the state dict; expected ${have.map((n) => this.prefix + n).join(', ')}`,
    );
  }
}

// The submodules of a layer, as PyTorch names them (those without parameters too).
const LAYER_NAMESPACE = new Set(['self_attn', 'multihead_attn', 'linear1', 'linear2', 'norm1', 'norm2', 'norm3', 'dropout', 'dropout1', 'dropout2', 'dropout3', 'activation']);

/** The layer's parameters from a state dict, checked (see fromStateDict). */
function readLayer(sd: StateDict, options: unknown, decoder: boolean): { config: LayerConfig; weights: LayerWeights } {
  const opts = checkOptions<TransformerFromStateDictOptions>('fromStateDict', options, FROM_STATE_DICT_OPTIONS);
  return readLayerWith(sd, opts, options, decoder);
}

function readLayerWith(
  sd: StateDict,
  opts: Partial<TransformerFromStateDictOptions>,
  options: unknown,
  decoder: boolean,
): { config: LayerConfig; weights: LayerWeights } {
  if (options === undefined) throw new TypeError(expected('options object with numHeads', 'options', options));
  const numHeads = checkInteger('numHeads', opts.numHeads, 1);
  const activation = opts.activation === undefined ? 'relu' : checkActivation(opts.activation);
  const normFirst = opts.normFirst === undefined ? false : checkBoolean('normFirst', opts.normFirst);
  const layerNormEps = opts.layerNormEps === undefined ? 1e-5 : checkEps(opts.layerNormEps);
  const norms = decoder ? ['norm1', 'norm2', 'norm3'] : ['norm1', 'norm2'];
  const own = ['linear1', 'linear2', ...norms].flatMap((m) => [`${m}.weight`, `${m}.bias`]);
  const attns = decoder ? ['self_attn', 'multihead_attn'] : ['self_attn'];
  for (const name of sd.names()) {
    const top = name.split('.')[0];
    if (!LAYER_NAMESPACE.has(top) || attns.includes(top) || own.includes(name)) continue;
    sd.unexpected(name, [...attns.map((a) => `${a}.*`), ...own]);
  }
  const attention = (name: string) => {
    const m = MultiHeadAttention.fromStateDict(sd.entries as Map<string, Tensor>, { numHeads, prefix: sd.prefix + `${name}.` });
    if (m.kdim !== m.embedDim || m.vdim !== m.embedDim) {
      throw new RangeError(`fromStateDict: '${sd.prefix}${name}' has kdim ${m.kdim} and vdim ${m.vdim}; a Transformer layer's are dModel ${m.embedDim}`);
    }
    return m;
  };
  const selfAttn = attention('self_attn');
  const E = selfAttn.embedDim;
  const w1 = sd.get('linear1.weight');
  if (!w1) throw new RangeError(`fromStateDict: missing tensor '${sd.prefix}linear1.weight' of shape [dimFeedforward, ${E}]`);
  if (w1.rank !== 2 || w1.shape[1] !== E) {
    throw new RangeError(`fromStateDict: tensor '${sd.prefix}linear1.weight' has shape ${shapeString(w1.shape)}, expected [dimFeedforward, ${E}]`);
  }
  const F = w1.shape[0];
  const biasNames = ['linear1.bias', 'linear2.bias', ...norms.map((n) => `${n}.bias`)];
  const bias = selfAttn.bias || biasNames.some((n) => sd.has(n));
  const multiheadAttn = decoder ? attention('multihead_attn') : undefined;
  for (const m of [selfAttn, multiheadAttn]) {
    if (!m || m.bias === bias) continue;
    const name = m === selfAttn ? 'self_attn' : 'multihead_attn';
    throw new RangeError(`fromStateDict: missing tensor '${sd.prefix}${name}.in_proj_bias' of shape [${3 * E}] (the layer has biases)`);
  }
  if (multiheadAttn && multiheadAttn.embedDim !== E) {
    throw new RangeError(`fromStateDict: '${sd.prefix}multihead_attn' has embedDim ${multiheadAttn.embedDim}, self_attn ${E}`);
  }
  const lin = (name: string, out: number, inp: number, show: string): LinearParameters => {
    const weight = sd.shaped(`${name}.weight`, [out, inp], show);
    return bias ? { weight, bias: sd.shaped(`${name}.bias`, [out]) } : { weight };
  };
  const norm = (name: string): LayerNormParameters => {
    const weight = sd.shaped(`${name}.weight`, [E]);
    return bias ? { weight, bias: sd.shaped(`${name}.bias`, [E]) } : { weight };
  };
  const weights: LayerWeights = {
    selfAttn,
    multiheadAttn,
    linear1: lin('linear1', F, E, `[dimFeedforward, ${E}]`),
    linear2: lin('linear2', E, F, `[${E}, ${F}]`),
    norms: norms.map(norm),
  };
  return { config: { dModel: E, numHeads, dimFeedforward: F, activation, normFirst, layerNormEps, bias }, weights };
}

/** The layers and final norm of a stack's state dict. */
function readStack(
  stateDict: unknown,
  options: unknown,
  decoder: boolean,
): { config: LayerConfig; layers: { config: LayerConfig; weights: LayerWeights }[]; norm?: LayerNormParameters; normEps: number } {
  const opts = checkOptions<TransformerStackFromStateDictOptions>('fromStateDict', options, STACK_FROM_STATE_DICT_OPTIONS);
  if (options === undefined) throw new TypeError(expected('options object with numHeads', 'options', options));
  const prefix = opts.prefix ?? '';
  if (typeof prefix !== 'string') throw new TypeError(expected('string', 'prefix', prefix));
  const sd = new StateDict(stateDict, prefix);
  let found = 0;
  const names = sd.names();
  for (const name of names) {
    const m = /^layers\.(\d+)\./.exec(name);
    if (m) found = Math.max(found, Number(m[1]) + 1);
  }
  const numLayers = opts.numLayers === undefined ? Math.max(found, 1) : checkInteger('numLayers', opts.numLayers, 1);
  for (const name of names) {
    const top = name.split('.')[0];
    if (top !== 'layers' && top !== 'norm') continue;
    const m = /^layers\.(\d+)\./.exec(name);
    if ((m && Number(m[1]) < numLayers && String(Number(m[1])) === m[1]) || name === 'norm.weight' || name === 'norm.bias') continue;
    sd.unexpected(name, [`layers.0.* to layers.${numLayers - 1}.*`, 'norm.weight', 'norm.bias']);
  }
  const layerOpts = { numHeads: opts.numHeads, activation: opts.activation, normFirst: opts.normFirst, layerNormEps: opts.layerNormEps };
  const layers = Array.from({ length: numLayers }, (_, i) => readLayerWith(sd.under(`layers.${i}.`), layerOpts, options, decoder));
  const config = layers[0].config;
  for (const [i, l] of layers.entries()) {
    if (l.config.dModel !== config.dModel) {
      throw new RangeError(`fromStateDict: layer ${i} has dModel ${l.config.dModel}, layer 0 ${config.dModel}`);
    }
  }
  let norm: LayerNormParameters | undefined;
  if (sd.has('norm.weight') || sd.has('norm.bias')) {
    const weight = sd.shaped('norm.weight', [config.dModel]);
    norm = config.bias ? { weight, bias: sd.shaped('norm.bias', [config.dModel]) } : { weight };
  }
  const normEps = opts.finalNormEps === undefined ? config.layerNormEps : checkEps(opts.finalNormEps, 'finalNormEps');
  return { config, layers, norm, normEps };
}

// ------------------------------------------------------------ layers

/** @internal A layer's modules and parameters (fresh or from a state dict). */
interface LayerWeights {
  selfAttn: MultiHeadAttention;
  multiheadAttn?: MultiHeadAttention;
  linear1: LinearParameters;
  linear2: LinearParameters;
  norms: LayerNormParameters[];
}

/** @internal Marks weights built by this module for a layer's constructor. */
class LayerInit {
  constructor(readonly config: LayerConfig, readonly weights: LayerWeights) {}
}

function freshWeights(c: LayerConfig, seed: number, decoder: boolean): LayerWeights {
  const E = c.dModel;
  const mha = (i: number) => new MultiHeadAttention({ embedDim: E, numHeads: c.numHeads, bias: c.bias, seed: seed * 4 + i });
  return {
    selfAttn: mha(1),
    multiheadAttn: decoder ? mha(2) : undefined,
    linear1: initialLinear(c.dimFeedforward, E, c.bias, seed * 16 + 8),
    linear2: initialLinear(E, c.dimFeedforward, c.bias, seed * 16 + 12),
    norms: Array.from({ length: decoder ? 3 : 2 }, () => initialNorm(E, c.bias)),
  };
}

/** What encoder and decoder layers share: configuration, the feed-forward network, the norms, packing. */
abstract class LayerBase {
  readonly dModel: number;
  readonly numHeads: number;
  readonly dimFeedforward: number;
  readonly activation: Activation;
  readonly normFirst: boolean;
  readonly layerNormEps: number;
  readonly bias: boolean;
  readonly selfAttn: MultiHeadAttention;
  readonly linear1: LinearParameters;
  readonly linear2: LinearParameters;
  readonly norm1: LayerNormParameters;
  readonly norm2: LayerNormParameters;

  private packedFF: [PackedMatrix, PackedMatrix] | undefined;
  /** Bumped by refreshWeights: a packing that started before it is not kept. */
  private weightsVersion = 0;
  /** @internal */
  protected readonly workspaces = new Workspaces();

  /** @internal */
  protected constructor(init: LayerInit) {
    const { config: c, weights: w } = init;
    this.dModel = c.dModel;
    this.numHeads = c.numHeads;
    this.dimFeedforward = c.dimFeedforward;
    this.activation = c.activation;
    this.normFirst = c.normFirst;
    this.layerNormEps = c.layerNormEps;
    this.bias = c.bias;
    this.selfAttn = w.selfAttn;
    this.linear1 = w.linear1;
    this.linear2 = w.linear2;
    this.norm1 = w.norms[0];
    this.norm2 = w.norms[1];
  }

  /** @internal The MultiheadAttention modules, by their state-dict names. */
  protected abstract attentions(): [string, MultiHeadAttention][];
  /** @internal The LayerNorms, by their state-dict names. */
  protected abstract norms(): [string, LayerNormParameters][];

  /** The parameters under PyTorch's names (the module's own tensors, not copies). */
  stateDict(): Record<string, Tensor> {
    const sd: Record<string, Tensor> = {};
    for (const [name, m] of this.attentions()) {
      for (const [k, t] of Object.entries(m.stateDict())) sd[`${name}.${k}`] = t;
    }
    for (const [name, p] of [['linear1', this.linear1], ['linear2', this.linear2], ...this.norms()] as const) {
      sd[`${name}.weight`] = p.weight;
      if (p.bias) sd[`${name}.bias`] = p.bias;
    }
    return sd;
  }

  /**
   * The weights are packed for the GEMM kernel on first use. After changing
   * a weight tensor in place, call this so the next forward repacks.
   */
  refreshWeights(): void {
    this.packedFF = undefined;
    ++this.weightsVersion;
    for (const [, m] of this.attentions()) m.refreshWeights();
  }

  /** The feed-forward weights packed as Wᵀ for the GEMM, on first use (off the main thread in forwardAsync). */
  private *packedFeedForward(): Steps<[PackedMatrix, PackedMatrix]> {
    if (!this.packedFF) {
      const version = this.weightsVersion;
      const w1 = (yield { kind: 'pack', w: this.linear1.weight }) as PackedMatrix;
      const w2 = (yield { kind: 'pack', w: this.linear2.weight }) as PackedMatrix;
      if (version !== this.weightsVersion) return [w1, w2];
      this.packedFF = [w1, w2];
    }
    return this.packedFF;
  }

  /**
   * @internal Attention of `query` over `memory` (self-attention when it is
   * undefined) through module m, and its output projection: without the bias
   * into a workspace (post-norm: the next LayerNorm adds the bias and the
   * residual), or, with `accumulate`, added with the bias into it (pre-norm's
   * residual stream).
   */
  protected *attendAndProject(
    m: MultiHeadAttention,
    query: Tensor,
    memory: Tensor | undefined,
    masks: AttnMasks & { kvCache?: KVCache; memoryKV?: { K: Tensor; V: Tensor } },
    ws: Map<string, Tensor>,
    fn: string,
  ): Steps<Tensor> {
    const { memoryKV, ...options } = masks;
    // Packed sequences are one unbatched run of tokens to the module.
    const q = options.sequenceLengths ? query.reshape(dims(query.shape, 1)) : query;
    const plan: ForwardPlan = m.planForward(q, memory, memory, options, fn);
    if (memoryKV) plan.memoryKV = memoryKV;
    const { merged } = yield* m.attend(plan, ws);
    const [B, L, E] = merged.shape;
    return yield* matmulStep(merged, yield* m.packed('out', m.outProjWeight), { out: Workspaces.temp(ws, 'proj', [B, L, E]) });
  }

  /**
   * @internal The feed-forward sublayer on x, with its Add & Norm:
   * post-norm, out = norm(x + linear2(act(linear1(x)))) with `residual` = x;
   * pre-norm (norm undefined), out += linear2(act(linear1(x))) + bias.
   */
  protected *feedForward(x: Tensor, out: Tensor, norm: LayerNormParameters | undefined, ws: Map<string, Tensor>): Steps<void> {
    const [B, L, E] = x.shape;
    const [w1, w2] = yield* this.packedFeedForward();
    const h = yield* linearStep(x, w1, { bias: this.linear1.bias, activation: this.activation, out: Workspaces.temp(ws, 'ffn', [B, L, this.dimFeedforward]) });
    if (norm) {
      const f = yield* matmulStep(h, w2, { out: Workspaces.temp(ws, 'proj', [B, L, E]) });
      yield* normStep(f, { residual: x, inputBias: this.linear2.bias, ...normOf(norm, this.layerNormEps), out });
    } else {
      yield* matmulStep(h, w2, { out, bias: this.linear2.bias, beta: 1 });
    }
  }
}

/** Runs a forward's steps with a workspace from `pool`, now or off the main thread. */
function withWorkspace<T>(pool: Workspaces, steps: (ws: Map<string, Tensor>) => Steps<T>, async: false): T;
function withWorkspace<T>(pool: Workspaces, steps: (ws: Map<string, Tensor>) => Steps<T>, async: true): Promise<T>;
function withWorkspace<T>(pool: Workspaces, steps: (ws: Map<string, Tensor>) => Steps<T>, async: boolean): T | Promise<T> {
  const ws = pool.take();
  if (!async) {
    try {
      return runSync(steps(ws));
    } finally {
      pool.give(ws);
    }
  }
  return runAsync(steps(ws)).finally(() => pool.give(ws));
}

/** The encoder's inputs and masks, checked and laid out. */
interface EncoderPlan {
  src: Tensor;
  batched: boolean;
  masks: AttnMasks;
}

/**
 * One encoder layer, as torch.nn.TransformerEncoderLayer(batch_first=True)
 * computes it in inference: self-attention, Add & Norm, feed-forward
 * (linear1, activation, linear2), Add & Norm; with normFirst, each norm
 * before its sublayer instead.
 */
export class TransformerEncoderLayer extends LayerBase {
  /** A layer with fresh weights (as PyTorch initialises them), deterministic for a seed. */
  constructor(options: TransformerLayerOptions);
  /** @internal */
  constructor(options: TransformerLayerOptions, init: LayerInit);
  constructor(options: TransformerLayerOptions, init?: LayerInit) {
    super(init instanceof LayerInit ? init : freshLayer(options, false, 'TransformerEncoderLayer'));
  }

  /**
   * A layer from a PyTorch TransformerEncoderLayer state dict: self_attn.*
   * (as MultiHeadAttention.fromStateDict reads it), linear1.weight [F, E],
   * linear1.bias, linear2.weight [E, F], linear2.bias, norm1.weight,
   * norm1.bias, norm2.weight, norm2.bias. Sizes come from the tensors; biases
   * are all there or all absent (bias: false). A missing, misshapen or
   * unexpected tensor under the layer's names is named in the error; other
   * keys are ignored. The tensors are copied.
   */
  static fromStateDict(stateDict: Record<string, Tensor> | Map<string, Tensor>, options: TransformerFromStateDictOptions): TransformerEncoderLayer {
    const { config, weights } = readLayer(new StateDict(stateDict, prefixOf(options)), options, false);
    return new TransformerEncoderLayer(config, new LayerInit(config, weights));
  }

  /** @internal */
  protected attentions(): [string, MultiHeadAttention][] {
    return [['self_attn', this.selfAttn]];
  }

  /** @internal */
  protected norms(): [string, LayerNormParameters][] {
    return [
      ['norm1', this.norm1],
      ['norm2', this.norm2],
    ];
  }

  /** src [batch, seq, dModel] (or unbatched [seq, dModel]) → a new Tensor of the same shape. */
  forward(src: Tensor, options?: EncoderForwardOptions): Tensor {
    const p = planEncoder(this, src, options, 'forward');
    return withWorkspace(this.workspaces, (ws) => encoderSteps([this], undefined, p, ws, 'forward'), false);
  }

  /** forward off the main thread. */
  async forwardAsync(src: Tensor, options?: EncoderForwardOptions): Promise<Tensor> {
    const p = planEncoder(this, src, options, 'forwardAsync');
    return await withWorkspace(this.workspaces, (ws) => encoderSteps([this], undefined, p, ws, 'forwardAsync'), true);
  }

  /** @internal The layer on x [B, L, E] into out (which may be x: the stream is updated in place). */
  *encode(x: Tensor, out: Tensor, masks: AttnMasks, ws: Map<string, Tensor>, fn: string): Steps<void> {
    const eps = this.layerNormEps;
    const [B, L, E] = x.shape;
    const temp = (name: string) => Workspaces.temp(ws, name, [B, L, E]);
    const bo = this.selfAttn.outProjBias;
    if (!this.normFirst) {
      const a = yield* this.attendAndProject(this.selfAttn, x, undefined, masks, ws, fn);
      const x1 = yield* normStep(a, { residual: x, inputBias: bo, ...normOf(this.norm1, eps), out: temp('x1') });
      yield* this.feedForward(x1, out, this.norm2, ws);
    } else {
      const h0 = yield* normStep(x, { ...normOf(this.norm1, eps), out: temp('ln') });
      const a = yield* this.attendAndProject(this.selfAttn, h0, undefined, masks, ws, fn);
      const h1 = yield* normStep(a, { residual: x, inputBias: bo, ...normOf(this.norm2, eps), out: temp('ln'), sumOut: out });
      yield* this.feedForward(h1, out, undefined, ws);
    }
  }
}

/**
 * One decoder layer, as torch.nn.TransformerDecoderLayer(batch_first=True)
 * computes it in inference: masked self-attention, Add & Norm, attention
 * over the encoder's output (memory), Add & Norm, feed-forward, Add & Norm;
 * with normFirst, each norm before its sublayer instead.
 */
export class TransformerDecoderLayer extends LayerBase {
  readonly multiheadAttn: MultiHeadAttention;
  readonly norm3: LayerNormParameters;

  /** A layer with fresh weights (as PyTorch initialises them), deterministic for a seed. */
  constructor(options: TransformerLayerOptions);
  /** @internal */
  constructor(options: TransformerLayerOptions, init: LayerInit);
  constructor(options: TransformerLayerOptions, init?: LayerInit) {
    const i = init instanceof LayerInit ? init : freshLayer(options, true, 'TransformerDecoderLayer');
    super(i);
    this.multiheadAttn = i.weights.multiheadAttn!;
    this.norm3 = i.weights.norms[2];
  }

  /**
   * A layer from a PyTorch TransformerDecoderLayer state dict: self_attn.*,
   * multihead_attn.*, linear1.*, linear2.*, norm1.*, norm2.*, norm3.* (see
   * TransformerEncoderLayer.fromStateDict).
   */
  static fromStateDict(stateDict: Record<string, Tensor> | Map<string, Tensor>, options: TransformerFromStateDictOptions): TransformerDecoderLayer {
    const { config, weights } = readLayer(new StateDict(stateDict, prefixOf(options)), options, true);
    return new TransformerDecoderLayer(config, new LayerInit(config, weights));
  }

  /** @internal */
  protected attentions(): [string, MultiHeadAttention][] {
    return [
      ['self_attn', this.selfAttn],
      ['multihead_attn', this.multiheadAttn],
    ];
  }

  /** @internal */
  protected norms(): [string, LayerNormParameters][] {
    return [
      ['norm1', this.norm1],
      ['norm2', this.norm2],
      ['norm3', this.norm3],
    ];
  }

  /** A cache for incremental decoding with this layer (DecoderForwardOptions.cache). */
  createCache(options?: { batch?: number; capacity?: number }): TransformerDecoderCache {
    const { batch, capacity } = checkCacheOptions(options);
    return new TransformerDecoderCache(batch, 1, this.numHeads, this.dModel / this.numHeads, capacity);
  }

  /** tgt [batch, T, dModel], memory [batch, S, dModel] (or both unbatched) → a new Tensor shaped like tgt. */
  forward(tgt: Tensor, memory: Tensor, options?: DecoderForwardOptions): Tensor {
    const p = planDecoder([this], tgt, memory, options, 'forward');
    return runDecoder(this.workspaces, [this], undefined, p, 'forward', false);
  }

  /** forward off the main thread. */
  async forwardAsync(tgt: Tensor, memory: Tensor, options?: DecoderForwardOptions): Promise<Tensor> {
    const p = planDecoder([this], tgt, memory, options, 'forwardAsync');
    return await runDecoder(this.workspaces, [this], undefined, p, 'forwardAsync', true);
  }

  /** @internal The layer on x [B, T, E] into out (which may be x), layer `index` of the cache. */
  *decode(x: Tensor, out: Tensor, p: DecoderPlan, index: number, ws: Map<string, Tensor>, fn: string): Steps<void> {
    const eps = this.layerNormEps;
    const [B, T, E] = x.shape;
    const temp = (name: string) => Workspaces.temp(ws, name, [B, T, E]);
    const cache = p.cache;
    const selfMasks = { ...p.selfMasks, kvCache: cache?.selfKV[index] };
    let memoryKV: { K: Tensor; V: Tensor } | undefined;
    if (cache) {
      if (!cache.memoryKV[index]) {
        const store = newTensor([B, p.memory.shape[1], 2 * E], 'float32', false, 'owned');
        cache.memoryKV[index] = yield* this.multiheadAttn.projectMemory(p.memory, store);
      }
      memoryKV = cache.memoryKV[index];
    }
    const crossMasks = { ...p.crossMasks, memoryKV };
    const bo1 = this.selfAttn.outProjBias;
    const bo2 = this.multiheadAttn.outProjBias;
    if (!this.normFirst) {
      const a = yield* this.attendAndProject(this.selfAttn, x, undefined, selfMasks, ws, fn);
      const x1 = yield* normStep(a, { residual: x, inputBias: bo1, ...normOf(this.norm1, eps), out: temp('x1') });
      const a2 = yield* this.attendAndProject(this.multiheadAttn, x1, p.memory, crossMasks, ws, fn);
      yield* normStep(a2, { residual: x1, inputBias: bo2, ...normOf(this.norm2, eps), out: x1 });
      yield* this.feedForward(x1, out, this.norm3, ws);
    } else {
      const h0 = yield* normStep(x, { ...normOf(this.norm1, eps), out: temp('ln') });
      const a = yield* this.attendAndProject(this.selfAttn, h0, undefined, selfMasks, ws, fn);
      const h1 = yield* normStep(a, { residual: x, inputBias: bo1, ...normOf(this.norm2, eps), out: temp('ln'), sumOut: out });
      const a2 = yield* this.attendAndProject(this.multiheadAttn, h1, p.memory, crossMasks, ws, fn);
      const h2 = yield* normStep(a2, { residual: out, inputBias: bo2, ...normOf(this.norm3, eps), out: temp('ln'), sumOut: out });
      yield* this.feedForward(h2, out, undefined, ws);
    }
  }
}

function prefixOf(options: unknown): string {
  const prefix = options !== null && typeof options === 'object' ? (options as { prefix?: unknown }).prefix : undefined;
  if (prefix !== undefined && typeof prefix !== 'string') throw new TypeError(expected('string', 'prefix', prefix));
  return prefix ?? '';
}

function freshLayer(options: unknown, decoder: boolean, what: string): LayerInit {
  const opts = checkOptions<TransformerLayerOptions>(what, options, LAYER_OPTIONS);
  const c = checkLayerConfig(opts, options, what, MAX_LAYER_SEED);
  return new LayerInit(c, freshWeights(c, c.seed, decoder));
}

// ------------------------------------------------------------ forward plans

function planEncoder(first: LayerBase, src: unknown, options: unknown, fn: string): EncoderPlan {
  const opts = checkOptions<EncoderForwardOptions>(fn, options, ENCODER_FORWARD_OPTIONS);
  const { t, batched } = lift('src', src, first.dModel);
  const [B, S] = t.shape;
  const h = first.numHeads;
  const masks: AttnMasks = { causal: opts.causal === undefined ? false : checkBoolean('causal', opts.causal) };
  if (opts.sequenceLengths !== undefined) {
    if (batched) {
      throw new RangeError(`${fn}: with sequenceLengths, src is the packed tokens [totalTokens, ${first.dModel}]; received ${describe(t)}`);
    }
    for (const option of ['srcMask', 'srcKeyPaddingMask'] as const) {
      if (opts[option] !== undefined) throw new RangeError(`${fn}: sequenceLengths cannot be combined with ${option}`);
    }
    masks.sequenceLengths = checkSequenceLengths(opts.sequenceLengths, S, fn).lengths;
    return { src: t, batched, masks };
  }
  if (opts.srcMask !== undefined) masks.attnMask = checkAttnMask('srcMask', opts.srcMask, B, h, S, S);
  if (opts.srcKeyPaddingMask !== undefined) masks.keyPaddingMask = checkKeyPadding('srcKeyPaddingMask', opts.srcKeyPaddingMask, B, S, batched);
  return { src: t, batched, masks };
}

/** The decoder's inputs and masks, checked and laid out. */
interface DecoderPlan {
  tgt: Tensor;
  memory: Tensor;
  batched: boolean;
  selfMasks: AttnMasks;
  crossMasks: AttnMasks;
  cache: TransformerDecoderCache | undefined;
}

function planDecoder(layers: TransformerDecoderLayer[], tgt: unknown, memory: unknown, options: unknown, fn: string): DecoderPlan {
  const opts = checkOptions<DecoderForwardOptions>(fn, options, DECODER_FORWARD_OPTIONS);
  const first = layers[0];
  const E = first.dModel;
  const { t, batched } = lift('tgt', tgt, E);
  const mem = lift('memory', memory, E);
  if (mem.batched !== batched) throw new RangeError(`${fn}: tgt has rank ${(tgt as Tensor).rank} but memory has rank ${(memory as Tensor).rank}`);
  const [B, T] = t.shape;
  const S = mem.t.shape[1];
  if (mem.t.shape[0] !== B) throw new RangeError(`${fn}: batch sizes differ: tgt ${B}, memory ${mem.t.shape[0]}`);
  const cache = opts.cache;
  if (cache !== undefined) {
    if (!(cache instanceof TransformerDecoderCache)) throw new TypeError(expected('TransformerDecoderCache', 'cache', cache));
    if (cache.selfKV.length !== layers.length || cache.selfKV[0].numHeads !== first.numHeads || cache.selfKV[0].headDim !== E / first.numHeads) {
      throw new RangeError(`${fn}: cache was made for another decoder (${cache.selfKV.length} layers of ${cache.selfKV[0].numHeads} heads of ${cache.selfKV[0].headDim})`);
    }
    if (cache.batch !== B) throw new RangeError(`${fn}: cache holds batch ${cache.batch} but tgt has batch ${B}`);
    if (cache.memory !== undefined && cache.memory !== memory) {
      throw new RangeError(`${fn}: cache holds the keys and values of another memory tensor; pass the same memory every step, or call cache.reset() first`);
    }
    if (cache.busy) throw new RangeError(`${fn}: cache is in use by a forward that has not settled; one forward at a time per cache`);
  }
  const h = first.numHeads;
  const keys = (cache ? cache.length : 0) + T;
  const selfMasks: AttnMasks = { causal: opts.causal === undefined ? cache !== undefined : checkBoolean('causal', opts.causal) };
  if (opts.tgtMask !== undefined) selfMasks.attnMask = checkAttnMask('tgtMask', opts.tgtMask, B, h, T, keys);
  if (opts.tgtKeyPaddingMask !== undefined) selfMasks.keyPaddingMask = checkKeyPadding('tgtKeyPaddingMask', opts.tgtKeyPaddingMask, B, keys, batched);
  const crossMasks: AttnMasks = { causal: false };
  if (opts.memoryMask !== undefined) crossMasks.attnMask = checkAttnMask('memoryMask', opts.memoryMask, B, h, T, S);
  if (opts.memoryKeyPaddingMask !== undefined) {
    crossMasks.keyPaddingMask = checkKeyPadding('memoryKeyPaddingMask', opts.memoryKeyPaddingMask, B, S, batched);
  }
  if (cache && cache.memory === undefined) {
    cache.memory = memory as Tensor; // its keys and values are projected by the first forward
    cache.memoryKV = [];
  }
  return { tgt: t, memory: mem.t, batched, selfMasks, crossMasks, cache };
}

/** The decoder's steps with a workspace from `pool`, now or off the main thread, the cache marked in use meanwhile. */
function runDecoder(pool: Workspaces, layers: TransformerDecoderLayer[], norm: FinalNorm, p: DecoderPlan, fn: string, async: false): Tensor;
function runDecoder(pool: Workspaces, layers: TransformerDecoderLayer[], norm: FinalNorm, p: DecoderPlan, fn: string, async: true): Promise<Tensor>;
function runDecoder(pool: Workspaces, layers: TransformerDecoderLayer[], norm: FinalNorm, p: DecoderPlan, fn: string, async: boolean): Tensor | Promise<Tensor> {
  const cache = p.cache;
  const steps = (ws: Map<string, Tensor>) => decoderSteps(layers, norm, p, ws, fn);
  if (!cache) return async ? withWorkspace(pool, steps, true) : withWorkspace(pool, steps, false);
  cache.busy = true;
  if (async) return withWorkspace(pool, steps, true).finally(() => (cache.busy = false));
  try {
    return withWorkspace(pool, steps, false);
  } finally {
    cache.busy = false;
  }
}

/** The result shaped like the input (unbatched inputs give unbatched results). */
const shapedLike = (out: Tensor, batched: boolean) => (batched ? out : out.reshape(dims(out.shape, 1)));

/** The final norm of a stack and its eps, when it has one. */
type FinalNorm = { params: LayerNormParameters; eps: number } | undefined;

function* encoderSteps(layers: TransformerEncoderLayer[], norm: FinalNorm, p: EncoderPlan, ws: Map<string, Tensor>, fn: string): Steps<Tensor> {
  const out = newResult(p.src.shape, fn);
  let x = p.src;
  for (const layer of layers) {
    yield* layer.encode(x, out, p.masks, ws, fn);
    x = out;
  }
  if (norm) yield* normStep(out, { ...normOf(norm.params, norm.eps), out });
  return shapedLike(out, p.batched);
}

function* decoderSteps(layers: TransformerDecoderLayer[], norm: FinalNorm, p: DecoderPlan, ws: Map<string, Tensor>, fn: string): Steps<Tensor> {
  const out = newResult(p.tgt.shape, fn);
  let x = p.tgt;
  for (const [i, layer] of layers.entries()) {
    yield* layer.decode(x, out, p, i, ws, fn);
    x = out;
  }
  if (norm) yield* normStep(out, { ...normOf(norm.params, norm.eps), out });
  return shapedLike(out, p.batched);
}

// ------------------------------------------------------------ stacks

function checkStackConfig(options: unknown, what: string): { layer: LayerConfig & { seed: number }; numLayers: number; finalNorm: boolean; normEps: number } {
  const opts = checkOptions<TransformerStackOptions>(what, options, STACK_OPTIONS);
  const layer = checkLayerConfig(opts, options, what, MAX_STACK_SEED);
  return {
    layer,
    numLayers: checkInteger('numLayers', opts.numLayers, 1),
    finalNorm: opts.finalNorm === undefined ? false : checkBoolean('finalNorm', opts.finalNorm),
    normEps: opts.finalNormEps === undefined ? layer.layerNormEps : checkEps(opts.finalNormEps, 'finalNormEps'),
  };
}

/** @internal Marks a stack built from a state dict. */
class StackInit<L> {
  constructor(
    readonly layers: L[],
    readonly norm: LayerNormParameters | undefined,
    readonly normEps: number,
  ) {}
}

/** What the two stacks share: layers, an optional final norm, state dicts. */
abstract class StackBase<L extends LayerBase> {
  readonly layers: readonly L[];
  /** The final LayerNorm, when the stack has one. */
  readonly norm?: LayerNormParameters;
  /** The final LayerNorm's eps. */
  readonly normEps: number;
  /** @internal */
  protected readonly workspaces = new Workspaces();

  /** @internal */
  protected constructor(init: StackInit<L>) {
    this.layers = Object.freeze(init.layers);
    this.norm = init.norm;
    this.normEps = init.normEps;
  }

  /** @internal The final norm for the steps. */
  protected finalNorm(): FinalNorm {
    return this.norm ? { params: this.norm, eps: this.normEps } : undefined;
  }

  get numLayers(): number {
    return this.layers.length;
  }

  get dModel(): number {
    return this.layers[0].dModel;
  }

  get numHeads(): number {
    return this.layers[0].numHeads;
  }

  /** The parameters under PyTorch's names: layers.N.* and norm.* (the module's own tensors, not copies). */
  stateDict(): Record<string, Tensor> {
    const sd: Record<string, Tensor> = {};
    this.layers.forEach((layer, i) => {
      for (const [k, t] of Object.entries(layer.stateDict())) sd[`layers.${i}.${k}`] = t;
    });
    if (this.norm) {
      sd['norm.weight'] = this.norm.weight;
      if (this.norm.bias) sd['norm.bias'] = this.norm.bias;
    }
    return sd;
  }

  /** See TransformerEncoderLayer#refreshWeights. */
  refreshWeights(): void {
    for (const l of this.layers) l.refreshWeights();
  }
}

function stackLayers<L>(options: unknown, what: string, make: (o: TransformerLayerOptions) => L): StackInit<L> {
  const { layer, numLayers, finalNorm, normEps } = checkStackConfig(options, what);
  const layers = Array.from({ length: numLayers }, (_, i) => make({ ...layer, seed: layer.seed * 1024 + i }));
  return new StackInit(layers, finalNorm ? initialNorm(layer.dModel, layer.bias) : undefined, normEps);
}

/** A stack of TransformerEncoderLayers with an optional final LayerNorm, as torch.nn.TransformerEncoder. */
export class TransformerEncoder extends StackBase<TransformerEncoderLayer> {
  /** numLayers layers with fresh weights (each its own, deterministic for the seed), and a final norm with finalNorm. */
  constructor(options: TransformerStackOptions);
  /** @internal */
  constructor(options: TransformerStackOptions, init: StackInit<TransformerEncoderLayer>);
  constructor(options: TransformerStackOptions, init?: StackInit<TransformerEncoderLayer>) {
    const s = init instanceof StackInit ? init : stackLayers(options, 'TransformerEncoder', (o) => new TransformerEncoderLayer(o));
    super(s);
  }

  /**
   * A stack from a PyTorch TransformerEncoder state dict: layers.N.* for
   * each layer (see TransformerEncoderLayer.fromStateDict) and norm.weight,
   * norm.bias when it has a final norm. The number of layers comes from the
   * names unless numLayers is given.
   */
  static fromStateDict(stateDict: Record<string, Tensor> | Map<string, Tensor>, options: TransformerStackFromStateDictOptions): TransformerEncoder {
    const { config, layers, norm, normEps } = readStack(stateDict, options, false);
    const built = layers.map((l) => new TransformerEncoderLayer(l.config, new LayerInit(l.config, l.weights)));
    return new TransformerEncoder({ ...config, numLayers: layers.length }, new StackInit(built, norm, normEps));
  }

  /** src [batch, seq, dModel] (or unbatched [seq, dModel]) → a new Tensor of the same shape. */
  forward(src: Tensor, options?: EncoderForwardOptions): Tensor {
    const p = planEncoder(this.layers[0], src, options, 'forward');
    return withWorkspace(this.workspaces, (ws) => encoderSteps([...this.layers], this.finalNorm(), p, ws, 'forward'), false);
  }

  /** forward off the main thread. */
  async forwardAsync(src: Tensor, options?: EncoderForwardOptions): Promise<Tensor> {
    const p = planEncoder(this.layers[0], src, options, 'forwardAsync');
    return await withWorkspace(this.workspaces, (ws) => encoderSteps([...this.layers], this.finalNorm(), p, ws, 'forwardAsync'), true);
  }
}

/** A stack of TransformerDecoderLayers with an optional final LayerNorm, as torch.nn.TransformerDecoder. */
export class TransformerDecoder extends StackBase<TransformerDecoderLayer> {
  /** numLayers layers with fresh weights (each its own, deterministic for the seed), and a final norm with finalNorm. */
  constructor(options: TransformerStackOptions);
  /** @internal */
  constructor(options: TransformerStackOptions, init: StackInit<TransformerDecoderLayer>);
  constructor(options: TransformerStackOptions, init?: StackInit<TransformerDecoderLayer>) {
    const s = init instanceof StackInit ? init : stackLayers(options, 'TransformerDecoder', (o) => new TransformerDecoderLayer(o));
    super(s);
  }

  /** A stack from a PyTorch TransformerDecoder state dict (see TransformerEncoder.fromStateDict). */
  static fromStateDict(stateDict: Record<string, Tensor> | Map<string, Tensor>, options: TransformerStackFromStateDictOptions): TransformerDecoder {
    const { config, layers, norm, normEps } = readStack(stateDict, options, true);
    const built = layers.map((l) => new TransformerDecoderLayer(l.config, new LayerInit(l.config, l.weights)));
    return new TransformerDecoder({ ...config, numLayers: layers.length }, new StackInit(built, norm, normEps));
  }

  /** A cache for incremental decoding (DecoderForwardOptions.cache): every layer's keys and values. */
  createCache(options?: { batch?: number; capacity?: number }): TransformerDecoderCache {
    const { batch, capacity } = checkCacheOptions(options);
    return new TransformerDecoderCache(batch, this.layers.length, this.numHeads, this.dModel / this.numHeads, capacity);
  }

  /** tgt [batch, T, dModel], memory [batch, S, dModel] (or both unbatched) → a new Tensor shaped like tgt. */
  forward(tgt: Tensor, memory: Tensor, options?: DecoderForwardOptions): Tensor {
    const p = planDecoder([...this.layers], tgt, memory, options, 'forward');
    return runDecoder(this.workspaces, [...this.layers], this.finalNorm(), p, 'forward', false);
  }

  /** forward off the main thread. */
  async forwardAsync(tgt: Tensor, memory: Tensor, options?: DecoderForwardOptions): Promise<Tensor> {
    const p = planDecoder([...this.layers], tgt, memory, options, 'forwardAsync');
    return await runDecoder(this.workspaces, [...this.layers], this.finalNorm(), p, 'forwardAsync', true);
  }
}
