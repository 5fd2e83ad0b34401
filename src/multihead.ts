// Multi-head attention as the Transformer uses it (and as
// torch.nn.MultiheadAttention with batch_first=True computes it):
// Q = XW^Q, K = XW^K, V = XW^V; split into h heads of E/h; scaled dot-product
// attention per head; concatenate; project with W^O.
import { attentionAsyncWith, attentionQueued, attentionRepeated, attentionWith, type AttentionOptions, type AttentionRepeat, type AttentionResult } from './attention';
import { native } from './native';
import { matmul, matmulAsync, matmulQueued, packMatrix, packMatrixAsync, PackedMatrix, type MatmulOptions } from './ops';
import { copyAsync, type Queued } from './staging';
import { type Memory, ChainHazard, Tensor, chainWrites, checkTensor, newTensor, dims, resultMemory } from './tensor';
import { checkBoolean, checkInteger, checkOptions, checkSequenceLengths, describe, expected, sameShape, shapeString } from './validate';

export interface MultiHeadAttentionOptions {
  /** Model width E (d_model). */
  embedDim: number;
  /** Heads h; must divide embedDim. Each head has E/h features. */
  numHeads: number;
  /** Feature size of `key` (default embedDim). */
  kdim?: number;
  /** Feature size of `value` (default embedDim). */
  vdim?: number;
  /** Biases on the input and output projections (default true). */
  bias?: boolean;
  /** Learned bias_k / bias_v rows appended to the keys and values (default false). */
  addBiasKV?: boolean;
  /** A zero key and value appended after the others (default false). */
  addZeroAttn?: boolean;
  /** Seed of the deterministic initialisation (default 0). */
  seed?: number;
}

export interface ForwardOptions {
  /** [batch, keys] ([keys] unbatched): uint8 nonzero = ignore that key, or float32 added. */
  keyPaddingMask?: Tensor;
  /** [queries, keys], [batch·heads, queries, keys] (PyTorch's layout) or anything broadcasting to [batch, heads, queries, keys]; uint8 nonzero = masked, or float32 added. */
  attnMask?: Tensor;
  /** Each query sees only keys at or before its own position (decoder self-attention). */
  causal?: boolean;
  /** Also return the attention weights (default false). */
  needWeights?: boolean;
  /** Average the weights over heads ([batch, queries, keys]) or not ([batch, heads, queries, keys]); default true. */
  averageWeights?: boolean;
  /** Incremental decoding: append this call's keys and values to the cache and attend over all of it. */
  kvCache?: KVCache;
  /** Called with the name and shape of each intermediate stage (for explanations and debugging). */
  trace?: (stage: string, shape: readonly number[]) => void;
  /**
   * Packed variable-length self-attention: query is [totalTokens, embedDim],
   * sequences of these lengths one after another (positive integers summing
   * to totalTokens). The projections run as one GEMM over all tokens, and each
   * sequence attends only within itself (causal: within itself): the output
   * rows of a sequence are those of running it alone. Not with key/value,
   * masks, a kvCache, needWeights, addBiasKV or addZeroAttn.
   */
  sequenceLengths?: readonly number[] | Int32Array;
}

export interface ForwardResult {
  /** [batch, queries, embedDim] ([queries, embedDim] unbatched) */
  output: Tensor;
  /** See ForwardOptions.averageWeights. */
  weights?: Tensor;
}

/** The result of a forward with `needWeights: true`. */
export interface ForwardResultWithWeights extends ForwardResult {
  /** See ForwardOptions.averageWeights. */
  weights: Tensor;
}

export interface FromStateDictOptions {
  numHeads: number;
  /** Prepended to every name, e.g. 'encoder.layers.0.self_attn.' */
  prefix?: string;
  addZeroAttn?: boolean;
}

const FORWARD_OPTIONS = ['keyPaddingMask', 'attnMask', 'causal', 'needWeights', 'averageWeights', 'kvCache', 'trace', 'sequenceLengths'] as const;
const CTOR_OPTIONS = ['embedDim', 'numHeads', 'kdim', 'vdim', 'bias', 'addBiasKV', 'addZeroAttn', 'seed'] as const;
const KNOWN_PARAMS = [
  'in_proj_weight',
  'q_proj_weight',
  'k_proj_weight',
  'v_proj_weight',
  'in_proj_bias',
  'out_proj.weight',
  'out_proj.bias',
  'bias_k',
  'bias_v',
];

// ------------------------------------------------------------ KV cache

/**
 * Keys and values of the steps decoded so far, per head, for a decoder's
 * masked self-attention. Create with MultiHeadAttention#createKVCache.
 */
export class KVCache {
  readonly batch: number;
  readonly numHeads: number;
  readonly headDim: number;
  private keys: Tensor;
  private values: Tensor;
  private len = 0;

  constructor(batch: number, numHeads: number, headDim: number, capacity = 64) {
    this.batch = checkInteger('batch', batch, 1);
    this.numHeads = checkInteger('numHeads', numHeads, 1);
    this.headDim = checkInteger('headDim', headDim, 1);
    checkInteger('capacity', capacity, 1);
    // The addon's memory (long-lived, read in place by the async forms).
    this.keys = newTensor([batch, numHeads, capacity, headDim], 'float32', false, 'owned');
    this.values = newTensor([batch, numHeads, capacity, headDim], 'float32', false, 'owned');
  }

  /** Steps cached. */
  get length(): number {
    return this.len;
  }

  /** Steps that fit before the buffers grow (they double as needed). */
  get capacity(): number {
    return this.keys.shape[2];
  }

  /** Forgets every step (keeps the memory). */
  reset(): void {
    this.len = 0;
  }

  /** Keeps the first `length` steps (rolls back, e.g. for beam search or speculative decoding). */
  truncate(length: number): void {
    this.len = checkInteger('length', length, 0, this.len);
  }

  /** @internal Appends [batch, heads, steps, headDim] keys and values; returns views of everything cached. */
  *append(k: Tensor, v: Tensor): Steps<{ keys: Tensor; values: Tensor }> {
    const steps = k.shape[2];
    const need = this.len + steps;
    if (need > this.capacity) {
      const cap = Math.max(need, 2 * this.capacity);
      const keys = newTensor([this.batch, this.numHeads, cap, this.headDim], 'float32', false, 'owned');
      const values = newTensor([this.batch, this.numHeads, cap, this.headDim], 'float32', false, 'owned');
      if (this.len > 0) {
        yield* copy(this.keys.narrow(2, 0, this.len), keys.narrow(2, 0, this.len));
        yield* copy(this.values.narrow(2, 0, this.len), values.narrow(2, 0, this.len));
      }
      this.keys = keys;
      this.values = values;
    }
    if (steps > 0) {
      yield* copy(k, this.keys.narrow(2, this.len, steps));
      yield* copy(v, this.values.narrow(2, this.len, steps));
    }
    this.len = need;
    return { keys: this.keys.narrow(2, 0, this.len), values: this.values.narrow(2, 0, this.len) };
  }
}

