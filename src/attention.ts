// attention(q, k, v): a score between each query and key, softmax over the
// keys, the weighted sum of the values.
import { native } from './native';
import { matmul, matmulAsync } from './ops';
import { MAX_RANK, Tensor, checkTensor } from './tensor';
import { checkBoolean, checkFinite, checkOptions, expected, sameShape, shapeString } from './validate';

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
}

export interface AttentionResult {
  /** [..., queries, dv] */
  output: Tensor;
  /** [..., queries, keys], when needWeights was set. */
  weights?: Tensor;
}

const OPTIONS = ['score', 'scale', 'attnMask', 'keyPaddingMask', 'causal', 'needWeights', 'additive', 'out'] as const;
const SCORES: readonly ScoreFunction[] = ['scaled_dot', 'dot', 'cosine', 'additive'];
const NPARAMS = 37;

/**
 * Lifts a rank 2..4 tensor to a 4-D [batch, heads, ...] view: [S, d] is one
 * batch item with one head, [B, S, d] is B items with one head each.
 */
function to4d(t: Tensor): Tensor {
  if (t.rank === 2) return t.unsqueeze(0).unsqueeze(0);
  if (t.rank === 3) return t.unsqueeze(1);
  return t;
}

function unitLast(t: Tensor): Tensor {
  return t.shape[t.rank - 1] > 1 && t.strides[t.rank - 1] !== 1 ? t.contiguous() : t;
}

export interface PreparedAttention {
  output: Tensor;
  weights?: Tensor;
  /** The native call, after any score precomputation. */
  args: [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array | Uint8Array | null, Float32Array | Uint8Array | null, Float32Array | null, Float32Array | null, Float64Array];
  /** Work to do before the native call (cosine normalisation, additive scores). */
  pre?: { score: 'cosine' | 'additive'; q4: Tensor; k4: Tensor; additive?: AdditiveWeights; scores?: Tensor };
}

function maskKind(t: Tensor): number {
  return t.dtype === 'float32' ? 1 : 2;
}

