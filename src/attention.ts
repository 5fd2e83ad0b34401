// attention(q, k, v): a score between each query and key, softmax over the
// keys, the weighted sum of the values. planAttention checks the call and lays
// it out (through a Prep: copies now for attention, off the main thread for
// attentionAsync); the compute step runs the score's preparation (cosine,
// additive) and the kernel, the same for both.
import { native, type NativeBinding } from './native';
import { matmul, matmulAsync, maskKind } from './ops';
import { additiveScoresParams, attentionParams, l2NormalizeParams } from './params';
import { NOW, Staging, writesOwned, type Prep, type Queued } from './staging';
import { Tensor, checkTensor, checkWritable, sharesMemory, dims } from './tensor';
import { broadcastsTo, checkBoolean, checkFinite, checkOptions, checkSequenceLengths, expected, sameShape, shapeString } from './validate';

export type ScoreFunction = 'scaled_dot' | 'dot' | 'cosine' | 'additive';

/** Weights of the additive score w · tanh(W_q q + W_k k + bias). */
export interface AdditiveWeights {
  /** [hidden, qDim] */
  wq: Tensor;
  /** [hidden, kDim] */
  wk: Tensor;
  /** [hidden] */
  w: Tensor;
  /** [hidden], optional */
  bias?: Tensor;
}

export interface AttentionOptions {
  /** How a query and a key are compared (default 'scaled_dot'). */
  score?: ScoreFunction;
  /** Multiplies the scores: default 1/√dk for 'scaled_dot', 1 for 'dot' and 'cosine'. */
  scale?: number;
  /** uint8 (nonzero = masked) or float32 (added to the scores), broadcast to [..., queries, keys]. */
  attnMask?: Tensor;
  /** [batch, keys] (or [keys] for unbatched input): uint8 nonzero = padding, or float32 added. */
  keyPaddingMask?: Tensor;
  /** Query i sees keys j <= i + keys - queries (the last query sees every key). */
  causal?: boolean;
  /** Also return the attention weights. */
  needWeights?: boolean;
  /** Weights for score 'additive'. */
  additive?: AdditiveWeights;
  /** Where to write the output ([..., queries, dv]; may be a strided view). */
  out?: Tensor;
  /**
   * Packed variable-length sequences: the positions of q, k and v (as many
   * keys as queries) hold sequences of these lengths one after another, and
   * each attends only within itself (causal: within itself). Positive
   * integers summing to the position count; fused path only (no weights,
   * masks or additive score).
   */
  sequenceLengths?: readonly number[] | Int32Array;
}

export interface AttentionResult {
  /** [..., queries, dv] */
  output: Tensor;
  /** [..., queries, keys], when needWeights was set. */
  weights?: Tensor;
}

/** The result of a call with `needWeights: true`. */
export interface AttentionResultWithWeights extends AttentionResult {
  /** [..., queries, keys] */
  weights: Tensor;
}

const OPTIONS = ['score', 'scale', 'attnMask', 'keyPaddingMask', 'causal', 'needWeights', 'additive', 'out', 'sequenceLengths'] as const;
const SCORES: readonly ScoreFunction[] = ['scaled_dot', 'dot', 'cosine', 'additive'];

// ------------------------------------------------------------ plan

/** A checked attention call, every operand a 4-D [batch, heads, positions, features] view. */
interface AttentionPlan {
  fn: string;
  prep: Prep;
  score: ScoreFunction;
  q4: Tensor;
  k4: Tensor;
  v4: Tensor;
  /** The output as the kernel writes it (a view of `output`, or of its stand-in). */
  o4: Tensor;
  /** What the caller gets back. */
  output: Tensor;
  weights: Tensor | undefined;
  scale: number;
  causal: boolean;
  /** With causal: leading keys every query sees. */
  causalAlways: number;
  /** attnMask as a [batch, heads, queries, keys] view (stride 0 on broadcast axes). */
  mask: Tensor | null;
  /** [batch, keys] or [keys], contiguous. */
  keyPadding: Tensor | null;
  /** The checked weights of the additive score. */
  additive: AdditiveWeights | null;
  /** Cumulative offsets of packed sequences along the positions (n + 1 entries), or null. */
  sequenceOffsets: Int32Array | null;
}

/**
 * Lifts a rank 2..4 tensor to a 4-D [batch, heads, ...] view: [S, d] is one
 * batch item with one head, [B, S, d] is B items with one head each.
 */