// ------------------------------------------------------------ sync / async steps

// A forward is written once, as a generator of the steps that do the work;
// runSync carries them out with the sync functions, runAsync with the async
// ones (every step whose cost grows with the data then runs off the main
// thread).
/**
 * @internal One step of a module's forward: a matmul, an attention, a copy, a
 * weight packing, or any other operation given in both forms ('op': run now,
 * or off the main thread).
 */
export type Step =
  | { kind: 'matmul'; a: Tensor; b: Tensor | PackedMatrix; options: MatmulOptions }
  | { kind: 'attention'; q: Tensor; k: Tensor; v: Tensor; options: AttentionOptions; causalAlways: number; repeat?: AttentionRepeat }
  | { kind: 'copy'; src: Tensor; dst: Tensor }
  | { kind: 'pack'; w: Tensor }
  | { kind: 'op'; run: () => Tensor; runAsync: () => Promise<Tensor>; queue?: () => Queued<Tensor> | undefined };

/**
 * @internal A forward as a sequence of steps, each resumed with its result: a
 * Tensor (matmul, op), an AttentionResult, nothing (copy) or a PackedMatrix.
 */
export type Steps<T> = Generator<Step, T, unknown>;

/** @internal Carries out the steps now. */
export function runSync<T>(gen: Steps<T>): T {
  let r = gen.next();
  while (!r.done) {
    const s = r.value;
    let value: unknown;
    if (s.kind === 'matmul') value = matmul(s.a, s.b, s.options);
    else if (s.kind === 'attention') {
      value = s.repeat
        ? attentionRepeated(s.repeat, s.q, s.k, s.v, s.options, s.causalAlways)
        : attentionWith(s.q, s.k, s.v, s.options, s.causalAlways);
    } else if (s.kind === 'copy') s.dst.assign(s.src);
    else if (s.kind === 'op') value = s.run();
    else value = packMatrix(s.w, { transpose: true });
    r = gen.next(value);
  }
  return r.value;
}

/** The step's async kernel call made now, when its result is known before it runs (see runAsync). */
function queueStep(s: Step): Queued<unknown> | undefined {
  if (s.kind === 'matmul') return matmulQueued(s.a, s.b, s.options);
  if (s.kind === 'attention') return attentionQueued(s.q, s.k, s.v, s.options, s.causalAlways);
  if (s.kind === 'op') return s.queue?.();
  return undefined;
}

/** queueStep, or 'wait' when the step's preparation meets a ChainHazard (it must wait for the chain). */
function queued(s: Step): Queued<unknown> | 'wait' | undefined {
  try {
    return queueStep(s);
  } catch (e) {
    if (e instanceof ChainHazard) return 'wait';
    throw e;
  }
}

/** Runs one step off the main thread on its own and resolves with its result. */
async function runStepAsync(s: Step): Promise<unknown> {
  if (s.kind === 'matmul') return matmulAsync(s.a, s.b, s.options);
  if (s.kind === 'attention') return attentionAsyncWith(s.q, s.k, s.v, s.options, s.causalAlways);
  if (s.kind === 'copy') return copyAsync(s.src.expand(s.dst.shape), s.dst, 'forwardAsync');
  if (s.kind === 'op') return s.runAsync();
  return packMatrixAsync(s.w, { transpose: true });
}

/**
 * @internal Carries out the steps off the main thread, in order. Each async
 * kernel call is a round trip to another thread and back to the main one
 * (tens of microseconds on a virtual machine when the other thread slept: as
 * much as a short request's kernel). So the steps whose results are known
 * before they run (a matmul, attention, linear or layerNorm into memory the
 * addon owns, with nothing to copy here first) go to the addon in one chain,
 * run as one job; the others (copies, packing, the cosine and additive
 * scores) each on their own, after the chain before them has settled. A step
 * whose preparation would copy from memory a queued kernel has yet to write
 * (ChainHazard) waits for the chain, then starts the next one.
 */
export async function runAsync<T>(gen: Steps<T>): Promise<T> {
  let r = gen.next();
  while (!r.done) {
    const done: Promise<void>[] = [];
    let failed = false;
    let failure: unknown;
    let wait = false;
    native.chain(() => {
      // Inside another chain (a trace callback's forwardAsync): the same chain, the same writes.
      const outer = chainWrites.arrays;
      const writes = outer ?? new Set<Tensor['data']>();
      chainWrites.arrays = writes;
      try {
        while (!r.done) {
          const q = queued(r.value);
          if (q === 'wait') wait = true;
          if (!q || q === 'wait') break;
          done.push(q.done);
          for (const t of q.writes) writes.add(t.data);
          r = gen.next(q.value);
        }
      } catch (e) {
        failed = true;
        failure = e;
      } finally {
        chainWrites.arrays = outer;
      }
    });
    // Every queued call settles before the forward goes on or fails: what they use stays alive until then.
    const settled = await Promise.allSettled(done);
    if (failed) throw failure;
    for (const s of settled) if (s.status === 'rejected') throw s.reason;
    if (r.done) break;
    // A hazard with calls of its own to wait for: the step starts the next chain. (With none,
    // the writes were an enclosing chain's, still open: the step runs on its own, after it.)
    if (wait && done.length > 0) continue;
    r = gen.next(await runStepAsync(r.value));
  }
  return r.value;
}

/** dst = src (broadcast to dst's shape). */
function* copy(src: Tensor, dst: Tensor): Steps<void> {
  yield { kind: 'copy', src, dst };
}

/**
 * @internal Reusable buffers for a module's internal temporaries (never
 * returned to the caller): one set per forward in flight, so concurrent
 * forwardAsync calls do not share them.
 */
export class Workspaces {
  private free: Map<string, Tensor>[] = [];

  take(): Map<string, Tensor> {
    return this.free.pop() ?? new Map();
  }

  give(ws: Map<string, Tensor>): void {
    if (this.free.length < 2) this.free.push(ws);
  }

  /**
   * An uninitialised temporary of `shape` named `name` in workspace `ws`
   * (reused across calls; the view too, while the shape stays the same). In
   * the addon's memory whatever made it (a sync forward, say): the async
   * forms that reuse it later then read and write it in place.
   */
  static temp(ws: Map<string, Tensor>, name: string, shape: number[]): Tensor {
    const last = ws.get(`${name}/view`);
    if (last && sameShape(last.shape, shape)) return last;
    const size = shape.reduce((p, d) => p * d, 1);
    let t = ws.get(name);
    if (!t || t.size < size) {
      t = newTensor([Math.max(size, 1)], 'float32', false, 'owned');
      ws.set(name, t);
    }
    const view = t.narrow(0, 0, size).reshape(shape);
    ws.set(`${name}/view`, view);
    return view;
  }
}

