// Type-level checks, compiled by the typecheck step (tsc -p tsconfig.test.json)
// and never run: result types follow the options, and each @ts-expect-error
// marks an access the compiler must refuse.
import {
  MultiHeadAttention,
  PackedMatrix,
  Tensor,
  attention,
  attentionAsync,
  packMatrix,
  type AttentionResult,
  type AttentionResultWithWeights,
  type ForwardResult,
  type ForwardResultWithWeights,
  type NestedArray,
} from '../../src';

declare const q: Tensor;
declare const mha: MultiHeadAttention;
declare const someFlag: boolean;

export function attentionWeights(): Tensor[] {
  const withWeights: AttentionResultWithWeights = attention(q, q, q, { needWeights: true, causal: true });
  const w: Tensor = withWeights.weights;
  const plain: AttentionResult = attention(q, q, q);
  // @ts-expect-error without needWeights: true the weights may be absent
  const w1: Tensor = plain.weights;
  // @ts-expect-error needWeights: false gives no weights
  const w2: Tensor = attention(q, q, q, { needWeights: false }).weights;
  // @ts-expect-error a boolean that may be false gives weights that may be absent
  const w3: Tensor = attention(q, q, q, { needWeights: someFlag }).weights;
  return [w, w1, w2, w3];
}

export async function attentionAsyncWeights(): Promise<Tensor[]> {
  const w: Tensor = (await attentionAsync(q, q, q, { needWeights: true })).weights;
  // @ts-expect-error without needWeights: true the weights may be absent
  const w1: Tensor = (await attentionAsync(q, q, q, { score: 'cosine' })).weights;
  return [w, w1];
}

export async function forwardWeights(): Promise<Tensor[]> {
  const r: ForwardResultWithWeights = mha.forward(q, undefined, undefined, { needWeights: true, averageWeights: false });
  const w: Tensor = r.weights;
  const cross: Tensor = mha.forward(q, q, q, { needWeights: true }).weights;
  const a: Tensor = (await mha.forwardAsync(q, undefined, undefined, { needWeights: true })).weights;
  const plain: ForwardResult = mha.forward(q);
  // @ts-expect-error without needWeights: true the weights may be absent
  const w1: Tensor = plain.weights;
  // @ts-expect-error the same for the async form
  const w2: Tensor = (await mha.forwardAsync(q, undefined, undefined, { causal: true })).weights;
  return [w, cross, a, w1, w2];
}

export function nestedArrays(t: Tensor): NestedArray[] {
  const all: NestedArray = t.toArray();
  const rows: NestedArray = Tensor.from([[1, 2], [3, 4]]).toArray();
  // @ts-expect-error toArray's nesting depth is not known statically
  const flat: number[] = t.toArray();
  return [all, rows, flat];
}

export function packedMatricesComeFromPackMatrix(w: Tensor): PackedMatrix[] {
  // @ts-expect-error the constructor is private: packMatrix makes them
  const made = new PackedMatrix({}, 1, 1);
  return [packMatrix(w), made];
}