function to4d(t: Tensor): Tensor {
  if (t.rank === 2) return t.unsqueeze(0).unsqueeze(0);
  if (t.rank === 3) return t.unsqueeze(1);
  return t;
}

/** t for the kernel, its last axis contiguous. */
function unitLast(t: Tensor, name: string, prep: Prep): Tensor {
  const s = prep.input(t, name);
  return s.shape[s.rank - 1] > 1 && s.strides[s.rank - 1] !== 1 ? prep.contiguous(s) : s;
}

/** q, k and v as float32 tensors of one rank (2 to 4) with equal leading axes and equal key and value lengths. */
function checkOperands(q: unknown, k: unknown, v: unknown, fn: string): [Tensor, Tensor, Tensor] {
  const Q = checkTensor('q', q, 'float32');
  const K = checkTensor('k', k, 'float32');
  const V = checkTensor('v', v, 'float32');
  for (const [name, t] of [
    ['q', Q],
    ['k', K],
    ['v', V],
  ] as const) {
    if (t.rank < 2 || t.rank > 4) throw new RangeError(expected('Tensor with 2 to 4 dimensions ([..., positions, features])', name, t));
  }
  if (K.rank !== Q.rank || V.rank !== Q.rank) {
    throw new RangeError(`${fn}: q, k and v must have the same rank; received q ${shapeString(Q.shape)}, k ${shapeString(K.shape)}, v ${shapeString(V.shape)}`);
  }
  for (let d = 0; d < Q.rank - 2; ++d) {
    if (K.shape[d] !== Q.shape[d] || V.shape[d] !== Q.shape[d]) {
      throw new RangeError(
        `${fn}: leading dimensions must match: q.shape[${d}] is ${Q.shape[d]}, k.shape[${d}] is ${K.shape[d]}, v.shape[${d}] is ${V.shape[d]}`,
      );
    }
  }
  const r = Q.rank;
  if (V.shape[r - 2] !== K.shape[r - 2]) {
    throw new RangeError(`${fn}: key and value lengths differ: k.shape[${r - 2}] is ${K.shape[r - 2]} but v.shape[${r - 2}] is ${V.shape[r - 2]}`);
  }
  return [Q, K, V];
}

function checkScore(score: unknown, opts: Partial<AttentionOptions>, dq: number, dk: number, r: number, fn: string): ScoreFunction {
  if (!SCORES.includes(score as ScoreFunction)) {
    throw new TypeError(expected(`one of ${SCORES.map((s) => `'${s}'`).join(', ')}`, 'score', score));
  }
  if (score !== 'additive' && dq !== dk) {
    throw new RangeError(`${fn}: q.shape[${r - 1}] is ${dq} but k.shape[${r - 1}] is ${dk}; a dot-product score needs equal feature sizes`);
  }
  if (opts.additive !== undefined && score !== 'additive') {
    throw new RangeError(`${fn}: additive weights were given but score is '${score}'`);
  }
  return score as ScoreFunction;
}

function scaleFor(opts: Partial<AttentionOptions>, score: ScoreFunction, dk: number, fn: string): number {
  if (opts.scale === undefined) return score === 'scaled_dot' ? 1 / Math.sqrt(Math.max(dk, 1)) : 1;
  const scale = checkFinite('scale', opts.scale);
  if (score === 'additive') throw new RangeError(`${fn}: scale does not apply to the additive score (put it in the weight w)`);
  return scale;
}

/**
 * The given out (checked: shape [...lead, sq, dv], unit last stride, distinct
 * elements, apart from the inputs) or a new tensor.
 */
function outputFor(out: unknown, want: number[], inputs: [string, Tensor | undefined][], fn: string, prep: Prep): Tensor {
  if (out === undefined) return prep.empty(want);
  const output = checkTensor('out', out, 'float32');
  if (!sameShape(output.shape, want)) throw new RangeError(expected(`Tensor of shape ${shapeString(want)}`, 'out', output));
  const dv = want[want.length - 1];
  if (dv > 1 && output.strides[output.rank - 1] !== 1) {
    throw new RangeError(expected('Tensor with a unit stride on its last axis', 'out', output));
  }
  checkWritable(fn, 'out', output);
  for (const [name, t] of inputs) {
    if (t && sharesMemory(output, t)) throw new RangeError(`${fn}: out must not share memory with ${name}`);
  }
  return output;
}