/** y = x Wᵀ + b, written into `out` (x [..., in], W [out, in] packed as Wᵀ); the bias is added in the GEMM's epilogue. */
function* linear(x: Tensor, w: PackedMatrix, b: Tensor | undefined, out: Tensor): Steps<Tensor> {
  return (yield { kind: 'matmul', a: x, b: w, options: { out, bias: b } }) as Tensor;
}

/** [B, S, E] -> [B, h, S, E/h], a view. */
function splitHeads(t: Tensor, heads: number): Tensor {
  return t.unflatten(2, [heads, t.shape[2] / heads]).permute([0, 2, 1, 3]);
}

// The extra keys of addBiasKV / addZeroAttn go first internally: attention
// does not depend on the order of the keys, and with them first, what a
// query sees under causal masking is still a prefix of the keys: the extra
// keys, seen by every query (the attention kernels' causalAlways, as
// PyTorch's masks padded with unmasked columns for them allow), then the real
// keys up to the query's causal limit. Weights are reported in PyTorch's
// order, extra keys last.
function* prependRows(t: Tensor, rows: Tensor[], memory: Memory): Steps<Tensor> {
  const [B, S, E] = t.shape;
  const out = newTensor([B, S + rows.length, E], 'float32', false, memory);
  for (const [i, r] of rows.entries()) yield* copy(r, out.narrow(1, i, 1));
  yield* copy(t, out.narrow(1, rows.length, S));
  return out;
}

/** Pads the key axis (the last) of a mask in front with `extra` unmasked columns. */
function* padKeysFront(m: Tensor, extra: number, memory: Memory): Steps<Tensor> {
  const shape = [...m.shape];
  const keys = shape[shape.length - 1];
  shape[shape.length - 1] += extra;
  const out = newTensor(shape, m.dtype, false, memory);
  yield* copy(Tensor.zeros([1], m.dtype), out.narrow(-1, 0, extra));
  yield* copy(m, out.narrow(-1, extra, keys));
  return out;
}

/** Moves the first `extra` key columns of weights to the end. */
function* extraKeysLast(w: Tensor, extra: number, memory: Memory): Steps<Tensor> {
  const keys = w.shape[w.rank - 1] - extra;
  const out = newTensor(w.shape, 'float32', false, memory);
  yield* copy(w.narrow(-1, extra, keys), out.narrow(-1, 0, keys));
  yield* copy(w.narrow(-1, 0, extra), out.narrow(-1, keys, extra));
  return out;
}

// ------------------------------------------------------------ weights

/** The module's configuration, checked. */
interface ModuleConfig {
  embedDim: number;
  numHeads: number;
  kdim: number;
  vdim: number;
  bias: boolean;
  addBiasKV: boolean;
  addZeroAttn: boolean;
}

/** The parameter tensors of a module; shapes match its configuration. */
interface WeightTensors {
  inProjWeight?: Tensor;
  qProjWeight: Tensor;
  kProjWeight: Tensor;
  vProjWeight: Tensor;
  inProjBias?: Tensor;
  outProjWeight: Tensor;
  outProjBias?: Tensor;
  biasK?: Tensor;
  biasV?: Tensor;
}

/** @internal Weights built by this module (from a seed or a state dict), for its constructor. */
class ModuleWeights {
  constructor(readonly tensors: WeightTensors) {}
}

function checkConfig(options: unknown): ModuleConfig & { seed: number } {
  const opts = checkOptions<MultiHeadAttentionOptions>('MultiHeadAttention', options, CTOR_OPTIONS);
  if (options === undefined) throw new TypeError(expected('options object with embedDim and numHeads', 'options', options));
  const E = checkInteger('embedDim', opts.embedDim, 1);
  const h = checkInteger('numHeads', opts.numHeads, 1);
  if (E % h !== 0) {
    throw new RangeError(`Expected numHeads that divides embedDim ${E} but received ${h} of type number`);
  }
  return {
    embedDim: E,
    numHeads: h,
    kdim: opts.kdim === undefined ? E : checkInteger('kdim', opts.kdim, 1),
    vdim: opts.vdim === undefined ? E : checkInteger('vdim', opts.vdim, 1),
    bias: opts.bias === undefined ? true : checkBoolean('bias', opts.bias),
    addBiasKV: opts.addBiasKV === undefined ? false : checkBoolean('addBiasKV', opts.addBiasKV),
    addZeroAttn: opts.addZeroAttn === undefined ? false : checkBoolean('addZeroAttn', opts.addZeroAttn),
    seed: opts.seed === undefined ? 0 : checkInteger('seed', opts.seed, 0, 2 ** 40),
  };
}

/**
 * Fresh weights, deterministic for a seed: Xavier-uniform input projections,
 * the output projection as torch.nn.Linear initialises it (uniform ±1/√E),
 * zero biases, normal bias_k / bias_v.
 */
function initialWeights(c: ModuleConfig, seed: number): ModuleWeights {
  const E = c.embedDim;
  const sub = (i: number) => seed * 16 + i;
  const xavier = (rows: number, cols: number, i: number) => {
    const bound = Math.sqrt(6 / (rows + cols));
    return Tensor.uniform([rows, cols], { seed: sub(i), low: -bound, high: bound });
  };
  const ob = 1 / Math.sqrt(E);
  const std = Math.sqrt(2 / (2 * E));
  const packed = c.kdim === E && c.vdim === E;
  return new ModuleWeights({
    ...(packed
      ? splitInProj(xavier(3 * E, E, 1), E)
      : { qProjWeight: xavier(E, E, 2), kProjWeight: xavier(E, c.kdim, 3), vProjWeight: xavier(E, c.vdim, 4) }),
    outProjWeight: Tensor.uniform([E, E], { seed: sub(5), low: -ob, high: ob }),
    ...(c.bias ? { inProjBias: Tensor.zeros([3 * E]), outProjBias: Tensor.zeros([E]) } : {}),
    ...(c.addBiasKV
      ? { biasK: Tensor.randn([1, 1, E], { seed: sub(6), std }), biasV: Tensor.randn([1, 1, E], { seed: sub(7), std }) }
      : {}),
  });
}

/** The packed [3E, E] input projection and its three [E, E] views. */
function splitInProj(w: Tensor, E: number): Pick<WeightTensors, 'inProjWeight' | 'qProjWeight' | 'kProjWeight' | 'vProjWeight'> {
  return { inProjWeight: w, qProjWeight: w.narrow(0, 0, E), kProjWeight: w.narrow(0, E, E), vProjWeight: w.narrow(0, 2 * E, E) };
}

