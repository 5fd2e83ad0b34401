// Softmax along the last axis of a strided tensor, with an optional scale,
// additive float32 or uint8 (nonzero = masked) mask broadcast by strides, and
// causal masking of the last two axes (query i sees keys j <= i + cols - rows).
#pragma once

#include <cstdint>

#include "kernel_table.h"
#include "strided.h"

namespace attn {

struct SoftmaxArgs {
  int rank = 1;  // 1..kMaxRank
  long shape[kMaxRank] = {0};
  const float* x = nullptr;
  long x_strides[kMaxRank] = {0};  // last must be 1
  float* y = nullptr;
  long y_strides[kMaxRank] = {0};  // last must be 1
  float scale = 1.0f;
  const float* fmask = nullptr;  // at most one of fmask / umask
  const std::uint8_t* umask = nullptr;
  long m_strides[kMaxRank] = {0};  // 0 on broadcast axes; last is 0 or 1
  bool causal = false;
  // y is a new result nobody has read (its memory, recycled, is likely
  // cold): rows in runs are written past the caches.
  bool stream_out = false;
};

void softmax(const KernelTable& kt, const SoftmaxArgs& s, bool parallel = true);

// Causal masking, as softmax and attention apply it: of sk keys, query i of sq
// sees keys [0, causal_keys(i, sq, sk)), that is j <= i + sk - sq (the last
// query sees every key). The first `always` keys are seen by every query
// (keys added in front of the sequence, such as MultiHeadAttention's bias_k
// and zero key); the limit for the others is unchanged.
inline long causal_keys(long i, long sq, long sk, long always = 0) {
  const long n = i + sk - sq + 1;
  return n < always ? (always < sk ? always : sk) : (n > sk ? sk : n);
}

}  // namespace attn