/** attnMask, checked to broadcast to the caller's [...lead, queries, keys]. */
function checkMask(mask: unknown, full: number[], fn: string): Tensor {
  const M = checkTensor('attnMask', mask);
  if (!broadcastsTo(M.shape, full)) {
    throw new RangeError(
      `${fn}: attnMask of shape ${shapeString(M.shape)} does not broadcast to ${shapeString(full)} ([..., queries, keys])`,
    );
  }
  return M;
}

/** A checked attnMask broadcast to [...lead, queries, keys], then lifted to 4-D like q. */
function maskFor(M0: Tensor, full: number[], prep: Prep): Tensor {
  let M = prep.input(M0, 'attnMask');
  if (M.shape[M.rank - 1] > 1 && M.strides[M.rank - 1] !== 1) M = prep.contiguous(M);
  return to4d(M.expand(full));
}

function checkKeyPadding(mask: unknown, want: number[]): Tensor {
  const P = checkTensor('keyPaddingMask', mask);
  if (!sameShape(P.shape, want)) {
    throw new RangeError(expected(`Tensor of shape ${shapeString(want)} ([batch, keys])`, 'keyPaddingMask', P));
  }
  return P;
}

/** The additive score's weights, checked against q's and k's feature sizes; w and the bias made contiguous. */
function additiveFor(a: AdditiveWeights | undefined, dq: number, dk: number, fn: string, prep: Prep): AdditiveWeights {
  if (a === undefined || a === null || typeof a !== 'object') {
    throw new TypeError(expected('{ wq, wk, w, bias? } for the additive score', 'additive', a));
  }
  checkOptions<AdditiveWeights>(`${fn} additive`, a, ['wq', 'wk', 'w', 'bias']);
  const wq = checkTensor('additive.wq', a.wq, 'float32');
  const wk = checkTensor('additive.wk', a.wk, 'float32');
  const w = checkTensor('additive.w', a.w, 'float32');
  const hidden = w.shape[0];
  if (w.rank !== 1) throw new RangeError(expected('1-D Tensor [hidden]', 'additive.w', w));
  if (!sameShape(wq.shape, [hidden, dq])) throw new RangeError(expected(`Tensor of shape [${hidden}, ${dq}]`, 'additive.wq', wq));
  if (!sameShape(wk.shape, [hidden, dk])) throw new RangeError(expected(`Tensor of shape [${hidden}, ${dk}]`, 'additive.wk', wk));
  let bias: Tensor | undefined;
  if (a.bias !== undefined) {
    bias = checkTensor('additive.bias', a.bias, 'float32');
    if (!sameShape(bias.shape, [hidden])) throw new RangeError(expected(`Tensor of shape [${hidden}]`, 'additive.bias', bias));
  }
  return {
    wq,
    wk,
    w: prep.contiguous(prep.input(w, 'additive.w')),
    bias: bias && prep.contiguous(prep.input(bias, 'additive.bias')),
  };
}

/** The offsets of packed sequences (sequenceLengths), checked against the call: same positions for queries and keys, fused path only. */
function packedOffsets(opts: Partial<AttentionOptions>, sq: number, sk: number, r: number, fn: string): Int32Array | null {
  if (opts.sequenceLengths === undefined) return null;
  const { offsets } = checkSequenceLengths(opts.sequenceLengths, sq, fn);
  if (sk !== sq) {
    throw new RangeError(`${fn}: with sequenceLengths, k and v hold the same positions as q, but k.shape[${r - 2}] is ${sk} and q.shape[${r - 2}] is ${sq}`);
  }
  for (const option of ['attnMask', 'keyPaddingMask', 'additive'] as const) {
    if (opts[option] !== undefined) throw new RangeError(`${fn}: sequenceLengths cannot be combined with ${option}`);
  }
  if (opts.needWeights === true) {
    throw new RangeError(`${fn}: sequenceLengths cannot be combined with needWeights (packed sequences run in the fused kernel, which builds no weights)`);
  }
  return offsets;
}