// ------------------------------------------------------------ state dicts

/** The entries of a state dict under `prefix` that are MultiheadAttention parameters, by their own name. */
function namedEntries(stateDict: Record<string, Tensor> | Map<string, Tensor>, prefix: string): Map<string, unknown> {
  const entries = stateDict instanceof Map ? [...stateDict.entries()] : Object.entries(stateDict);
  const dict = new Map<string, unknown>();
  for (const [key, value] of entries) {
    if (!key.startsWith(prefix)) continue;
    const name = key.slice(prefix.length);
    if (KNOWN_PARAMS.includes(name)) {
      dict.set(name, value);
    } else if (name.startsWith('out_proj.') || (!name.includes('.') && /weight|bias|proj/.test(name))) {
      // In MultiheadAttention's own namespace but not one of its parameters.
      throw new RangeError(`fromStateDict: unexpected tensor '${key}' in the state dict; MultiheadAttention has ${KNOWN_PARAMS.map((n) => prefix + n).join(', ')}`);
    }
  }
  return dict;
}

/** Reads a state dict's tensors by name, checked as float32 and against the shapes they must have. */
class StateDictReader {
  constructor(
    private readonly dict: Map<string, unknown>,
    private readonly prefix: string,
  ) {}

  has(name: string): boolean {
    return this.dict.has(name);
  }

  get(name: string): Tensor | undefined {
    const v = this.dict.get(name);
    if (v === undefined) return undefined;
    return checkTensor(`stateDict['${this.prefix}${name}']`, v, 'float32');
  }

  /** A copy of tensor `name`, which must have shape `want`. */
  shaped(name: string, want: number[]): Tensor {
    const t = this.get(name);
    if (!t) throw new RangeError(`fromStateDict: missing tensor '${this.prefix}${name}' of shape ${shapeString(want)}`);
    if (!sameShape(t.shape, want)) {
      throw new RangeError(`fromStateDict: tensor '${this.prefix}${name}' has shape ${shapeString(t.shape)}, expected ${shapeString(want)}`);
    }
    return t.clone();
  }

  /** E, kdim and vdim from the input projection(s); `packed` when in_proj_weight holds all three. */
  dims(): { E: number; kdim: number; vdim: number; packed: boolean } {
    const pre = this.prefix;
    const packed = this.get('in_proj_weight');
    const q = this.get('q_proj_weight');
    if (packed && (q || this.get('k_proj_weight') || this.get('v_proj_weight'))) {
      throw new RangeError(`fromStateDict: both '${pre}in_proj_weight' and separate q/k/v_proj_weight were given; expected one or the other`);
    }
    if (packed) {
      if (packed.rank !== 2 || packed.shape[0] !== 3 * packed.shape[1]) {
        throw new RangeError(`fromStateDict: tensor '${pre}in_proj_weight' has shape ${shapeString(packed.shape)}, expected [3E, E]`);
      }
      const E = packed.shape[1];
      return { E, kdim: E, vdim: E, packed: true };
    }
    if (!q) {
      throw new RangeError(`fromStateDict: missing tensor '${pre}in_proj_weight' (or '${pre}q_proj_weight', '${pre}k_proj_weight', '${pre}v_proj_weight')`);
    }
    if (q.rank !== 2 || q.shape[0] !== q.shape[1]) {
      throw new RangeError(`fromStateDict: tensor '${pre}q_proj_weight' has shape ${shapeString(q.shape)}, expected [E, E]`);
    }
    const E = q.shape[0];
    const side = (name: string, dim: string): number => {
      const t = this.get(name);
      if (!t) throw new RangeError(`fromStateDict: missing tensor '${pre}${name}' of shape [${E}, ${dim}]`);
      if (t.rank !== 2 || t.shape[0] !== E) throw new RangeError(`fromStateDict: tensor '${pre}${name}' has shape ${shapeString(t.shape)}, expected [${E}, ${dim}]`);
      return t.shape[1];
    };
    const kdim = side('k_proj_weight', 'kdim');
    return { E, kdim, vdim: side('v_proj_weight', 'vdim'), packed: false };
  }
}

/** The configuration and (copied) weights of a PyTorch MultiheadAttention state dict. */
function readStateDict(stateDict: unknown, options: unknown): { options: MultiHeadAttentionOptions; weights: ModuleWeights } {
  if (stateDict === null || typeof stateDict !== 'object') {
    throw new TypeError(expected('object or Map of Tensors', 'stateDict', stateDict));
  }
  const opts = checkOptions<FromStateDictOptions>('fromStateDict', options, ['numHeads', 'prefix', 'addZeroAttn']);
  if (options === undefined) throw new TypeError(expected('options object with numHeads', 'options', options));
  const numHeads = checkInteger('numHeads', opts.numHeads, 1);
  const prefix = opts.prefix ?? '';
  if (typeof prefix !== 'string') throw new TypeError(expected('string', 'prefix', prefix));
  const sd = new StateDictReader(namedEntries(stateDict as Record<string, Tensor>, prefix), prefix);
  const { E, kdim, vdim, packed } = sd.dims();
  if (E % numHeads !== 0) {
    throw new RangeError(`Expected numHeads that divides embedDim ${E} but received ${numHeads} of type number`);
  }
  const bias = sd.has('in_proj_bias') || sd.has('out_proj.bias');
  const addBiasKV = sd.has('bias_k') || sd.has('bias_v');
  const weights = new ModuleWeights({
    ...(packed
      ? splitInProj(sd.shaped('in_proj_weight', [3 * E, E]), E)
      : {
          qProjWeight: sd.shaped('q_proj_weight', [E, E]),
          kProjWeight: sd.shaped('k_proj_weight', [E, kdim]),
          vProjWeight: sd.shaped('v_proj_weight', [E, vdim]),
        }),
    outProjWeight: sd.shaped('out_proj.weight', [E, E]),
    ...(bias ? { inProjBias: sd.shaped('in_proj_bias', [3 * E]), outProjBias: sd.shaped('out_proj.bias', [E]) } : {}),
    ...(addBiasKV ? { biasK: sd.shaped('bias_k', [1, 1, E]), biasV: sd.shaped('bias_v', [1, 1, E]) } : {}),
  });
  const addZeroAttn = opts.addZeroAttn ?? false;
  return { options: { embedDim: E, numHeads, kdim, vdim, bias, addBiasKV, addZeroAttn }, weights };
}

// ------------------------------------------------------------ forward: plan

