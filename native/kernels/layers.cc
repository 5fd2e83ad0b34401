#include "layers.h"

#include "../runtime/fp_env.h"
#include "../runtime/thread_pool.h"
#include "scratch.h"
#include "tuning.h"

namespace attn {
namespace {

constexpr long kElemsPerTask = 1L << 15;  // below this, one thread

thread_local Scratch tl_stage;

// Whether `tasks` tasks write a new result of `elems` floats past the caches.
bool streams(bool stream_out, long elems, long tasks) {
  return stream_out && stream_new_result(4.0 * static_cast<double>(elems), threads_for_tasks(tasks));
}

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
  // A large new result: each row's intermediate in a stage row, the result
  // written past the caches (its memory comes back cold; see softmax). Zen 4,
  // layerNorm(x) in turns of the event loop, interleaved, one thread:
  // 4096 x 768 1.53-1.61 -> 1.03-1.34 ms, 1024 x 768 0.27-0.30 -> 0.20-0.24,
  // 256 x 768 0.070-0.073 -> 0.053-0.062; two threads 4096 x 768 1.05-1.11 ->
  // 0.59-0.97, 1024 x 768 0.19-0.20 -> 0.13-0.16.
  const bool stream = streams(a.stream_out, rows * cols, tasks);
  parallel_ranges(rows, tasks, [&](long r0, long r1) {
    float* stage = stream ? tl_stage.get(static_cast<std::size_t>(cols)) : nullptr;
    // Offsets of x and y, then of the residual and the sum (which share one
    // walk when their strides agree, as they do in the layers).
    const long* strides[3] = {a.x_strides, a.y_strides, a.r_strides};
    const long* sum_strides[1] = {a.sum_strides};
    Odometer od(lead, a.shape, 3, strides, r0);
    Odometer os(lead, a.shape, 1, sum_strides, r0);
    for (long r = r0; r < r1; ++r, od.next(), os.next()) {
      const float* res = a.residual ? a.residual + od.off[2] : nullptr;
      float* sum = a.sum ? a.sum + os.off[0] : nullptr;
      if (stage) {
        kt.layer_norm_row_streamed(a.x + od.off[0], res, a.shift, a.gamma, a.beta, a.y + od.off[1], sum, cols, a.eps,
                                   stage);
      } else {
        kt.layer_norm_row(a.x + od.off[0], res, a.shift, a.gamma, a.beta, a.y + od.off[1], sum, cols, a.eps);
      }
    }
    if (stage) kt.fence();  // the streamed stores, before the task counts as done
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
  // A large new result of ReLU goes past the caches, as layerNorm's (one
  // thread, Zen 4, relu(x) in turns of the event loop, interleaved: 1024 x 3072
  // 1.14-1.24 -> 0.78-0.82 ms, 384 x 3072 0.34-0.38 -> 0.23-0.26; two threads
  // 1024 x 3072 0.77-0.88 -> 0.53-0.54). GELU's arithmetic hides the misses
  // of ordinary stores, and streamed it was slower (384 x 3072 0.79-0.82 ->
  // 0.87-0.96 ms), so its stores stay ordinary.
  const bool may_stream = a.stream_out && a.act == kActRelu;
  if (rows == 1) {
    const long chunk = 1L << 14;
    const long chunks = (cols + chunk - 1) / chunk;
    const long tasks = task_count(chunks, cols, kElemsPerTask);
    const bool stream = streams(may_stream, cols, tasks);
    const auto fn = stream ? kt.activation_array_streamed : kt.activation_array;
    parallel_ranges(chunks, tasks, [&](long c0, long c1) {
      const long j0 = c0 * chunk, j1 = c1 * chunk < cols ? c1 * chunk : cols;
      fn(a.act, a.x + j0, a.y + j0, j1 - j0);
      if (stream) kt.fence();
    });
    return;
  }
  const long tasks = task_count(rows, rows * cols, kElemsPerTask);
  const bool stream = streams(may_stream, rows * cols, tasks);
  const auto fn = stream ? kt.activation_array_streamed : kt.activation_array;
  parallel_ranges(rows, tasks, [&](long r0, long r1) {
    const long* strides[2] = {xs, ys};
    Odometer od(rank - 1, shape, 2, strides, r0);
    for (long r = r0; r < r1; ++r, od.next()) fn(a.act, a.x + od.off[0], a.y + od.off[1], cols);
    if (stream) kt.fence();
  });
}

}  // namespace attn