/** Checks an attention call (attention and attentionAsync) and lays it out for the kernel. */
function planAttention(q: unknown, k: unknown, v: unknown, options: unknown, fn: string, prep: Prep, causalAlways = 0): AttentionPlan {
  const [Q, K, V] = checkOperands(q, k, v, fn);
  const opts = checkOptions<AttentionOptions>(fn, options, OPTIONS);
  const r = Q.rank;
  const sq = Q.shape[r - 2];
  const sk = K.shape[r - 2];
  const dq = Q.shape[r - 1];
  const dk = K.shape[r - 1];
  const dv = V.shape[r - 1];
  const score = checkScore(opts.score ?? 'scaled_dot', opts, dq, dk, r, fn);
  const causal = opts.causal === undefined ? false : checkBoolean('causal', opts.causal);
  const needWeights = opts.needWeights === undefined ? false : checkBoolean('needWeights', opts.needWeights);
  const scale = scaleFor(opts, score, dk, fn);
  const sequenceOffsets = packedOffsets(opts, sq, sk, r, fn);
  const lead = dims(Q.shape, 0, -2);
  const M = opts.attnMask === undefined ? null : checkMask(opts.attnMask, [...lead, sq, sk], fn);
  const P = opts.keyPaddingMask === undefined ? null : checkKeyPadding(opts.keyPaddingMask, r >= 3 ? [lead[0], sk] : [sk]);
  const inputs: [string, Tensor | undefined][] = [['q', Q], ['k', K], ['v', V], ['attnMask', M ?? undefined], ['keyPaddingMask', P ?? undefined]];
  const output = outputFor(opts.out, [...lead, sq, dv], inputs, fn, prep);
  return {
    fn,
    prep,
    score,
    q4: to4d(unitLast(Q, 'q', prep)),
    k4: to4d(unitLast(K, 'k', prep)),
    v4: to4d(unitLast(V, 'v', prep)),
    o4: to4d(prep.output(output, 'out')),
    output,
    weights: needWeights ? prep.empty([...lead, sq, sk]) : undefined,
    scale,
    causal,
    causalAlways,
    mask: M ? maskFor(M, [...lead, sq, sk], prep) : null,
    keyPadding: P ? prep.contiguous(prep.input(P, 'keyPaddingMask')) : null,
    additive: score === 'additive' ? additiveFor(opts.additive, dq, dk, fn, prep) : null,
    sequenceOffsets,
  };
}

// ------------------------------------------------------------ compute

/** What the kernel compares: q and k as given, normalised (cosine), or scores computed beforehand (additive). */
interface ScoreInputs {
  q: Tensor;
  k: Tensor;
  scores: Tensor | null;
}

/** The first three strides of a 4-D view (the fourth, over features, is 1). */
const outer = (t: Tensor): number[] => [t.strides[0], t.strides[1], t.strides[2]];

/** Each row of t (its last axis) divided by its L2 norm: the kernel call into a new contiguous tensor. */
function normalizeArgs(t: Tensor, out: Tensor): Parameters<NativeBinding['l2Normalize']> {
  const params = l2NormalizeParams({ rank: t.rank, srcOffset: t.offset, dstOffset: 0, shape: t.shape, srcStrides: t.strides, eps: 1e-8 });
  return [t.data as Float32Array, out.data as Float32Array, params];
}

/** The additive scores' kernel call: scores [B, H, Sq, Sk] = w · tanh(pq + pk + bias). */
function additiveArgs(pq: Tensor, pk: Tensor, a: AdditiveWeights, scores: Tensor): Parameters<NativeBinding['additiveScores']> {
  const [batch, heads, queries, hidden] = pq.shape;
  const params = additiveScoresParams({
    batch,
    heads,
    queries,
    keys: pk.shape[2],
    hidden,
    pqStrides: outer(pq),
    pqOffset: pq.offset,
    pkStrides: outer(pk),
    pkOffset: pk.offset,
    wOffset: a.w.offset,
    biasOffset: a.bias ? a.bias.offset : 0,
    scoresOffset: scores.offset,
  });
  const bias = a.bias ? (a.bias.data as Float32Array) : null;
  return [pq.data as Float32Array, pk.data as Float32Array, a.w.data as Float32Array, bias, scores.data as Float32Array, params];
}

/** Scores [B, H, Sq, Sk] for projected queries and keys (every element is written by the kernel). */
const scoresFor = (plan: AttentionPlan, pq: Tensor, pk: Tensor): Tensor =>
  plan.prep.empty([pq.shape[0], pq.shape[1], pq.shape[2], pk.shape[2]]);