/** @internal A checked forward call: inputs as [batch, positions, features], masks in attention()'s layouts. */
export interface ForwardPlan {
  fn: string;
  batched: boolean;
  /** query, key and value as 3-D tensors, and whether key and value are query itself / one memory. */
  q3: Tensor;
  k3: Tensor;
  v3: Tensor;
  selfAttention: boolean;
  sameMemory: boolean;
  B: number;
  L: number;
  S: number;
  attnMask: Tensor | undefined;
  keyPaddingMask: Tensor | undefined;
  causal: boolean;
  needWeights: boolean;
  averageWeights: boolean;
  cache: KVCache | undefined;
  /** Extra keys (bias_k / bias_v, the zero key) placed before the others. */
  extra: number;
  /** What results and temporaries are made of: plain memory for forward, the addon's for forwardAsync. */
  memory: Memory;
  /** Keys and values [B, S, E] projected beforehand (projectMemory): only the queries are projected. */
  memoryKV?: { K: Tensor; V: Tensor };
  /** Lengths of the packed sequences of a [totalTokens, E] query, checked. */
  sequenceLengths: Int32Array | undefined;
  note: (stage: string, t: Tensor | readonly number[]) => void;
}

/** The forward options with defaults, checked. */
function checkForwardOptions(opts: Partial<ForwardOptions>) {
  const needWeights = opts.needWeights === undefined ? false : checkBoolean('needWeights', opts.needWeights);
  const averageWeights = opts.averageWeights === undefined ? true : checkBoolean('averageWeights', opts.averageWeights);
  const cache = opts.kvCache;
  if (cache !== undefined && !(cache instanceof KVCache)) throw new TypeError(expected('KVCache', 'kvCache', cache));
  const causal = opts.causal === undefined ? cache !== undefined : checkBoolean('causal', opts.causal);
  const trace = opts.trace;
  if (trace !== undefined && typeof trace !== 'function') throw new TypeError(expected('function', 'trace', trace));
  const note = (stage: string, t: Tensor | readonly number[]) => trace?.(stage, Array.isArray(t) ? t : (t as Tensor).shape);
  return { needWeights, averageWeights, cache, causal, note };
}

/** attnMask in attention()'s layout: PyTorch's [batch·heads, queries, keys] split (before the extra keys are added). */
function forwardAttnMask(mask: unknown, p: ForwardPlan, numHeads: number, keys: number): Tensor {
  const { B, L, fn } = p;
  const h = numHeads;
  const m = checkTensor('attnMask', mask);
  let out = m;
  if (m.rank === 3 && m.shape[0] === B * h && B * h > 1) {
    out = m.unflatten(0, [B, h]);
  } else if (m.rank === 3 && !p.batched && m.shape[0] === h) {
    // Unbatched PyTorch layout [heads, queries, keys].
  } else if (m.rank !== 2 && m.rank !== 4 && !(m.rank === 3 && m.shape[0] === 1)) {
    throw new RangeError(expected(`Tensor [${L}, ${keys}], [${B * h}, ${L}, ${keys}] or one broadcasting to [${B}, ${h}, ${L}, ${keys}]`, 'attnMask', m));
  }
  const shape = out.shape;
  if (shape[shape.length - 2] !== L && shape[shape.length - 2] !== 1) {
    throw new RangeError(`${fn}: attnMask.shape[${m.rank - 2}] is ${m.shape[m.rank - 2]}, expected the query length ${L}`);
  }
  if (shape[shape.length - 1] !== keys) {
    throw new RangeError(`${fn}: attnMask.shape[${m.rank - 1}] is ${m.shape[m.rank - 1]}, expected the key length ${keys}`);
  }
  return out;
}

/** keyPaddingMask as [batch, keys] (before the extra keys are added). */
function forwardKeyPadding(mask: unknown, p: ForwardPlan, keys: number): Tensor {
  const m = checkTensor('keyPaddingMask', mask);
  const want = p.batched ? [p.B, keys] : [keys];
  if (!sameShape(m.shape, want)) {
    throw new RangeError(expected(`Tensor of shape ${shapeString(want)} ([batch, keys])`, 'keyPaddingMask', m));
  }
  return p.batched ? m : m.unsqueeze(0);
}

// ------------------------------------------------------------ forward: compute

/** The projections' results: [B, L, E] queries, [B, S, E] keys and values. */
interface Projected {
  Q: Tensor;
  K: Tensor;
  V: Tensor;
  /** The [B, L, 3E] workspace temporary Q, K and V are views of (one GEMM for self-attention). */
  qkv?: Tensor;
}

/**
 * A workspace's heads for plain self-attention (no masks, cache, extra keys
 * or weights): the [B, h, L, E/h] views of its QKV and merged temporaries and
 * the attention step's options, made once and kept while the temporaries
 * stay the same objects, so that the step repeats its layout (runSync).
 */
interface HeadViews extends AttentionRepeat {
  qkv: Tensor;
  heads: number;
  causal: boolean;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  options: AttentionOptions;
}
const headViewsByMerged = new WeakMap<Tensor, HeadViews>();

function headViews(qkv: Tensor, merged: Tensor, heads: number, causal: boolean): HeadViews {
  const last = headViewsByMerged.get(merged);
  if (last && last.qkv === qkv && last.heads === heads && last.causal === causal) return last;
  const E = merged.shape[2];
  const views: HeadViews = {
    qkv,
    heads,
    causal,
    q: splitHeads(qkv.narrow(2, 0, E), heads),
    k: splitHeads(qkv.narrow(2, E, E), heads),
    v: splitHeads(qkv.narrow(2, 2 * E, E), heads),
    options: { causal, out: splitHeads(merged, heads) },
  };
  headViewsByMerged.set(merged, views);
  return views;
}

/** Mean of weights [B, h, L, S] over the heads: (1/h) · ones[1, h] · W[b] per batch item, as one batched GEMM. */
function* averageHeads(weights: Tensor): Steps<Tensor> {
  const [B, h, L, S] = weights.shape;
  const flat = weights.reshape([B, h, L * S]);
  const mean = (yield { kind: 'matmul', a: Tensor.full([1, h], 1), b: flat, options: { alpha: 1 / h } }) as Tensor;
  return mean.reshape([B, L, S]);
}

// ------------------------------------------------------------ the module

export class MultiHeadAttention {
  readonly embedDim: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly kdim: number;
  readonly vdim: number;
  readonly bias: boolean;
  readonly addBiasKV: boolean;
  readonly addZeroAttn: boolean;

  /** [3E, E] when kdim == vdim == E (then q/k/vProjWeight are views of it). */
  readonly inProjWeight?: Tensor;
  readonly qProjWeight: Tensor;
  readonly kProjWeight: Tensor;
  readonly vProjWeight: Tensor;
  /** [3E] */
  readonly inProjBias?: Tensor;
  readonly outProjWeight: Tensor;
  readonly outProjBias?: Tensor;
  /** [1, 1, E] */
  readonly biasK?: Tensor;
  readonly biasV?: Tensor;

