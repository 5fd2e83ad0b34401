#include "layers.h"

#include "../runtime/fp_env.h"
#include "../runtime/thread_pool.h"

namespace attn {
namespace {

constexpr long kElemsPerTask = 1L << 15;  // below this, one thread

// The number of rows before the last axis.
long rows_of(int rank, const long* shape) {
  long rows = 1;
  for (int d = 0; d < rank - 1; ++d) rows *= shape[d];
  return rows;
}

}  // namespace

void layer_norm(const KernelTable& kt, const LayerNormArgs& a) {
  const FlushDenormals fp;
  if (a.rank < 1) return;
  const int lead = a.rank - 1;
  const long cols = a.shape[lead];
  const long rows = rows_of(a.rank, a.shape);
  if (rows == 0 || cols == 0) return;
  const long tasks = task_count(rows, rows * cols, kElemsPerTask);
  parallel_ranges(rows, tasks, [&](long r0, long r1) {
    // Offsets of x and y, then of the residual and the sum (which share one
    // walk when their strides agree, as they do in the layers).
    const long* strides[3] = {a.x_strides, a.y_strides, a.r_strides};
    const long* sum_strides[1] = {a.sum_strides};
    Odometer od(lead, a.shape, 3, strides, r0);
    Odometer os(lead, a.shape, 1, sum_strides, r0);
    for (long r = r0; r < r1; ++r, od.next(), os.next()) {
      kt.layer_norm_row(a.x + od.off[0], a.residual ? a.residual + od.off[2] : nullptr, a.shift, a.gamma, a.beta,
                        a.y + od.off[1], a.sum ? a.sum + os.off[0] : nullptr, cols, a.eps);
    }
  });
}

void activation(const KernelTable& kt, const ActivationArgs& a) {
  const FlushDenormals fp;  // as in the GEMM epilogue: the same bits either way
  if (a.rank < 1) return;
  // Merge trailing axes that are contiguous in both operands: a contiguous
  // tensor becomes one row, cut into chunks for the threads.
  int rank = a.rank;
  long shape[kMaxRank], xs[kMaxRank], ys[kMaxRank];
  for (int d = 0; d < rank; ++d) {
    shape[d] = a.shape[d];
    xs[d] = a.x_strides[d];
    ys[d] = a.y_strides[d];
  }
  while (rank > 1) {
    const int d = rank - 2;
    const long inner = shape[d + 1];
    if (xs[d] != inner * xs[d + 1] || ys[d] != inner * ys[d + 1]) break;
    shape[d] *= inner;
    xs[d] = xs[d + 1];
    ys[d] = ys[d + 1];
    --rank;
  }
  const long cols = shape[rank - 1];
  const long rows = rows_of(rank, shape);
  if (rows == 0 || cols == 0) return;
  if (rows == 1) {
    const long chunk = 1L << 14;
    const long chunks = (cols + chunk - 1) / chunk;
    parallel_ranges(chunks, task_count(chunks, cols, kElemsPerTask), [&](long c0, long c1) {
      const long j0 = c0 * chunk, j1 = c1 * chunk < cols ? c1 * chunk : cols;
      kt.activation_array(a.act, a.x + j0, a.y + j0, j1 - j0);
    });
    return;
  }
  parallel_ranges(rows, task_count(rows, rows * cols, kElemsPerTask), [&](long r0, long r1) {
    const long* strides[2] = {xs, ys};
    Odometer od(rank - 1, shape, 2, strides, r0);
    for (long r = r0; r < r1; ++r, od.next()) kt.activation_array(a.act, a.x + od.off[0], a.y + od.off[1], cols);
  });
}

}  // namespace attn
