// Single-precision GEMM: C = alpha * op(A) * op(B) + beta * C, row-major,
// op = identity or transpose, leading dimensions and strided batches.
#pragma once

#include "kernel_table.h"

namespace attn {

struct GemmArgs {
  long m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  float alpha = 1.0f, beta = 0.0f;
  const float* a = nullptr;
  long lda = 0, stride_a = 0;  // stride_a: floats between batch items (0 = shared)
  const float* b = nullptr;
  long ldb = 0, stride_b = 0;
  float* c = nullptr;
  long ldc = 0, stride_c = 0;
  long batch = 1;
};

// Cache blocking for the packed path (floats / rows / columns).
struct GemmBlocking {
  long mc, kc, nc;
};
GemmBlocking gemm_blocking(const KernelTable& kt);

// Runs on the global thread pool. beta == 0 never reads C. The result for
// any element is the same bit pattern whatever the thread count.
void sgemm(const KernelTable& kt, const GemmArgs& g);

// Same, but on the calling thread only.
void sgemm_serial(const KernelTable& kt, const GemmArgs& g);

// Number of floats from the operand's first element to one past its last,
// over all batch items (0 when the operand is empty). For bounds checks.
long gemm_extent_a(const GemmArgs& g);
long gemm_extent_b(const GemmArgs& g);
long gemm_extent_c(const GemmArgs& g);

}  // namespace attn