function scoreInputsSync(plan: AttentionPlan): ScoreInputs {
  const { q4, k4, additive: a } = plan;
  if (plan.score === 'cosine') {
    const [q, k] = [q4, k4].map((t) => {
      const out = plan.prep.empty(t.shape);
      if (t.size > 0) native.l2Normalize(...normalizeArgs(t, out));
      return out;
    });
    return { q, k, scores: null };
  }
  if (!a) return { q: q4, k: k4, scores: null };
  const pq = matmul(q4, a.wq, { transposeB: true });
  const pk = matmul(k4, a.wk, { transposeB: true });
  const scores = scoresFor(plan, pq, pk);
  if (scores.size > 0) native.additiveScores(...additiveArgs(pq, pk, a, scores));
  return { q: q4, k: k4, scores };
}

async function scoreInputsAsync(plan: AttentionPlan): Promise<ScoreInputs> {
  const { q4, k4, additive: a } = plan;
  if (plan.score === 'cosine') {
    const [q, k] = await Promise.all(
      [q4, k4].map(async (t) => {
        const out = plan.prep.empty(t.shape);
        if (t.size > 0) await native.l2NormalizeAsync(...normalizeArgs(t, out));
        return out;
      }),
    );
    return { q, k, scores: null };
  }
  if (!a) return { q: q4, k: k4, scores: null };
  const [pq, pk] = await Promise.all([matmulAsync(q4, a.wq, { transposeB: true }), matmulAsync(k4, a.wk, { transposeB: true })]);
  const scores = scoresFor(plan, pq, pk);
  if (scores.size > 0) await native.additiveScoresAsync(...additiveArgs(pq, pk, a, scores));
  return { q: q4, k: k4, scores };
}

/** The attention kernel's arguments for a plan and its score inputs. */
function attentionArgs(plan: AttentionPlan, s: ScoreInputs): Parameters<NativeBinding['attention']> {
  const { q4, k4, v4, o4, mask, keyPadding: kp, weights } = plan;
  const params = attentionParams({
    batch: q4.shape[0],
    heads: q4.shape[1],
    queries: q4.shape[2],
    keys: k4.shape[2],
    dk: k4.shape[3],
    dv: v4.shape[3],
    qStrides: outer(s.q),
    qOffset: s.q.offset,
    kStrides: outer(s.k),
    kOffset: s.k.offset,
    vStrides: outer(v4),
    vOffset: v4.offset,
    outStrides: outer(o4),
    outOffset: o4.offset,
    scale: plan.scale,
    causal: plan.causal ? 1 : 0,
    causalAlways: plan.causalAlways,
    maskKind: maskKind(mask),
    maskStrides: mask ? mask.strides : [],
    maskOffset: mask ? mask.offset : 0,
    keyPaddingKind: maskKind(kp),
    keyPaddingBatchStride: kp && kp.rank === 2 ? kp.strides[0] : 0,
    keyPaddingOffset: kp ? kp.offset : 0,
    hasWeights: weights ? 1 : 0,
    weightsOffset: weights ? weights.offset : 0,
    hasScores: s.scores ? 1 : 0,
    scoresOffset: s.scores ? s.scores.offset : 0,
    sequences: plan.sequenceOffsets ? plan.sequenceOffsets.length - 1 : 0,
  });
  return [
    s.q.data as Float32Array,
    s.k.data as Float32Array,
    v4.data as Float32Array,
    o4.data as Float32Array,
    mask ? mask.data : null,
    kp ? kp.data : null,
    weights ? (weights.data as Float32Array) : null,
    s.scores ? (s.scores.data as Float32Array) : null,
    plan.sequenceOffsets,
    params,
  ];
}

/** Whether the kernel has anything to write. */
const hasWork = (plan: AttentionPlan): boolean => plan.output.size > 0 || plan.weights !== undefined;

function resultOf(plan: AttentionPlan): AttentionResult {
  return plan.weights ? { output: plan.output, weights: plan.weights } : { output: plan.output };
}

/** @internal attention with `causalAlways` leading keys that every query sees under causal masking. */
export function attentionWith(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions | undefined, causalAlways: number): AttentionResult {
  const plan = planAttention(q, k, v, options, 'attention', NOW, causalAlways);
  const inputs = scoreInputsSync(plan);
  if (hasWork(plan)) native.attention(...attentionArgs(plan, inputs));
  return resultOf(plan);
}

