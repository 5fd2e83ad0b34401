// Multi-head attention as the Transformer uses it (and as
// torch.nn.MultiheadAttention with batch_first=True computes it):
// Q = XW^Q, K = XW^K, V = XW^V; split into h heads of E/h; scaled dot-product
// attention per head; concatenate; project with W^O.
import { attention, attentionAsync, type AttentionResult } from './attention';
import { matmul, matmulAsync, packMatrix, PackedMatrix, type MatmulOptions } from './ops';
import { Tensor, checkTensor } from './tensor';
import { checkBoolean, checkInteger, checkOptions, describe, expected, sameShape, shapeString } from './validate';

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
}

export interface ForwardResult {
  /** [batch, queries, embedDim] ([queries, embedDim] unbatched) */
  output: Tensor;
  /** See ForwardOptions.averageWeights. */
  weights?: Tensor;
}

export interface FromStateDictOptions {
  numHeads: number;
  /** Prepended to every name, e.g. 'encoder.layers.0.self_attn.' */
  prefix?: string;
  addZeroAttn?: boolean;
}

const FORWARD_OPTIONS = ['keyPaddingMask', 'attnMask', 'causal', 'needWeights', 'averageWeights', 'kvCache', 'trace'] as const;
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
    this.keys = Tensor.zeros([batch, numHeads, capacity, headDim]);
    this.values = Tensor.zeros([batch, numHeads, capacity, headDim]);
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
  append(k: Tensor, v: Tensor): { keys: Tensor; values: Tensor } {
    const steps = k.shape[2];
    const need = this.len + steps;
    if (need > this.capacity) {
      const cap = Math.max(need, 2 * this.capacity);
      const grow = (old: Tensor) => {
        const t = Tensor.zeros([this.batch, this.numHeads, cap, this.headDim]);
        if (this.len > 0) t.narrow(2, 0, this.len).assign(old.narrow(2, 0, this.len));
        return t;
      };
      this.keys = grow(this.keys);
      this.values = grow(this.values);
    }
    if (steps > 0) {
      this.keys.narrow(2, this.len, steps).assign(k);
      this.values.narrow(2, this.len, steps).assign(v);
    }
    this.len = need;
    return { keys: this.keys.narrow(2, 0, this.len), values: this.values.narrow(2, 0, this.len) };
  }
}

// ------------------------------------------------------------ sync / async steps

type Step =
  | { kind: 'matmul'; a: Tensor; b: Tensor | PackedMatrix; options: MatmulOptions }
  | { kind: 'attention'; q: Tensor; k: Tensor; v: Tensor; options: Parameters<typeof attention>[3] };

type Steps<T> = Generator<Step, T, Tensor & AttentionResult>;

function runSync<T>(gen: Steps<T>): T {
  let r = gen.next();
  while (!r.done) {
    const s = r.value;
    const value = s.kind === 'matmul' ? matmul(s.a, s.b, s.options) : attention(s.q, s.k, s.v, s.options);
    r = gen.next(value as Tensor & AttentionResult);
  }
  return r.value;
}