  /**
   * A module with freshly initialised weights: Xavier-uniform input
   * projections, the output projection as torch.nn.Linear initialises it
   * (uniform ±1/√E), zero biases; deterministic for a seed.
   */
  constructor(options: MultiHeadAttentionOptions);
  /** @internal A module with the given weights (fromStateDict). */
  constructor(options: MultiHeadAttentionOptions, weights: ModuleWeights);
  constructor(options: MultiHeadAttentionOptions, weights?: ModuleWeights) {
    const c = checkConfig(options);
    if (weights !== undefined && !(weights instanceof ModuleWeights)) {
      throw new TypeError(expected('no second argument', 'MultiHeadAttention', weights));
    }
    this.embedDim = c.embedDim;
    this.numHeads = c.numHeads;
    this.headDim = c.embedDim / c.numHeads;
    this.kdim = c.kdim;
    this.vdim = c.vdim;
    this.bias = c.bias;
    this.addBiasKV = c.addBiasKV;
    this.addZeroAttn = c.addZeroAttn;
    const w = (weights ?? initialWeights(c, c.seed)).tensors;
    this.inProjWeight = w.inProjWeight;
    this.qProjWeight = w.qProjWeight;
    this.kProjWeight = w.kProjWeight;
    this.vProjWeight = w.vProjWeight;
    this.inProjBias = w.inProjBias;
    this.outProjWeight = w.outProjWeight;
    this.outProjBias = w.outProjBias;
    this.biasK = w.biasK;
    this.biasV = w.biasV;
  }

  /**
   * A module from a PyTorch MultiheadAttention state dict (for instance
   * loadSafetensors(file).tensors): in_proj_weight [3E, E] or
   * q_proj_weight / k_proj_weight / v_proj_weight, in_proj_bias,
   * out_proj.weight, out_proj.bias, and bias_k / bias_v when present. Keys
   * under `prefix` in the module's own namespace that are not among these
   * (out_proj.anything, or a top-level name with weight, bias or proj in it)
   * are rejected by name; other keys (another module's, a fixture's inputs)
   * are ignored. The tensors are copied.
   */
  static fromStateDict(
    stateDict: Record<string, Tensor> | Map<string, Tensor>,
    options: FromStateDictOptions,
  ): MultiHeadAttention {
    const { options: config, weights } = readStateDict(stateDict, options);
    return new MultiHeadAttention(config, weights);
  }

  /** The parameters under PyTorch's names (the module's own tensors, not copies). */
  stateDict(): Record<string, Tensor> {
    const sd: Record<string, Tensor> = {};
    if (this.inProjWeight) {
      sd.in_proj_weight = this.inProjWeight;
    } else {
      sd.q_proj_weight = this.qProjWeight;
      sd.k_proj_weight = this.kProjWeight;
      sd.v_proj_weight = this.vProjWeight;
    }
    if (this.biasK && this.biasV) {
      sd.bias_k = this.biasK;
      sd.bias_v = this.biasV;
    }
    if (this.inProjBias) sd.in_proj_bias = this.inProjBias;
    sd['out_proj.weight'] = this.outProjWeight;
    if (this.outProjBias) sd['out_proj.bias'] = this.outProjBias;
    return sd;
  }

  private packedWeights = new Map<string, PackedMatrix>();
  private workspaces = new Workspaces();

  /** Bumped by refreshWeights: a packing that started before it is not kept. */
  private weightsVersion = 0;

  /** @internal The projection weight `name` packed as Wᵀ for the GEMM, packed on first use. */
  *packed(name: string, w: Tensor): Steps<PackedMatrix> {
    let p = this.packedWeights.get(name);
    if (!p) {
      const version = this.weightsVersion;
      p = (yield { kind: 'pack', w }) as PackedMatrix;
      if (version === this.weightsVersion) this.packedWeights.set(name, p);
    }
    return p;
  }

  /**
   * The projection weights are packed for the GEMM kernel on first use. After
   * changing a weight tensor in place, call this so the next forward repacks.
   */
  refreshWeights(): void {
    this.packedWeights.clear();
    ++this.weightsVersion;
  }

  /** A cache for incremental decoding with this module (see ForwardOptions.kvCache). */
  createKVCache(options?: { batch?: number; capacity?: number }): KVCache {
    const opts = checkOptions<{ batch?: number; capacity?: number }>('createKVCache', options, ['batch', 'capacity']);
    return new KVCache(opts.batch ?? 1, this.numHeads, this.headDim, opts.capacity ?? 64);
  }

  /**
   * query [batch, queries, embedDim] (or unbatched [queries, embedDim]); key
   * [batch, keys, kdim] defaults to query; value [batch, keys, vdim] defaults
   * to key.
   */
  forward(query: Tensor, key: Tensor | undefined, value: Tensor | undefined, options: ForwardOptions & { needWeights: true }): ForwardResultWithWeights;
  forward(query: Tensor, key?: Tensor, value?: Tensor, options?: ForwardOptions): ForwardResult;
  forward(query: Tensor, key?: Tensor, value?: Tensor, options?: ForwardOptions): ForwardResult {
    const plan = this.planForward(query, key, value, options, 'forward');
    const ws = this.workspaces.take();
    try {
      return runSync(this.compute(plan, ws));
    } finally {
      this.workspaces.give(ws);
    }
  }

  /** forward off the main thread. */
  forwardAsync(
    query: Tensor,
    key: Tensor | undefined,
    value: Tensor | undefined,
    options: ForwardOptions & { needWeights: true },
  ): Promise<ForwardResultWithWeights>;
  forwardAsync(query: Tensor, key?: Tensor, value?: Tensor, options?: ForwardOptions): Promise<ForwardResult>;
  async forwardAsync(query: Tensor, key?: Tensor, value?: Tensor, options?: ForwardOptions): Promise<ForwardResult> {
    const plan = this.planForward(query, key, value, options, 'forwardAsync');
    const ws = this.workspaces.take();
    try {
      return await runAsync(this.compute(plan, ws));
    } finally {
      this.workspaces.give(ws);
    }
  }

  /** query, key and value as float32 tensors (key defaults to query, value to key). */
  private checkInputs(query: unknown, key: unknown, value: unknown): [Tensor, Tensor, Tensor] {
    const Q0 = checkTensor('query', query, 'float32');
    const K0 = key === undefined ? Q0 : checkTensor('key', key, 'float32');
    const V0 = value === undefined ? K0 : checkTensor('value', value, 'float32');
    return [Q0, K0, V0];
  }

