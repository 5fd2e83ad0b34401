// Scaled dot-product attention on strided [batch, heads, seq, dim] views:
// scores = scale * Q K^T (+ masks), softmax over the keys, out = P V.
#pragma once

#include <cstdint>

#include "kernel_table.h"

namespace attn {

enum class MaskKind : int { kNone = 0, kF32 = 1, kU8 = 2 };

struct AttentionArgs {
  long batch = 0, heads = 0, sq = 0, sk = 0, dk = 0, dv = 0;
  // Strides in elements over [batch, head, position]; the feature axis is contiguous.
  const float* q = nullptr;
  long q_strides[3] = {0, 0, 0};
  const float* k = nullptr;
  long k_strides[3] = {0, 0, 0};
  const float* v = nullptr;
  long v_strides[3] = {0, 0, 0};
  float* out = nullptr;
  long out_strides[3] = {0, 0, 0};
  float scale = 1.0f;
  // Query i sees keys j <= i + sk - sq, and the first causal_always keys
  // whatever its position (see causal_keys).
  bool causal = false;
  long causal_always = 0;
  // General mask over [batch, head, query, key] (0 strides broadcast; the key
  // stride is 0 or 1): float32 added to the scaled scores, uint8 nonzero = masked.
  MaskKind mask_kind = MaskKind::kNone;
  const void* mask = nullptr;
  long mask_strides[4] = {0, 0, 0, 0};
  // Key padding over [batch, key] (key stride 1): float32 added, uint8 nonzero = masked.
  MaskKind kpm_kind = MaskKind::kNone;
  const void* kpm = nullptr;
  long kpm_stride_b = 0;
  // Optional output of the attention weights, [batch, head, query, key] contiguous.
  float* weights = nullptr;
  // Optional precomputed scores in place of scale * Q K^T ([batch, head,
  // query, key] contiguous); q, k and dk are then unused.
  const float* scores = nullptr;
  // Packed variable-length sequences (fused path only): when set, sq == sk and
  // the positions of every (batch, head) hold `sequences` sequences one after
  // another, sequence s at positions [seq_offsets[s], seq_offsets[s + 1]) of q,
  // k, v and out. Attention stays inside each sequence (causal: within it) and
  // computes nothing across. seq_offsets has sequences + 1 entries, from 0,
  // strictly increasing, the last equal to sq; no mask, key padding, weights
  // or scores with it.
  const long* seq_offsets = nullptr;
  long sequences = 0;
};

// The explicit path: scores for a block of queries, masked softmax, then P V.
// Memory beyond the outputs: one block of scores per thread. Parallel over
// (batch, head, query block); the blocking does not depend on the thread
// count, so neither do the results.
void attention_explicit(const KernelTable& kt, const AttentionArgs& a);

// The fused path (flash attention): for each (batch, head, block of queries)
// the scores of one block of keys at a time, an online softmax (running max
// and sum, rescaling the accumulated output), out += P V. The [queries, keys]
// matrix is never built: memory beyond the output is O(sequence) per thread.
// Causal masking bounds the key loop; uint8 key padding of the usual form
// (zeros then ones) becomes a per-batch key count; other masks are applied
// per tile. Up to 4 queries (decoding): the keys are split into chunks whose
// partial (max, sum, output) triples are merged. Requires weights == null and
// scores == null. With seq_offsets, each sequence is computed as if it were
// alone (the same blocks from its first position), and the work is spread
// over (sequence, head, query blocks), heaviest first. Results do not depend
// on the thread count.
void attention_fused(const KernelTable& kt, const AttentionArgs& a);

// Additive (Bahdanau) attention scores over [batch, head]:
// scores[b, h, i, j] = sum_c w[c] tanh(pq[b, h, i, c] + pk[b, h, j, c] + bias[c]);
// every score is written (zeros when hidden is 0).
struct AdditiveArgs {
  long batch = 0, heads = 0, sq = 0, sk = 0, hidden = 0;
  const float* pq = nullptr;  // projected queries, strides over [batch, head, position]
  long pq_strides[3] = {0, 0, 0};
  const float* pk = nullptr;  // projected keys
  long pk_strides[3] = {0, 0, 0};
  const float* w = nullptr;     // [hidden]
  const float* bias = nullptr;  // [hidden] or null
  float* scores = nullptr;      // [batch, head, sq, sk] contiguous
};
void additive_scores(const KernelTable& kt, const AdditiveArgs& a);

}  // namespace attn