/** Validates and lays out an attention call (shared by attention, attentionAsync and MultiHeadAttention). */
export function prepareAttention(
  q: unknown,
  k: unknown,
  v: unknown,
  options: unknown,
  fn: string,
): PreparedAttention {
  const Q = checkTensor('q', q, 'float32');
  const K = checkTensor('k', k, 'float32');
  const V = checkTensor('v', v, 'float32');
  const opts = checkOptions<AttentionOptions>(fn, options, OPTIONS);
  const score = opts.score ?? 'scaled_dot';
  if (!SCORES.includes(score)) throw new TypeError(expected(`one of ${SCORES.map((s) => `'${s}'`).join(', ')}`, 'score', score));
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
  const sq = Q.shape[r - 2];
  const sk = K.shape[r - 2];
  const dq = Q.shape[r - 1];
  const dk = K.shape[r - 1];
  const dv = V.shape[r - 1];
  if (V.shape[r - 2] !== sk) {
    throw new RangeError(`${fn}: key and value lengths differ: k.shape[${r - 2}] is ${sk} but v.shape[${r - 2}] is ${V.shape[r - 2]}`);
  }
  if (score !== 'additive' && dq !== dk) {
    throw new RangeError(`${fn}: q.shape[${r - 1}] is ${dq} but k.shape[${r - 1}] is ${dk}; a dot-product score needs equal feature sizes`);
  }
  const causal = opts.causal === undefined ? false : checkBoolean('causal', opts.causal);
  const needWeights = opts.needWeights === undefined ? false : checkBoolean('needWeights', opts.needWeights);
  let scale: number;
  if (opts.scale !== undefined) {
    scale = checkFinite('scale', opts.scale);
    if (score === 'additive') throw new RangeError(`${fn}: scale does not apply to the additive score (put it in the weight w)`);
  } else {
    scale = score === 'scaled_dot' ? 1 / Math.sqrt(Math.max(dk, 1)) : 1;
  }
  if (opts.additive !== undefined && score !== 'additive') {
    throw new RangeError(`${fn}: additive weights were given but score is '${score}'`);
  }

  const q4 = to4d(unitLast(Q));
  const k4 = to4d(unitLast(K));
  const v4 = to4d(unitLast(V));
  const [B, H] = q4.shape;
  const lead = Q.shape.slice(0, -2);

  let output: Tensor;
  if (opts.out !== undefined) {
    output = checkTensor('out', opts.out, 'float32');
    const want = [...lead, sq, dv];
    if (!sameShape(output.shape, want)) throw new RangeError(expected(`Tensor of shape ${shapeString(want)}`, 'out', output));
    if (dv > 1 && output.strides[r - 1] !== 1) throw new RangeError(expected('Tensor with a unit stride on its last axis', 'out', output));
  } else {
    output = Tensor.empty([...lead, sq, dv]);
  }
  const o4 = to4d(output);
  const weights = needWeights ? Tensor.empty([...lead, sq, sk]) : undefined;

  const p = new Float64Array(NPARAMS);
  p.set([B, H, sq, sk, dk, dv]);
  const put = (base: number, t: Tensor) => {
    p[base] = t.strides[0];
    p[base + 1] = t.strides[1];
    p[base + 2] = t.strides[2];
    p[base + 3] = t.offset;
  };
  put(6, q4);
  put(10, k4);
  put(14, v4);
  put(18, o4);
  p[22] = scale;
  p[23] = causal ? 1 : 0;

  let maskData: Float32Array | Uint8Array | null = null;
  if (opts.attnMask !== undefined) {
    let M = checkTensor('attnMask', opts.attnMask);
    // Broadcast against the caller's layout [..., queries, keys], then lift like q.
    const full = [...lead, sq, sk];
    if (M.rank > r || M.shape.some((d, i) => d !== 1 && d !== full[i + r - M.rank])) {
      throw new RangeError(
        `${fn}: attnMask of shape ${shapeString(M.shape)} does not broadcast to ${shapeString(full)} ([..., queries, keys])`,
      );
    }
    if (M.shape[M.rank - 1] > 1 && M.strides[M.rank - 1] !== 1) M = M.contiguous();
    const m4 = to4d(M.expand(full));
    p[24] = maskKind(M);
    p[25] = m4.strides[0];
    p[26] = m4.strides[1];
    p[27] = m4.strides[2];
    p[28] = m4.strides[3];
    p[29] = m4.offset;
    maskData = M.data;
  }
  let kpmData: Float32Array | Uint8Array | null = null;
  if (opts.keyPaddingMask !== undefined) {
    let P = checkTensor('keyPaddingMask', opts.keyPaddingMask);
    const want = r >= 3 ? [lead[0], sk] : [sk];
    if (!sameShape(P.shape, want)) {
      throw new RangeError(expected(`Tensor of shape ${shapeString(want)} ([batch, keys])`, 'keyPaddingMask', P));
    }
    P = P.contiguous();
    p[30] = maskKind(P);
    p[31] = P.rank === 2 ? P.strides[0] : 0;
    p[32] = P.offset;
    kpmData = P.data;
  }
  if (weights) {
    p[33] = 1;
    p[34] = 0;
  }

  const prepared: PreparedAttention = {
    output,
    weights,
    args: [q4.data as Float32Array, k4.data as Float32Array, v4.data as Float32Array, o4.data as Float32Array, maskData, kpmData, weights ? (weights.data as Float32Array) : null, null, p],
  };

  if (score === 'cosine') {
    prepared.pre = { score, q4, k4 };
  } else if (score === 'additive') {
    const a = opts.additive;
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
    prepared.pre = { score, q4, k4, additive: { wq, wk, w: w.contiguous(), bias: bias?.contiguous() } };
  }
  return prepared;
}

function normalizeRows(t: Tensor): Tensor {
  const out = Tensor.zeros(t.shape);
  const p = new Float64Array(4 + 2 * MAX_RANK);
  p[0] = t.rank;
  p[1] = t.offset;
  p[2] = 0;
  for (let d = 0; d < t.rank; ++d) {
    p[3 + d] = t.shape[d];
    p[3 + MAX_RANK + d] = t.strides[d];
  }
  p[3 + 2 * MAX_RANK] = 1e-8;
  if (t.size > 0) native.l2Normalize(t.data as Float32Array, out.data as Float32Array, p);
  return out;
}