  /** Ranks, feature sizes, lengths and batch sizes against the module and each other. */
  private checkShapes(Q0: Tensor, K0: Tensor, V0: Tensor, fn: string): void {
    if (Q0.rank !== 2 && Q0.rank !== 3) {
      throw new RangeError(expected('Tensor [batch, queries, embedDim] or [queries, embedDim]', 'query', Q0));
    }
    for (const [name, t] of [
      ['key', K0],
      ['value', V0],
    ] as const) {
      if (t.rank !== Q0.rank) throw new RangeError(`${fn}: ${name} has rank ${t.rank} but query has rank ${Q0.rank} (${describe(t)})`);
    }
    const r = Q0.rank;
    const E = this.embedDim;
    if (Q0.shape[r - 1] !== E) throw new RangeError(`${fn}: query.shape[${r - 1}] is ${Q0.shape[r - 1]}, expected embedDim ${E}`);
    if (K0.shape[r - 1] !== this.kdim) throw new RangeError(`${fn}: key.shape[${r - 1}] is ${K0.shape[r - 1]}, expected kdim ${this.kdim}`);
    if (V0.shape[r - 1] !== this.vdim) throw new RangeError(`${fn}: value.shape[${r - 1}] is ${V0.shape[r - 1]}, expected vdim ${this.vdim}`);
    if (K0.shape[r - 2] !== V0.shape[r - 2]) {
      throw new RangeError(`${fn}: key and value lengths differ: key.shape[${r - 2}] is ${K0.shape[r - 2]} but value.shape[${r - 2}] is ${V0.shape[r - 2]}`);
    }
    if (r === 3 && (K0.shape[0] !== Q0.shape[0] || V0.shape[0] !== Q0.shape[0])) {
      throw new RangeError(`${fn}: batch sizes differ: query ${Q0.shape[0]}, key ${K0.shape[0]}, value ${V0.shape[0]}`);
    }
  }

  /** A kvCache must be for self-attention with this module's heads and the query's batch. */
  private checkCache(cache: KVCache, query: unknown, key: unknown, value: unknown, B: number, fn: string): void {
    const h = this.numHeads;
    if (key !== undefined && key !== query) throw new RangeError(`${fn}: a kvCache is for self-attention; pass only the query (the new steps)`);
    if (value !== undefined && value !== query && value !== key) throw new RangeError(`${fn}: a kvCache is for self-attention; pass only the query (the new steps)`);
    if (cache.numHeads !== h || cache.headDim !== this.headDim) {
      throw new RangeError(`${fn}: kvCache has ${cache.numHeads} heads of ${cache.headDim}, this module ${h} of ${this.headDim}`);
    }
    if (cache.batch !== B) throw new RangeError(`${fn}: kvCache holds batch ${cache.batch} but query has batch ${B}`);
    if (this.addBiasKV || this.addZeroAttn) throw new RangeError(`${fn}: kvCache does not support addBiasKV or addZeroAttn`);
  }

  /** Packed input ([totalTokens, E] self-attention with sequenceLengths), checked; its lengths. */
  private checkPacked(opts: Partial<ForwardOptions>, Q0: Tensor, query: unknown, key: unknown, value: unknown, fn: string): Int32Array {
    if (Q0.rank !== 2) {
      throw new RangeError(`${fn}: with sequenceLengths, query is the packed tokens [totalTokens, embedDim]; received ${describe(Q0)}`);
    }
    if ((key !== undefined && key !== query) || (value !== undefined && value !== query)) {
      throw new RangeError(`${fn}: sequenceLengths is for self-attention; pass only the query (key and value are the query)`);
    }
    for (const option of ['kvCache', 'attnMask', 'keyPaddingMask'] as const) {
      if (opts[option] !== undefined) throw new RangeError(`${fn}: sequenceLengths cannot be combined with ${option}`);
    }
    if (opts.needWeights === true) throw new RangeError(`${fn}: sequenceLengths cannot be combined with needWeights`);
    if (this.addBiasKV || this.addZeroAttn) throw new RangeError(`${fn}: sequenceLengths does not support addBiasKV or addZeroAttn`);
    return checkSequenceLengths(opts.sequenceLengths, Q0.shape[0], fn).lengths;
  }

  /** @internal Checks a forward call and lays out its inputs and masks; runs no kernel. */
  planForward(query: unknown, key: unknown, value: unknown, options: unknown, fn: string): ForwardPlan {
    const [Q0, K0, V0] = this.checkInputs(query, key, value);
    const opts = checkOptions<ForwardOptions>(fn, options, FORWARD_OPTIONS);
    this.checkShapes(Q0, K0, V0, fn);
    const sequenceLengths = opts.sequenceLengths === undefined ? undefined : this.checkPacked(opts, Q0, query, key, value, fn);
    const flags = checkForwardOptions(opts);
    const batched = Q0.rank === 3;
    const lift = (t: Tensor) => (batched ? t : t.unsqueeze(0));
    const [q3, k3, v3] = [lift(Q0), lift(K0), lift(V0)];
    const [B, L] = q3.shape;
    const S = k3.shape[1];
    if (flags.cache) this.checkCache(flags.cache, query, key, value, B, fn);
    const extra = (this.addBiasKV ? 1 : 0) + (this.addZeroAttn ? 1 : 0);
    const plan: ForwardPlan = {
      fn,
      batched,
      q3,
      k3,
      v3,
      selfAttention: K0 === Q0 && V0 === Q0,
      sameMemory: V0 === K0,
      B,
      L,
      S,
      attnMask: undefined,
      keyPaddingMask: undefined,
      extra,
      memory: resultMemory(fn),
      sequenceLengths,
      ...flags,
    };
    // Masks cover the keys given and cached, before the extra ones.
    const keys = (flags.cache ? flags.cache.length : 0) + S;
    if (opts.attnMask !== undefined) plan.attnMask = forwardAttnMask(opts.attnMask, plan, this.numHeads, keys);
    if (opts.keyPaddingMask !== undefined) plan.keyPaddingMask = forwardKeyPadding(opts.keyPaddingMask, plan, keys);
    return plan;
  }

