// Single-precision GEMM: C = alpha * op(A) * op(B) + beta * C, row-major,
// op = identity or transpose, leading dimensions and strided batches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

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
  // Added to every row of C (n floats, shared by the batch), or null.
  const float* bias = nullptr;
  // Applied last, in the micro-kernel's stores: C = act(alpha A B + beta C +
  // bias). An Activation (kernel_table.h).
  int act = kActNone;
  // C is a new result nobody has read yet: a large one (see
  // stream_new_result) is written past the caches where the product allows
  // (beta == 0, no activation, C's rows 64-byte aligned). The same values.
  bool stream_out = false;
};

// Cache blocking of the blocked (packing) path: rows of A, depth, and columns
// of B per packed block. nc_l2 > 0 selects the loop order that keeps an A
// micro-panel in L1 while runs of nc_l2 columns of B (in L2) sweep it; 0, the
// order that reuses a B micro-panel across the A block.
struct GemmBlocking {
  long mc, kc, nc;
  long nc_l2 = 0;
};
GemmBlocking gemm_blocking(const KernelTable& kt);
// The same for a product of depth k: where the tuning keeps the A micro-panel
// in L1, k is cut into equal blocks no deeper than that allows. Depends on k
// and the CPU only (never on the thread count).
GemmBlocking gemm_blocking_for_depth(const KernelTable& kt, long k);

// Runs on the global thread pool. beta == 0 never reads C. The result for
// any element is the same bit pattern whatever the thread count.
void sgemm(const KernelTable& kt, const GemmArgs& g);

// Same, but on the calling thread only.
void sgemm_serial(const KernelTable& kt, const GemmArgs& g);

// Packs `lanes` lanes (rows of A, w = kt.mr; columns of B, w = kt.nr) into
// w-wide micro-panels of kc steps for the micro-kernel: lane l at step k is
// src[l * ls + k * ks]; panel q starts at dst + q * w * kc, and the last one
// is zero-padded to w lanes.
void pack_panels(const KernelTable& kt, const float* src, long ls, long ks, long lanes, long kc, int w,
                 float* dst);

// A right-hand operand B packed once into the micro-kernel's panel layout
// (for weights reused across calls). Tied to the kernel table and blocking it
// was packed for.
struct PackedMatrix {
  const KernelTable* kt = nullptr;
  long k = 0, n = 0;
  GemmBlocking blk{0, 0, 0};
  float* data = nullptr;  // 64-byte aligned, owned
  std::size_t floats = 0;
  PackedMatrix() = default;
  PackedMatrix(const PackedMatrix&) = delete;
  PackedMatrix& operator=(const PackedMatrix&) = delete;
  ~PackedMatrix();
  // Floats of the panel for block (jc, pc) start here.
  std::size_t offset(long jc, long pc) const;
  // The packed micro-panel of column jr (a multiple of nr) in depth block pc.
  const float* panel(long jr, long pc) const;
  // The tile unit's copy (isa/amx.cc's B panels, 32 columns and all of k
  // each, amx_steps steps of 32 values of k), made from the panels above by
  // the first product that takes it (one that has rows enough, on a table
  // with the tile unit); null when its memory could not be had or B holds
  // an infinity (an infinite part times a zero part would be NaN).
  const std::uint16_t* amx_panels() const;
  long amx_steps() const { return (k + 31) / 32; }
  // Bytes the tile unit's copy takes (or would): 0 on a table without one.
  std::size_t amx_bytes() const;

 private:
  mutable std::once_flag amx_once_;
  mutable std::uint16_t* amx_ = nullptr;
};

// Packs op(B) (k x n): element (p, j) is b[p * ldb + j], or b[j * ldb + p] when trans_b.
std::unique_ptr<PackedMatrix> pack_matrix(const KernelTable& kt, const float* b, long ldb, bool trans_b, long k,
                                          long n);

// C = alpha * op(A) * B + beta * C (+ bias) with B packed by pack_matrix (g.b,
// g.ldb, g.trans_b and g.stride_b are ignored; B is shared by the batch).
void sgemm_with_packed(const GemmArgs& g, const PackedMatrix& pm);

// Number of floats from the operand's first element to one past its last,
// over all batch items (0 when the operand is empty), into *e. For bounds
// checks: false when the count overflows a long.
bool gemm_extent_a(const GemmArgs& g, long* e);
bool gemm_extent_b(const GemmArgs& g, long* e);
bool gemm_extent_c(const GemmArgs& g, long* e);

}  // namespace attn
