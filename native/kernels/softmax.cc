#include "softmax.h"

#include <algorithm>
#include <vector>

#include "../runtime/cpu.h"
#include "../runtime/fp_env.h"
#include "../runtime/thread_pool.h"
#include "scratch.h"
#include "tuning.h"

namespace attn {
namespace {

constexpr long kElemsPerTask = 1L << 15;  // below this, one thread

thread_local Scratch tl_stage;

}  // namespace

void softmax(const KernelTable& kt, const SoftmaxArgs& s, bool parallel) {
  const int lead = s.rank - 1;
  const long cols = s.shape[s.rank - 1];
  long rows = 1;
  for (int d = 0; d < lead; ++d) rows *= s.shape[d];
  if (rows == 0 || cols == 0) return;
  const FlushDenormals fp;
  const bool has_mask = s.fmask || s.umask;
  const bool mask_bcast_cols = has_mask && s.m_strides[s.rank - 1] == 0;
  const long q_rows = lead >= 1 ? s.shape[lead - 1] : 1;

  long tasks = parallel ? task_count(rows, rows * cols, kElemsPerTask) : 1;
  if (tasks > 1) {
    const long pool = ThreadPool::global().size();
    if (tasks > 8 * pool) tasks = 8 * pool;
  }

  // The rows ask for the next row's input while they compute, and for its
  // output too when a thread's share of the output is larger than L2 (its
  // lines then come from L3 or memory before they can be written). When the
  // output fits, the extra prefetches only cost issue slots (Cascade Lake,
  // one thread, best of 5 interleaved runs: 64 x 4096 with them 134 us,
  // without 117; 16 x 4096 28 and 26 us; 1024 x 4096, 16 MiB out, about 7%
  // faster with them).
  const long threads = threads_for_tasks(tasks);
  const double y_bytes = 4.0 * static_cast<double>(rows) * static_cast<double>(cols);
  const bool prefetch_y = y_bytes / static_cast<double>(threads) > static_cast<double>(cpu_info().cache_used.l2);

  // Plain rows (no mask, every entry live, scale >= 0) go in runs through
  // softmax_rows, which overlaps the passes of three rows (a run: rows
  // consecutive along the last leading axis), when a thread's share of the
  // output fits in its L2, or else when the six rows a run touches at once
  // fit in L1 (then prefetching the next rows as this routine does). One
  // thread, Zen 4, interleaved against a row at a time: 16 x 8192 to
  // 512 x 1024 15-38% faster, 4096 x 512 16-30%, 2048 x 1024 12-16%; rows of
  // 2048 and 4096 from beyond L2 17-24% slower in runs, so they stay a row at
  // a time. Each row gets the same arithmetic either way: results do not
  // depend on the runs.
  const bool in_runs = !has_mask && !s.causal && s.scale >= 0.0f && lead >= 1 &&
                       (!prefetch_y || 6.0 * 4.0 * static_cast<double>(cols) <= static_cast<double>(cpu_info().cache_used.l1d));

  // A new result's rows go past the caches (staged, then streamed: see
  // softmax_rows and softmax_row_streamed) when they are longer than a
  // sixteenth of L1, or when a thread's share of the result is at least half
  // its L2. A result's memory is recycled from results the garbage collector
  // freed, and it collects them in batches (when tens of megabytes of them
  // have piled up), so it comes back cold: each line written with ordinary
  // stores is first read from memory. One thread, Zen 4, into results in
  // buffers that fill 64 MiB in turn: 32 x 2048 and 16 x 4096 40-45% faster,
  // 64 x 4096 41%, 128 x 1024 30-38%, 512 x 768 9-17%. Short rows of a large
  // result too, softmax(x) as users call it, in turns of the event loop:
  // 4096 x 512 0.78-0.83 -> 0.51-0.55 ms, 1024 x 512 0.19-0.20 -> 0.14-0.15,
  // 256 x 512 0.05-0.06 -> 0.04, 16384 x 128 0.71-0.81 -> 0.65-0.66; two
  // threads, 4096 x 512 0.47-0.50 -> 0.31-0.37. A small result (128 x 128:
  // 0.035 -> 0.039 ms streamed) keeps ordinary stores: the rotation of small
  // blocks can stay in cache. Into a given `out` (often reused, and then in
  // cache) stores stay ordinary.
  const bool long_rows = 4.0 * static_cast<double>(cols) > static_cast<double>(cpu_info().cache_used.l1d) / 16.0;
  const bool stream = s.stream_out && (long_rows || stream_new_result(y_bytes, threads));

  parallel_ranges(rows, tasks, [&](long r0, long r1) {
    const long* strides[3] = {s.x_strides, s.y_strides, s.m_strides};
    Odometer od(lead, s.shape, has_mask ? 3 : 2, strides, r0);
    if (in_runs) {
      float* stage = stream ? tl_stage.get(static_cast<std::size_t>(2 * cols)) : nullptr;
      for (long r = r0; r < r1;) {
        const long run = std::min(r1 - r, s.shape[lead - 1] - od.idx[lead - 1]);
        kt.softmax_rows(s.x + od.off[0], s.x_strides[lead - 1], s.y + od.off[1], s.y_strides[lead - 1], run, cols,
                        s.scale, prefetch_y, stage);
        for (long i = 0; i < run; ++i) od.next();
        r += run;
      }
      if (stage) kt.fence();  // the streamed stores, before the task counts as done
      return;
    }
    // A new result's long rows, one at a time, through a stage row too.
    float* row_stage = stream ? tl_stage.get(static_cast<std::size_t>(cols)) : nullptr;
    // A mask broadcast along the row is expanded once per row.
    std::vector<float> frow;
    std::vector<std::uint8_t> urow;
    if (mask_bcast_cols) {
      if (s.fmask) frow.resize(static_cast<std::size_t>(cols));
      if (s.umask) urow.resize(static_cast<std::size_t>(cols));
    }
    for (long r = r0; r < r1; ++r) {
      const float* xr = s.x + od.off[0];
      float* yr = s.y + od.off[1];
      const float* fm = s.fmask ? s.fmask + od.off[2] : nullptr;
      const std::uint8_t* um = s.umask ? s.umask + od.off[2] : nullptr;
      if (mask_bcast_cols) {
        if (fm) {
          for (long j = 0; j < cols; ++j) frow[j] = *fm;
          fm = frow.data();
        }
        if (um) {
          for (long j = 0; j < cols; ++j) urow[j] = *um;
          um = urow.data();
        }
      }
      const long valid = s.causal ? causal_keys(lead >= 1 ? od.idx[lead - 1] : 0, q_rows, cols) : cols;
      od.next();
      const bool more = r + 1 < r1;
      if (row_stage) {
        kt.softmax_row_streamed(xr, yr, cols, valid, s.scale, fm, um, more ? s.x + od.off[0] : nullptr, row_stage);
      } else {
        kt.softmax_row(xr, yr, cols, valid, s.scale, fm, um, more ? s.x + od.off[0] : nullptr,
                       more && prefetch_y ? s.y + od.off[1] : nullptr);
      }
    }
    if (row_stage) kt.fence();  // as above
  });
}

}  // namespace attn