  /** Q = XW^Q, K = XW^K, V = XW^V: one GEMM for self-attention, one for K and V over one memory. */
  private *project(p: ForwardPlan, temp: (name: string, shape: number[]) => Tensor): Steps<Projected> {
    const E = this.embedDim;
    const { B, L, S, note } = p;
    const bias = this.inProjBias;
    note('input', p.q3);
    if (p.memoryKV) {
      // Keys and values projected once for many queries (a decoder's cross-attention cache).
      const Q = yield* linear(p.q3, yield* this.packed('q', this.qProjWeight), bias?.narrow(0, 0, E), temp('q', [B, L, E]));
      return { Q, ...p.memoryKV };
    }
    if (this.inProjWeight && p.selfAttention) {
      const qkv = yield* linear(p.q3, yield* this.packed('qkv', this.inProjWeight), bias, temp('qkv', [B, L, 3 * E]));
      note('QKV = X · [W^Q W^K W^V]ᵀ', qkv);
      const Q = qkv.narrow(2, 0, E);
      note('Q, K, V (views of QKV)', Q);
      return { Q, K: qkv.narrow(2, E, E), V: qkv.narrow(2, 2 * E, E), qkv };
    }
    const Q = yield* linear(p.q3, yield* this.packed('q', this.qProjWeight), bias?.narrow(0, 0, E), temp('q', [B, L, E]));
    let K: Tensor, V: Tensor;
    if (this.inProjWeight && p.sameMemory) {
      const kv = yield* linear(p.k3, yield* this.packed('kv', this.inProjWeight.narrow(0, E, 2 * E)), bias?.narrow(0, E, 2 * E), temp('kv', [B, S, 2 * E]));
      K = kv.narrow(2, 0, E);
      V = kv.narrow(2, E, E);
    } else {
      K = yield* linear(p.k3, yield* this.packed('k', this.kProjWeight), bias?.narrow(0, E, E), temp('k', [B, S, E]));
      V = yield* linear(p.v3, yield* this.packed('v', this.vProjWeight), bias?.narrow(0, 2 * E, E), temp('v', [B, S, E]));
    }
    note('Q = X · W^Q', Q);
    note('K = X · W^K', K);
    note('V = X · W^V', V);
    return { Q, K, V };
  }

  /** K and V with the extra keys (bias_k / bias_v, the zero key) in front. */
  private *withExtraKeys({ Q, K, V }: Projected, memory: Memory): Steps<Projected> {
    const zero = Tensor.zeros([1, 1, this.embedDim]);
    const rows = (b: Tensor | undefined) => [...(b ? [b] : []), ...(this.addZeroAttn ? [zero] : [])];
    return { Q, K: yield* prependRows(K, rows(this.biasK), memory), V: yield* prependRows(V, rows(this.biasV), memory) };
  }

  /**
   * @internal The keys and values of one memory [B, S, kdim] for many
   * queries, written into `out` [B, S, 2E] (K, then V): with a packed input
   * projection, one GEMM. Pass them as the plan's memoryKV.
   */
  *projectMemory(memory: Tensor, out: Tensor): Steps<{ K: Tensor; V: Tensor }> {
    const E = this.embedDim;
    const bias = this.inProjBias;
    if (this.inProjWeight) {
      yield* linear(memory, yield* this.packed('kv', this.inProjWeight.narrow(0, E, 2 * E)), bias?.narrow(0, E, 2 * E), out);
    } else {
      yield* linear(memory, yield* this.packed('k', this.kProjWeight), bias?.narrow(0, E, E), out.narrow(2, 0, E));
      yield* linear(memory, yield* this.packed('v', this.vProjWeight), bias?.narrow(0, 2 * E, E), out.narrow(2, E, E));
    }
    return { K: out.narrow(2, 0, E), V: out.narrow(2, E, E) };
  }

  /** The kernels of a planned forward, as steps that runSync or runAsync carry out. */
  private *compute(p: ForwardPlan, ws: Map<string, Tensor>): Steps<ForwardResult> {
    const { B, L, note } = p;
    const E = this.embedDim;
    const { merged, att } = yield* this.attend(p, ws);

    // Output projection W^O.
    const y = yield* linear(merged, yield* this.packed('out', this.outProjWeight), this.outProjBias, newTensor([B, L, E], 'float32', false, p.memory));
    note('output = concat · W^O', y);

    let weights = att.weights;
    if (weights && p.extra > 0) weights = yield* extraKeysLast(weights, p.extra, p.memory);
    if (weights && p.averageWeights) weights = yield* averageHeads(weights);
    const output = p.batched ? y : y.reshape([L, E]);
    if (weights && !p.batched) weights = weights.reshape(dims(weights.shape, 1));
    return weights ? { output, weights } : { output };
  }

  /**
   * @internal The projections and attention of a planned forward: the heads
   * merged into [B, L, E] (a view of workspace `ws`, before the output
   * projection), and attention's result (with the weights when asked).
   */
  *attend(p: ForwardPlan, ws: Map<string, Tensor>): Steps<{ merged: Tensor; att: AttentionResult }> {
    const temp = (name: string, shape: number[]) => Workspaces.temp(ws, name, shape);
    const E = this.embedDim;
    const h = this.numHeads;
    const { B, L, note } = p;
    let proj = yield* this.project(p, temp);
    if (p.extra > 0) proj = yield* this.withExtraKeys(proj, p.memory);

    // Split into h heads of E/h: [B, S, E] -> [B, S, h, E/h] -> [B, h, S, E/h] (views).
    note('split heads', [B, L, h, this.headDim]);
    // Attention per head, written straight into the merged [B, L, E] layout.
    const merged = temp('merged', [B, L, E]);
    const plain = !p.cache && p.extra === 0 && !p.attnMask && !p.keyPaddingMask && !p.needWeights && !p.sequenceLengths;
    let step: Extract<Step, { kind: 'attention' }>;
    if (plain && proj.qkv) {
      const views = headViews(proj.qkv, merged, h, p.causal);
      note('heads first', views.q);
      step = { kind: 'attention', q: views.q, k: views.k, v: views.v, options: views.options, causalAlways: 0, repeat: views };
    } else {
      step = yield* this.heads(p, proj, merged);
    }
    const att = (yield step) as AttentionResult;
    note('softmax(QKᵀ/√d_k) · V per head', step.options.out as Tensor);
    note('concat heads', merged);
    return { merged, att };
  }

  /** The attention step over heads split from the projections (any options: masks, cache, extra keys, weights). */
  private *heads(p: ForwardPlan, proj: Projected, merged: Tensor): Steps<Extract<Step, { kind: 'attention' }>> {
    const h = this.numHeads;
    const { causal, needWeights, sequenceLengths, note } = p;
    const Qh = splitHeads(proj.Q, h);
    let Kh = splitHeads(proj.K, h);
    let Vh = splitHeads(proj.V, h);
    note('heads first', Qh);
    if (p.cache) {
      ({ keys: Kh, values: Vh } = yield* p.cache.append(Kh, Vh));
      note('cached keys', Kh);
    }
    // The masks cover the keys given (and cached); the extra keys are never masked.
    const attnMask = p.attnMask && p.extra > 0 ? yield* padKeysFront(p.attnMask, p.extra, p.memory) : p.attnMask;
    const keyPaddingMask =
      p.keyPaddingMask && p.extra > 0 ? yield* padKeysFront(p.keyPaddingMask, p.extra, p.memory) : p.keyPaddingMask;
    const options = { attnMask, keyPaddingMask, causal, needWeights, out: splitHeads(merged, h), sequenceLengths };
    return { kind: 'attention', q: Qh, k: Kh, v: Vh, options, causalAlways: p.extra };
  }
}