async function runAsync<T>(gen: Steps<T>): Promise<T> {
  let r = gen.next();
  while (!r.done) {
    const s = r.value;
    const value = s.kind === 'matmul' ? await matmulAsync(s.a, s.b, s.options) : await attentionAsync(s.q, s.k, s.v, s.options);
    r = gen.next(value as Tensor & AttentionResult);
  }
  return r.value;
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
// does not depend on the order of the keys, and with them first, causal
// masking over all keys is still a prefix (every query sees the extra keys,
// as PyTorch's padded masks allow). Weights are reported in PyTorch's order,
// extra keys last.
function prependRows(t: Tensor, rows: Tensor[]): Tensor {
  const [B, S, E] = t.shape;
  const out = Tensor.zeros([B, S + rows.length, E]);
  rows.forEach((r, i) => out.narrow(1, i, 1).assign(r));
  out.narrow(1, rows.length, S).assign(t);
  return out;
}

/** Pads the key axis (the last) of a mask in front with `extra` unmasked columns. */
function padKeysFront(m: Tensor, extra: number): Tensor {
  const shape = m.shape.slice();
  const keys = shape[shape.length - 1];
  shape[shape.length - 1] += extra;
  const out = Tensor.zeros(shape, m.dtype);
  out.narrow(-1, extra, keys).assign(m);
  return out;
}

/** Moves the first `extra` key columns of weights to the end. */
function extraKeysLast(w: Tensor, extra: number): Tensor {
  const keys = w.shape[w.rank - 1] - extra;
  const out = Tensor.zeros(w.shape);
  out.narrow(-1, 0, keys).assign(w.narrow(-1, extra, keys));
  out.narrow(-1, keys, extra).assign(w.narrow(-1, 0, extra));
  return out;
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
  constructor(options: MultiHeadAttentionOptions) {
    const opts = checkOptions<MultiHeadAttentionOptions>('MultiHeadAttention', options, CTOR_OPTIONS);
    if (options === undefined) throw new TypeError(expected('options object with embedDim and numHeads', 'options', options));
    const E = checkInteger('embedDim', opts.embedDim, 1);
    const h = checkInteger('numHeads', opts.numHeads, 1);
    if (E % h !== 0) {
      throw new RangeError(`Expected numHeads that divides embedDim ${E} but received ${h} of type number`);
    }
    this.embedDim = E;
    this.numHeads = h;
    this.headDim = E / h;
    this.kdim = opts.kdim === undefined ? E : checkInteger('kdim', opts.kdim, 1);
    this.vdim = opts.vdim === undefined ? E : checkInteger('vdim', opts.vdim, 1);
    this.bias = opts.bias === undefined ? true : checkBoolean('bias', opts.bias);
    this.addBiasKV = opts.addBiasKV === undefined ? false : checkBoolean('addBiasKV', opts.addBiasKV);
    this.addZeroAttn = opts.addZeroAttn === undefined ? false : checkBoolean('addZeroAttn', opts.addZeroAttn);
    const seed = opts.seed === undefined ? 0 : checkInteger('seed', opts.seed, 0, 2 ** 40);
    const sub = (i: number) => seed * 16 + i;
    const xavier = (rows: number, cols: number, i: number) => {
      const bound = Math.sqrt(6 / (rows + cols));
      return Tensor.uniform([rows, cols], { seed: sub(i), low: -bound, high: bound });
    };
    if (this.kdim === E && this.vdim === E) {
      this.inProjWeight = xavier(3 * E, E, 1);
      this.qProjWeight = this.inProjWeight.narrow(0, 0, E);
      this.kProjWeight = this.inProjWeight.narrow(0, E, E);
      this.vProjWeight = this.inProjWeight.narrow(0, 2 * E, E);
    } else {
      this.qProjWeight = xavier(E, E, 2);
      this.kProjWeight = xavier(E, this.kdim, 3);
      this.vProjWeight = xavier(E, this.vdim, 4);
    }
    const ob = 1 / Math.sqrt(E);
    this.outProjWeight = Tensor.uniform([E, E], { seed: sub(5), low: -ob, high: ob });
    if (this.bias) {
      this.inProjBias = Tensor.zeros([3 * E]);
      this.outProjBias = Tensor.zeros([E]);
    }
    if (this.addBiasKV) {
      const std = Math.sqrt(2 / (2 * E));
      this.biasK = Tensor.randn([1, 1, E], { seed: sub(6), std });
      this.biasV = Tensor.randn([1, 1, E], { seed: sub(7), std });
    }
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
    if (stateDict === null || typeof stateDict !== 'object') {
      throw new TypeError(expected('object or Map of Tensors', 'stateDict', stateDict));
    }
    const opts = checkOptions<FromStateDictOptions>('fromStateDict', options, ['numHeads', 'prefix', 'addZeroAttn']);
    if (options === undefined) throw new TypeError(expected('options object with numHeads', 'options', options));
    const numHeads = checkInteger('numHeads', opts.numHeads, 1);
    const prefix = opts.prefix ?? '';
    if (typeof prefix !== 'string') throw new TypeError(expected('string', 'prefix', prefix));
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
    const get = (name: string): Tensor | undefined => {
      const v = dict.get(name);
      if (v === undefined) return undefined;
      return checkTensor(`stateDict['${prefix}${name}']`, v, 'float32');
    };
    const shaped = (name: string, want: number[]): Tensor => {
      const t = get(name);
      if (!t) throw new RangeError(`fromStateDict: missing tensor '${prefix}${name}' of shape ${shapeString(want)}`);
      if (!sameShape(t.shape, want)) {
        throw new RangeError(`fromStateDict: tensor '${prefix}${name}' has shape ${shapeString(t.shape)}, expected ${shapeString(want)}`);
      }
      return t.clone();
    };

    const packed = get('in_proj_weight');
    const q = get('q_proj_weight');
    if (packed && (q || get('k_proj_weight') || get('v_proj_weight'))) {
      throw new RangeError(`fromStateDict: both '${prefix}in_proj_weight' and separate q/k/v_proj_weight were given; expected one or the other`);
    }
    let E: number, kdim: number, vdim: number;
    if (packed) {
      if (packed.rank !== 2 || packed.shape[0] !== 3 * packed.shape[1]) {
        throw new RangeError(`fromStateDict: tensor '${prefix}in_proj_weight' has shape ${shapeString(packed.shape)}, expected [3E, E]`);
      }
      E = kdim = vdim = packed.shape[1];
    } else if (q) {
      if (q.rank !== 2 || q.shape[0] !== q.shape[1]) {
        throw new RangeError(`fromStateDict: tensor '${prefix}q_proj_weight' has shape ${shapeString(q.shape)}, expected [E, E]`);
      }
      E = q.shape[0];
      const k = get('k_proj_weight');
      const v = get('v_proj_weight');
      if (!k) throw new RangeError(`fromStateDict: missing tensor '${prefix}k_proj_weight' of shape [${E}, kdim]`);
      if (!v) throw new RangeError(`fromStateDict: missing tensor '${prefix}v_proj_weight' of shape [${E}, vdim]`);
      if (k.rank !== 2 || k.shape[0] !== E) throw new RangeError(`fromStateDict: tensor '${prefix}k_proj_weight' has shape ${shapeString(k.shape)}, expected [${E}, kdim]`);
      if (v.rank !== 2 || v.shape[0] !== E) throw new RangeError(`fromStateDict: tensor '${prefix}v_proj_weight' has shape ${shapeString(v.shape)}, expected [${E}, vdim]`);
      kdim = k.shape[1];
      vdim = v.shape[1];
    } else {
      throw new RangeError(`fromStateDict: missing tensor '${prefix}in_proj_weight' (or '${prefix}q_proj_weight', '${prefix}k_proj_weight', '${prefix}v_proj_weight')`);
    }
    if (E % numHeads !== 0) {
      throw new RangeError(`Expected numHeads that divides embedDim ${E} but received ${numHeads} of type number`);
    }
    const hasBias = dict.has('in_proj_bias') || dict.has('out_proj.bias');
    const hasBiasKV = dict.has('bias_k') || dict.has('bias_v');
    const m = new MultiHeadAttention({
      embedDim: E,
      numHeads,
      kdim,
      vdim,
      bias: hasBias,
      addBiasKV: hasBiasKV,
      addZeroAttn: opts.addZeroAttn ?? false,
    });
    const self = m as { -readonly [K in keyof MultiHeadAttention]: MultiHeadAttention[K] };
    if (packed) {
      self.inProjWeight = shaped('in_proj_weight', [3 * E, E]);
      self.qProjWeight = self.inProjWeight.narrow(0, 0, E);
      self.kProjWeight = self.inProjWeight.narrow(0, E, E);
      self.vProjWeight = self.inProjWeight.narrow(0, 2 * E, E);
    } else {
      self.qProjWeight = shaped('q_proj_weight', [E, E]);
      self.kProjWeight = shaped('k_proj_weight', [E, kdim]);
      self.vProjWeight = shaped('v_proj_weight', [E, vdim]);
    }
    self.outProjWeight = shaped('out_proj.weight', [E, E]);
    if (hasBias) {
      self.inProjBias = shaped('in_proj_bias', [3 * E]);
      self.outProjBias = shaped('out_proj.bias', [E]);
    }
    if (hasBiasKV) {
      self.biasK = shaped('bias_k', [1, 1, E]);
      self.biasV = shaped('bias_v', [1, 1, E]);
    }
    return m;
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
  /** Reusable buffers for a forward's internal temporaries (never returned to the caller). */
  private workspaces: Map<string, Tensor>[] = [];

  private takeWorkspace(): Map<string, Tensor> {
    return this.workspaces.pop() ?? new Map();
  }

  private returnWorkspace(ws: Map<string, Tensor>): void {
    if (this.workspaces.length < 2) this.workspaces.push(ws);
  }

  /** An uninitialised temporary of `shape` from the workspace (reused across calls). */
  private static temp(ws: Map<string, Tensor>, name: string, shape: number[]): Tensor {
    const size = shape.reduce((p, d) => p * d, 1);
    let t = ws.get(name);
    if (!t || t.size < size) {
      t = Tensor.empty([Math.max(size, 1)]);
      ws.set(name, t);
    }
    return t.narrow(0, 0, size).reshape(shape);
  }

  /** The projection weight `name` packed as Wᵀ for the GEMM, packed on first use. */
  private packed(name: string, w: Tensor): PackedMatrix {
    let p = this.packedWeights.get(name);
    if (!p) {
      p = packMatrix(w, { transpose: true });
      this.packedWeights.set(name, p);
    }
    return p;
  }

  /**
   * The projection weights are packed for the GEMM kernel on first use. After
   * changing a weight tensor in place, call this so the next forward repacks.
   */
  refreshWeights(): void {
    this.packedWeights.clear();
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
  forward(query: Tensor, key?: Tensor, value?: Tensor, options?: ForwardOptions): ForwardResult {
    const ws = this.takeWorkspace();
    try {
      return runSync(this.steps(query, key, value, options, 'forward', ws));
    } finally {
      this.returnWorkspace(ws);
    }
  }

  /** forward off the main thread. */
  async forwardAsync(query: Tensor, key?: Tensor, value?: Tensor, options?: ForwardOptions): Promise<ForwardResult> {
    const ws = this.takeWorkspace();
    try {
      return await runAsync(this.steps(query, key, value, options, 'forwardAsync', ws));
    } finally {
      this.returnWorkspace(ws);
    }
  }

  private *steps(
    query: unknown,
    key: unknown,
    value: unknown,
    options: unknown,
    fn: string,
    ws: Map<string, Tensor>,
  ): Steps<ForwardResult> {
    const temp = (name: string, shape: number[]) => MultiHeadAttention.temp(ws, name, shape);
    const E = this.embedDim;
    const h = this.numHeads;
    const Q0 = checkTensor('query', query, 'float32');
    const K0 = key === undefined ? Q0 : checkTensor('key', key, 'float32');
    const V0 = value === undefined ? K0 : checkTensor('value', value, 'float32');
    const opts = checkOptions<ForwardOptions>(fn, options, FORWARD_OPTIONS);
    if (Q0.rank !== 2 && Q0.rank !== 3) {
      throw new RangeError(expected('Tensor [batch, queries, embedDim] or [queries, embedDim]', 'query', Q0));
    }
    const batched = Q0.rank === 3;
    for (const [name, t] of [
      ['key', K0],
      ['value', V0],
    ] as const) {
      if (t.rank !== Q0.rank) throw new RangeError(`${fn}: ${name} has rank ${t.rank} but query has rank ${Q0.rank} (${describe(t)})`);
    }
    const r = Q0.rank;
    if (Q0.shape[r - 1] !== E) throw new RangeError(`${fn}: query.shape[${r - 1}] is ${Q0.shape[r - 1]}, expected embedDim ${E}`);
    if (K0.shape[r - 1] !== this.kdim) throw new RangeError(`${fn}: key.shape[${r - 1}] is ${K0.shape[r - 1]}, expected kdim ${this.kdim}`);
    if (V0.shape[r - 1] !== this.vdim) throw new RangeError(`${fn}: value.shape[${r - 1}] is ${V0.shape[r - 1]}, expected vdim ${this.vdim}`);
    if (K0.shape[r - 2] !== V0.shape[r - 2]) {
      throw new RangeError(`${fn}: key and value lengths differ: key.shape[${r - 2}] is ${K0.shape[r - 2]} but value.shape[${r - 2}] is ${V0.shape[r - 2]}`);
    }
    if (batched && (K0.shape[0] !== Q0.shape[0] || V0.shape[0] !== Q0.shape[0])) {
      throw new RangeError(`${fn}: batch sizes differ: query ${Q0.shape[0]}, key ${K0.shape[0]}, value ${V0.shape[0]}`);
    }
    const needWeights = opts.needWeights === undefined ? false : checkBoolean('needWeights', opts.needWeights);
    const averageWeights = opts.averageWeights === undefined ? true : checkBoolean('averageWeights', opts.averageWeights);
    const cache = opts.kvCache;
    if (cache !== undefined && !(cache instanceof KVCache)) throw new TypeError(expected('KVCache', 'kvCache', cache));
    const causal = opts.causal === undefined ? cache !== undefined : checkBoolean('causal', opts.causal);
    const trace = opts.trace;
    if (trace !== undefined && typeof trace !== 'function') throw new TypeError(expected('function', 'trace', trace));
    const note = (stage: string, t: Tensor | readonly number[]) => trace?.(stage, Array.isArray(t) ? t : (t as Tensor).shape);

    const q3 = batched ? Q0 : Q0.unsqueeze(0);
    const k3 = batched ? K0 : K0.unsqueeze(0);
    const v3 = batched ? V0 : V0.unsqueeze(0);
    const B = q3.shape[0];
    const L = q3.shape[1];
    const S = k3.shape[1];
    if (cache) {
      if (key !== undefined && key !== query) throw new RangeError(`${fn}: a kvCache is for self-attention; pass only the query (the new steps)`);
      if (value !== undefined && value !== query && value !== key) throw new RangeError(`${fn}: a kvCache is for self-attention; pass only the query (the new steps)`);
      if (cache.numHeads !== h || cache.headDim !== this.headDim) {
        throw new RangeError(`${fn}: kvCache has ${cache.numHeads} heads of ${cache.headDim}, this module ${h} of ${this.headDim}`);
      }
      if (cache.batch !== B) throw new RangeError(`${fn}: kvCache holds batch ${cache.batch} but query has batch ${B}`);
      if (this.addBiasKV || this.addZeroAttn) throw new RangeError(`${fn}: kvCache does not support addBiasKV or addZeroAttn`);
    }
    const extra = (this.addBiasKV ? 1 : 0) + (this.addZeroAttn ? 1 : 0);
    const keysTotal = (cache ? cache.length : 0) + S + extra;

    // Masks, in the layouts attention() takes.
    let attnMask: Tensor | undefined;
    if (opts.attnMask !== undefined) {
      attnMask = checkTensor('attnMask', opts.attnMask);
      const m = attnMask;
      const base = keysTotal - extra;
      if (m.rank === 3 && m.shape[0] === B * h && B * h > 1) {
        attnMask = m.unflatten(0, [B, h]);
      } else if (m.rank === 3 && !batched && m.shape[0] === h) {
        // Unbatched PyTorch layout [heads, queries, keys].
      } else if (m.rank !== 2 && m.rank !== 4 && !(m.rank === 3 && m.shape[0] === 1)) {
        throw new RangeError(expected(`Tensor [${L}, ${base}], [${B * h}, ${L}, ${base}] or one broadcasting to [${B}, ${h}, ${L}, ${base}]`, 'attnMask', m));
      }
      const shape = attnMask.shape;
      if (shape[shape.length - 2] !== L && shape[shape.length - 2] !== 1) {
        throw new RangeError(`${fn}: attnMask.shape[${m.rank - 2}] is ${m.shape[m.rank - 2]}, expected the query length ${L}`);
      }
      if (shape[shape.length - 1] !== base) {
        throw new RangeError(`${fn}: attnMask.shape[${m.rank - 1}] is ${m.shape[m.rank - 1]}, expected the key length ${base}`);
      }
      if (extra > 0) attnMask = padKeysFront(attnMask, extra);
    }
    let keyPaddingMask: Tensor | undefined;
    if (opts.keyPaddingMask !== undefined) {
      const m = checkTensor('keyPaddingMask', opts.keyPaddingMask);
      const base = keysTotal - extra;
      const want = batched ? [B, base] : [base];
      if (!sameShape(m.shape, want)) {
        throw new RangeError(expected(`Tensor of shape ${shapeString(want)} ([batch, keys])`, 'keyPaddingMask', m));
      }
      keyPaddingMask = batched ? m : m.unsqueeze(0);
      if (extra > 0) keyPaddingMask = padKeysFront(keyPaddingMask, extra);
    }

    // Q = XW^Q, K = XW^K, V = XW^V.
    note('input', q3);
    const bias = this.inProjBias;
    let Q: Tensor, K: Tensor, V: Tensor;
    if (this.inProjWeight && K0 === Q0 && V0 === Q0) {
      // Self-attention: one GEMM over the packed [3E, E] weight.
      const qkv = yield* linear(q3, this.packed('qkv', this.inProjWeight), bias, temp('qkv', [B, L, 3 * E]));
      note('QKV = X · [W^Q W^K W^V]ᵀ', qkv);
      Q = qkv.narrow(2, 0, E);
      K = qkv.narrow(2, E, E);
      V = qkv.narrow(2, 2 * E, E);
      note('Q, K, V (views of QKV)', Q);
    } else {
      Q = yield* linear(q3, this.packed('q', this.qProjWeight), bias?.narrow(0, 0, E), temp('q', [B, L, E]));
      if (this.inProjWeight && V0 === K0) {
        // Cross-attention over one memory: K and V from one GEMM.
        const kv = yield* linear(k3, this.packed('kv', this.inProjWeight.narrow(0, E, 2 * E)), bias?.narrow(0, E, 2 * E), temp('kv', [B, S, 2 * E]));
        K = kv.narrow(2, 0, E);
        V = kv.narrow(2, E, E);
      } else {
        K = yield* linear(k3, this.packed('k', this.kProjWeight), bias?.narrow(0, E, E), temp('k', [B, S, E]));
        V = yield* linear(v3, this.packed('v', this.vProjWeight), bias?.narrow(0, 2 * E, E), temp('v', [B, S, E]));
      }
    }
    if (!(this.inProjWeight && K0 === Q0 && V0 === Q0)) {
      note('Q = X · W^Q', Q);
      note('K = X · W^K', K);
      note('V = X · W^V', V);
    }
    if (extra > 0) {
      const zero = Tensor.zeros([1, 1, E]);
      K = prependRows(K, [...(this.biasK ? [this.biasK] : []), ...(this.addZeroAttn ? [zero] : [])]);
      V = prependRows(V, [...(this.biasV ? [this.biasV] : []), ...(this.addZeroAttn ? [zero] : [])]);
    }

    // Split into h heads of E/h: [B, S, E] -> [B, S, h, E/h] -> [B, h, S, E/h] (views).
    note('split heads', [B, L, h, this.headDim]);
    let Qh = splitHeads(Q, h);
    let Kh = splitHeads(K, h);
    let Vh = splitHeads(V, h);
    note('heads first', Qh);
    if (cache) {
      const all = cache.append(Kh, Vh);
      Kh = all.keys;
      Vh = all.values;
      note('cached keys', Kh);
    }

    // Attention per head, written straight into the merged [B, L, E] layout.
    const merged = temp('merged', [B, L, E]);
    const out = splitHeads(merged, h);
    const att = (yield {
      kind: 'attention',
      q: Qh,
      k: Kh,
      v: Vh,
      options: { attnMask, keyPaddingMask, causal, needWeights, out },
    }) as AttentionResult;
    note('softmax(QKᵀ/√d_k) · V per head', out);
    note('concat heads', merged);

    // Output projection W^O.
    const y = yield* linear(merged, this.packed('out', this.outProjWeight), this.outProjBias, Tensor.empty([B, L, E]));
    note('output = concat · W^O', y);

    let weights = att.weights;
    if (weights && extra > 0) weights = extraKeysLast(weights, extra);
    if (weights && averageWeights) {
      // Mean over heads: (1/h) · ones[1, h] · W[b] for each batch item, as one batched GEMM.
      const Sw = weights.shape[3];
      const flat = weights.reshape([B, h, L * Sw]);
      const mean = (yield { kind: 'matmul', a: Tensor.full([1, h], 1), b: flat, options: { alpha: 1 / h } }) as Tensor;
      weights = mean.reshape([B, L, Sw]);
    }
    const output = batched ? y : y.reshape([L, E]);
    if (weights && !batched) weights = weights.reshape(weights.shape.slice(1));
    return weights ? { output, weights } : { output };
  }
}
