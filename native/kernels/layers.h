// The Transformer layer's elementwise pieces on strided tensors: LayerNorm
// over the last axis (with a residual and a bias folded in) and activations.
// Pure C++17; rows are the last axis, which must be contiguous (stride 1).
#pragma once

#include "kernel_table.h"
#include "strided.h"

namespace attn {

// y = LayerNorm(x + residual + shift) * gamma + beta along the last axis of
// `shape`, and sum = x + residual + shift when sum is not null. residual has
// x's shape (its own strides, 0 to broadcast); shift, gamma and beta are
// [cols] and may be null, as may residual. y and sum may each be x or the
// residual (same strides), otherwise apart from every input and each other.
struct LayerNormArgs {
  int rank = 1;
  long shape[kMaxRank] = {};
  const float* x = nullptr;
  long x_strides[kMaxRank] = {};
  const float* residual = nullptr;
  long r_strides[kMaxRank] = {};
  const float* shift = nullptr;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float* y = nullptr;
  long y_strides[kMaxRank] = {};
  float* sum = nullptr;
  long sum_strides[kMaxRank] = {};
  float eps = 1e-5f;
  // y is a new result nobody has read yet: a large one is written past the
  // caches (see stream_new_result). The same values either way.
  bool stream_out = false;
};

// Rows split across the pool; each row is normalised by one call of
// kt.layer_norm_row, so the result does not depend on the thread count.
void layer_norm(const KernelTable& kt, const LayerNormArgs& a);

// y = act(x) elementwise (an Activation); y may be x (same strides).
struct ActivationArgs {
  int act = kActNone;
  int rank = 1;
  long shape[kMaxRank] = {};
  const float* x = nullptr;
  long x_strides[kMaxRank] = {};
  float* y = nullptr;
  long y_strides[kMaxRank] = {};
  bool stream_out = false;  // as for LayerNormArgs (ReLU only: see activation())
};

void activation(const KernelTable& kt, const ActivationArgs& a);

}  // namespace attn