function additiveParams(pq: Tensor, pk: Tensor, a: AdditiveWeights, scores: Tensor): Float64Array {
  const [B, H, sq, hidden] = pq.shape;
  const sk = pk.shape[2];
  return Float64Array.of(
    B, H, sq, sk, hidden,
    pq.strides[0], pq.strides[1], pq.strides[2], pq.offset,
    pk.strides[0], pk.strides[1], pk.strides[2], pk.offset,
    a.w.offset, a.bias ? a.bias.offset : 0, scores.offset,
  );
}

/** Installs precomputed scores (additive) or normalised q and k (cosine) into the call. */
function setScores(prep: PreparedAttention, scores: Tensor): void {
  const p = prep.args[8];
  prep.args[7] = scores.data as Float32Array;
  p[35] = 1;
  p[36] = 0;
}

function setCosine(prep: PreparedAttention, qn: Tensor, kn: Tensor): void {
  const p = prep.args[8];
  prep.args[0] = qn.data as Float32Array;
  prep.args[1] = kn.data as Float32Array;
  p.set([qn.strides[0], qn.strides[1], qn.strides[2], 0], 6);
  p.set([kn.strides[0], kn.strides[1], kn.strides[2], 0], 10);
}

const scoreArgs = (pq: Tensor, pk: Tensor, a: AdditiveWeights, out: Tensor) =>
  [
    pq.data as Float32Array,
    pk.data as Float32Array,
    a.w.data as Float32Array,
    a.bias ? (a.bias.data as Float32Array) : null,
    out.data as Float32Array,
    additiveParams(pq, pk, a, out),
  ] as const;

/** Scores of the additive score function, [B, H, Sq, Sk], zeroed. */
function scoresFor(pq: Tensor, pk: Tensor): Tensor {
  return Tensor.zeros([pq.shape[0], pq.shape[1], pq.shape[2], pk.shape[2]]);
}

/** The work before the native call: normalised q and k (cosine) or the additive scores. */
function runPreSync(prep: PreparedAttention): void {
  const pre = prep.pre;
  if (!pre) return;
  if (pre.score === 'cosine') {
    setCosine(prep, normalizeRows(pre.q4), normalizeRows(pre.k4));
    return;
  }
  const a = pre.additive!;
  const pq = matmul(pre.q4, a.wq, { transposeB: true });
  const pk = matmul(pre.k4, a.wk, { transposeB: true });
  const out = scoresFor(pq, pk);
  if (out.size > 0 && a.w.size > 0) native.additiveScores(...scoreArgs(pq, pk, a, out));
  setScores(prep, out);
}

async function runPreAsync(prep: PreparedAttention): Promise<void> {
  const pre = prep.pre;
  if (!pre || pre.score === 'cosine') return runPreSync(prep); // cosine: O(S d), cheap
  const a = pre.additive!;
  const [pq, pk] = await Promise.all([
    matmulAsync(pre.q4, a.wq, { transposeB: true }),
    matmulAsync(pre.k4, a.wk, { transposeB: true }),
  ]);
  const out = scoresFor(pq, pk);
  if (out.size > 0 && a.w.size > 0) await native.additiveScoresAsync(...scoreArgs(pq, pk, a, out));
  setScores(prep, out);
}

function result(prep: PreparedAttention): AttentionResult {
  return prep.weights ? { output: prep.output, weights: prep.weights } : { output: prep.output };
}

/**
 * Attention over q [..., Sq, dk], k [..., Sk, dk] and v [..., Sk, dv] (rank
 * 2 to 4; leading axes are batch and heads): softmax(score(q, k) + masks) · v.
 * A query whose every key is masked gets zero weights and a zero output.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions): AttentionResult {
  const prep = prepareAttention(q, k, v, options, 'attention');
  runPreSync(prep);
  if (prep.output.size > 0 || prep.weights) native.attention(...prep.args);
  return result(prep);
}

/** attention off the main thread. Inputs must not change until it settles. */
export async function attentionAsync(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions): Promise<AttentionResult> {
  const prep = prepareAttention(q, k, v, options, 'attentionAsync');
  await runPreAsync(prep);
  if (prep.output.size > 0 || prep.weights) await native.attentionAsync(...prep.args);
  return result(prep);
}