/**
 * A sync attention call laid out once, to be repeated on the same tensors:
 * the kernel's arguments and the result they write. Only for calls whose
 * every run is the kernel alone (dot scores, inputs used in place, into a
 * given out, no weights); null for any other.
 */
interface RepeatableAttention {
  args: Parameters<NativeBinding['attention']>;
  result: AttentionResult;
}
function repeatableAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions, causalAlways: number): RepeatableAttention | null {
  const plan = planAttention(q, k, v, options, 'attention', NOW, causalAlways);
  const plain = plan.score === 'scaled_dot' || plan.score === 'dot';
  // A contiguous copy of an input (made once, here) would go stale.
  const inPlace = plan.q4.data === q.data && plan.k4.data === k.data && plan.v4.data === v.data;
  if (!plain || !inPlace || plan.weights || plan.output !== options.out || !hasWork(plan)) return null;
  const args = attentionArgs(plan, { q: plan.q4, k: plan.k4, scores: null });
  args[args.length - 1] = (args[args.length - 1] as Float64Array).slice(); // the block is shared by every call
  return { args, result: resultOf(plan) };
}

/** @internal Where a repeated attention step keeps its layout: unset until the first run, null when it cannot repeat. */
export interface AttentionRepeat {
  call?: RepeatableAttention | null;
}

/**
 * @internal attentionWith for a step that a module repeats on the same
 * tensors (its workspace's views, with the same options object): checked and
 * laid out on the first call, the kernel alone on the next ones. The addon
 * checks the arguments on every call all the same.
 */
export function attentionRepeated(
  slot: AttentionRepeat,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions,
  causalAlways: number,
): AttentionResult {
  if (slot.call === undefined) slot.call = repeatableAttention(q, k, v, options, causalAlways);
  if (!slot.call) return attentionWith(q, k, v, options, causalAlways);
  native.attention(...slot.call.args);
  return slot.call.result;
}

/** @internal attentionAsync with `causalAlways` leading keys that every query sees under causal masking. */
export async function attentionAsyncWith(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions | undefined,
  causalAlways: number,
): Promise<AttentionResult> {
  const staging = new Staging('attentionAsync');
  const plan = planAttention(q, k, v, options, 'attentionAsync', staging, causalAlways);
  await staging.run(async () => {
    const inputs = await scoreInputsAsync(plan);
    if (hasWork(plan)) await native.attentionAsync(...attentionArgs(plan, inputs));
  });
  return resultOf(plan);
}

/**
 * @internal attentionAsyncWith's call made now, for a chain (see runAsync in
 * multihead.ts); undefined, having called nothing, for the scores that take
 * kernels of their own (cosine, additive), or when the call needs copies
 * made first or writes memory the addon does not own.
 */
export function attentionQueued(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions | undefined,
  causalAlways: number,
): Queued<AttentionResult> | undefined {
  const staging = new Staging('attentionAsync');
  const plan = planAttention(q, k, v, options, 'attentionAsync', staging, causalAlways);
  const value = resultOf(plan);
  const writes = value.weights ? [value.output, value.weights] : [value.output];
  if (!staging.direct || plan.score === 'cosine' || plan.additive || !writesOwned(writes)) return undefined;
  const done = hasWork(plan) ? native.attentionAsync(...attentionArgs(plan, { q: plan.q4, k: plan.k4, scores: null })) : Promise.resolve();
  return { value, done, writes };
}

/**
 * Attention over q [..., Sq, dk], k [..., Sk, dk] and v [..., Sk, dv] (rank
 * 2 to 4; leading axes are batch and heads): softmax(score(q, k) + masks) · v.
 * A query whose every key is masked gets zero weights and a zero output.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions & { needWeights: true }): AttentionResultWithWeights;
export function attention(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions): AttentionResult;
export function attention(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions): AttentionResult {
  return attentionWith(q, k, v, options, 0);
}

/** attention off the main thread. Inputs must not change (nor `out` be read) until it settles. */
export function attentionAsync(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions & { needWeights: true },
): Promise<AttentionResultWithWeights>;
export function attentionAsync(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions): Promise<AttentionResult>;
export async function attentionAsync(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions): Promise<AttentionResult> {
  return attentionAsyncWith(q, k, v, options, 0);
}
