// GEMM driver: the Goto/BLIS loop nest (JC -> PC -> IC -> JR -> IR) around
// the per-ISA micro-kernel, an unpacked path for small and skinny shapes, and
// threading over M and N only. K is never split, and the K blocking depends
// only on the ISA and caches, so every element of C is computed by the same
// sequence of operations whatever the thread count.
#include "gemm.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "../runtime/cpu.h"
#include "../runtime/fp_env.h"
#include "../runtime/thread_pool.h"
#include "bounds.h"
#include "scratch.h"
#include "tuning.h"

namespace attn {
namespace {

inline long min_l(long a, long b) { return a < b ? a : b; }
inline long max_l(long a, long b) { return a > b ? a : b; }
inline long round_down(long v, long m) { return v / m * m; }
inline long ceil_div(long a, long b) { return (a + b - 1) / b; }

// Element (i, j) of a matrix view is p[i * rs + j * cs].
struct View {
  const float* p;
  long rs, cs;
};

// The tuning override ATTN_GEMM_BLOCKING=mc,kc,nc is set: take it as it is.
bool blocking_overridden() { return std::getenv("ATTN_GEMM_BLOCKING") != nullptr; }

thread_local Scratch tl_pack_a;
thread_local Scratch tl_pack_b;

long parse_blocking_env(const char* name, int which);

// Packs rows [p0, p0 + kc) x cols [j0, j0 + cols) of B into nr-column panels.
void pack_b(const KernelTable& kt, View b, long p0, long kc, long j0, long cols, float* dst) {
  pack_panels(kt, b.p + p0 * b.rs + j0 * b.cs, b.cs, b.rs, cols, kc, kt.nr, dst);
}

struct Problem {
  long m, n, k;
  View a, b;
  float* c;
  long ldc;
  float alpha, beta;
  const float* bias;
  int act;
  bool stream_c;  // a new result whose tiles may go past the caches (see store_mode)
};

// What the micro-kernels add to the last depth block's act: kStoreStream for
// a new result of one depth block (several would read C back), whose every
// tile row is aligned (the caller checked C and ldc; tiles start at
// multiples of nr).
int store_mode(const Problem& p, long kc) { return p.stream_c && p.k <= kc ? kStoreStream : kActNone; }

// C = act(beta * C (+ bias)), for the degenerate cases (k == 0 or alpha == 0).
void scale_c(const KernelTable& kt, const Problem& p) {
  for (long i = 0; i < p.m; ++i) {
    float* row = p.c + i * p.ldc;
    if (p.beta == 0.0f) {
      for (long j = 0; j < p.n; ++j) row[j] = 0.0f;
    } else if (p.beta != 1.0f) {
      for (long j = 0; j < p.n; ++j) row[j] *= p.beta;
    }
    if (p.bias)
      for (long j = 0; j < p.n; ++j) row[j] += p.bias[j];
    if (p.act != kActNone) kt.activation_array(p.act, row, row, p.n);
  }
}

// Runs `tasks` tasks on the pool or, when !parallel, on this thread.
template <class F>
void for_tasks(bool parallel, long tasks, F&& f) {
  if (parallel && tasks > 1) {
    parallel_for(tasks, f);
  } else {
    for (long t = 0; t < tasks; ++t) f(t);
  }
}

// Work below tuning().min_parallel_flops stays on the calling thread; each
// extra thread must get at least half of it.
int threads_for(double flops, bool parallel) {
  const double min_flops = tuning().min_parallel_flops;
  if (!parallel || flops < min_flops) return 1;
  int pool = ThreadPool::global().size();
  long want = static_cast<long>(flops / (min_flops / 2));
  return static_cast<int>(max_l(1, min_l(pool, want)));
}

// A product's work for the thread split: its flops, or for a skinny one (a
// few rows against a weight matrix) the bytes it must stream, each worth
// about as much time as kFlopsPerByte flops (FMA peak over L3 bandwidth, per
// core): a second core streams the other half of B.
constexpr double kFlopsPerByte = 8.0;
inline double gemm_work(const Problem& p) {
  const double flops = 2.0 * static_cast<double>(p.m) * static_cast<double>(p.n) * static_cast<double>(p.k);
  const double bytes = 4.0 * (static_cast<double>(p.k) * static_cast<double>(p.n) +
                              static_cast<double>(p.m) * static_cast<double>(p.k));
  return flops > kFlopsPerByte * bytes ? flops : kFlopsPerByte * bytes;
}

// Splits [0, len) into `parts` ranges whose inner boundaries are multiples of
// `align`, as evenly as that allows.
inline long split_point(long len, long parts, long idx, long align) {
  if (idx >= parts) return len;
  long units = ceil_div(len, align);
  return min_l(len, (units * idx / parts) * align);
}

// Chooses a tm x tn thread grid (tm * tn == nt) with the smallest largest
// block, then the smallest block perimeter (less duplicated packing).
void choose_grid(long m, long n, int nt, int mr, int nr, long* tm_out, long* tn_out) {
  long best_tm = 1, best_tn = nt;
  double best_area = -1, best_perim = 0;
  for (long tm = 1; tm <= nt; ++tm) {
    if (nt % tm) continue;
    long tn = nt / tm;
    if (tm > ceil_div(m, mr) || tn > ceil_div(n, nr)) continue;
    long rows = ceil_div(ceil_div(m, mr), tm) * mr;
    long cols = ceil_div(ceil_div(n, nr), tn) * nr;
    double area = static_cast<double>(min_l(rows, m)) * static_cast<double>(min_l(cols, n));
    double perim = static_cast<double>(rows + cols);
    if (best_area < 0 || area < best_area || (area == best_area && perim < best_perim)) {
      best_area = area;
      best_perim = perim;
      best_tm = tm;
      best_tn = tn;
    }
  }
  if (best_area < 0) {  // too small to split in both: fall back to one dimension
    best_tm = 1;
    best_tn = 1;
  }
  *tm_out = best_tm;
  *tn_out = best_tn;
}

// Runs of [0, units) that the threads take in turn, largest first: each about
// 1 / (2 nt) of what is left, clamped to [lo, hi] units. The thread that
// finishes its last run first then waits at most one short run for the
// others, where equal runs leave it waiting up to a long one (on a shared
// machine one vCPU is often held up). The runs depend on (units, nt, lo, hi)
// only, never on which thread takes which, so results do not either.
struct GuidedRuns {
  static constexpr long kMax = 128;
  long at[kMax + 1];  // run t is [at[t], at[t + 1])
  long count = 0;
  GuidedRuns(long units, long nt, long lo, long hi) {
    lo = max_l(1, lo);
    hi = max_l(lo, hi);
    at[0] = 0;
    for (long u = 0; u < units;) {
      const long left = units - u;
      long len = min_l(hi, max_l(lo, ceil_div(left, 2 * nt)));
      if (count == kMax - 1 || len > left) len = left;  // the last run takes the rest
      u += len;
      at[++count] = u;
    }
  }
};

// The row tiles of a product of m rows: mr rows each, but for the last two
// when m is not a multiple of mr (r = m mod mr rows left over): those are a
// pair, run together by gemm_micro_pair so that the second tile reads B from
// L1 after the first (a tile run alone streams as much of B as a full one,
// for whatever share of the work it has). A short remainder (2 r <= mr)
// shares the pair's rows evenly with the full tile (16 rows are 8 + 8, not
// 14 + 2: a tile of few rows runs its FMAs at a fraction of the rate), except
// in a product of fewer than 2 mr rows whose B streams from beyond L2: with
// so few rows B is read once per product, and one of a quarter of L2 or more
// (a layer's weights against a short request) has seldom survived whatever
// ran since it was last used. There the full tile's FMAs hide under the
// stream and the short one's work is all that is added (16 x 1536 x 512 on
// Sapphire Rapids: 0.131 ms as 14 + 2, 0.160 as 8 + 8, 0.174 as 8 + 8 run
// apart). The tiles depend on the shape and the CPU's caches only,
// never on the thread count or the blocking, so every element of C gets the
// same arithmetic whatever those are.
struct RowTiles {
  long m, mr;
  long t0 = -1, h = 0;  // when t0 >= 0, the pair of tiles [t0, t0 + h) and [t0 + h, m)
  RowTiles(const Problem& p, long mr_) : m(p.m), mr(mr_) {
    const long r = m % mr;
    if (m > mr && r > 0) {
      t0 = m - mr - r;
      const double b_bytes = 4.0 * static_cast<double>(p.k) * static_cast<double>(p.n);
      const bool streams = m < 2 * mr && b_bytes >= static_cast<double>(cpu_info().cache_used.l2) / 4;
      h = 2 * r <= mr && !streams ? (mr + r + 1) / 2 : mr;
    }
  }
  // Rows of the tile that starts at row i (a tile boundary) of a block ending at `end`.
  long rows_at(long i, long end) const { return i == t0 ? h : min_l(mr, end - i); }
  // Whether the tile at row i starts the pair, both of whose tiles end by `end`.
  bool pair_at(long i, long end) const { return i == t0 && end >= m; }
  // Row v (a multiple of mr, or m) moved off the middle of the pair: a boundary between whole tiles.
  long boundary(long v) const {
    v = min_l(v, m);
    return t0 >= 0 && v == t0 + mr ? t0 + h : v;
  }
  // Boundary idx of [0, m) cut into `parts` ranges of whole tiles.
  long split(long parts, long idx) const { return boundary(split_point(m, parts, idx, mr)); }
  // End of the A block from ic (at most mc rows, within r1), never inside the pair.
  long block_end(long ic, long mc, long r1) const {
    const long end = min_l(ic + mc, r1);
    return t0 >= 0 && end > t0 && end < r1 ? r1 : end;
  }
  // Room an A block of up to mc rows needs: mc (a multiple of mr), the pair's rows and a spare panel.
  static long packed_rows(long mc, long mr) { return mc + 3 * mr; }
};

// Packs rows [ic, end) x depth [pc, pc + kc) of A, each tile into its own
// mr-row panel (tile s at apack + s * mr * kc).
void pack_a_tiles(const KernelTable& kt, View a, const RowTiles& rt, long ic, long end, long pc, long kc, float* apack) {
  const long mr = kt.mr;
  for (long i = ic, s = 0; i < end; ++s) {
    const long rows = rt.rows_at(i, end);
    const long next = i + rows < end ? rt.rows_at(i + rows, end) : 0;
    kt.pack_panel(a.p + i * a.rs + pc * a.cs, a.rs, a.cs, rows, kc, static_cast<int>(mr), next, apack + s * mr * kc);
    i += rows;
  }
}

// The micro-tiles of one packed A block (rows [ic, end)) against columns
// [c0, c1) of C: tile(s, i, rows, jr) runs the micro-kernel on tile s (rows
// from i) and micro-panel jr, pair(s, i, jr) tiles s and s + 1 (RowTiles'
// pair) together. With nc_l2 > 0 an A micro-panel stays in L1 across runs of
// nc_l2 columns of B from L2; else each B micro-panel is reused across the A
// block's micro-panels.
template <class Tile, class Pair>
void block_tiles(const RowTiles& rt, long ic, long end, long c0, long c1, long nr, long nc_l2, Tile&& tile,
                 Pair&& pair) {
  // Calls f(s, i, rows, paired) for each tile (or pair) of the block in order.
  auto tiles = [&](auto&& f) {
    for (long i = ic, s = 0; i < end; ++s) {
      const long rows = rt.rows_at(i, end);
      if (rt.pair_at(i, end)) {
        f(s, i, rows, true);
        i = end;
      } else {
        f(s, i, rows, false);
        i += rows;
      }
    }
  };
  if (nc_l2 > 0) {
    for (long j2 = c0; j2 < c1; j2 += nc_l2)
      tiles([&](long s, long i, long rows, bool paired) {
        for (long jr = j2; jr < min_l(c1, j2 + nc_l2); jr += nr) paired ? pair(s, i, jr) : tile(s, i, rows, jr);
      });
  } else {
    for (long jr = c0; jr < c1; jr += nr)
      tiles([&](long s, long i, long rows, bool paired) { paired ? pair(s, i, jr) : tile(s, i, rows, jr); });
  }
}

// Rows of an A block: the blocking's mc, or for a product shallower than kc
// more of them, which keep the A block's share of L2 (each B micro-panel is
// then fetched from L3 fewer times).
long block_rows(const GemmBlocking& blk, long kc_max, int mr) {
  if (kc_max >= blk.kc || blocking_overridden()) return blk.mc;
  return max_l(blk.mc, min_l(round_down(1024, mr), round_down(blk.mc * blk.kc / kc_max, mr)));
}

// How the micro-kernel prefetches the weight panels (B packed beforehand;
// the levels of gemm_micro_pair). A product of one A block (m <= mc rows: a
// short request) streams its weights through once per call from wherever
// they are, main memory after an idle gap or when other work has had the
// caches: on every CPU it fetches them a few KiB ahead into L2 and near ones
// into L1 (gemm_micro_stream). Zen 4, interleaved: the d512 block at (1, 16)
// with 5 ms between calls 4-9% faster on one thread with the near fetch
// alone, 3% on two; back to back the same; the far fetch: see
// register_tile.inc. Larger products stream where the tuning says so
// (stream_panels), else prefetch as it says.
enum PrefetchLevel : int { kNoPrefetch = 0, kNearPrefetch = 1, kStreamPrefetch = 2 };
int prefetch_level(const Problem& p, long mc) {
  if (p.m <= mc || tuning().stream_panels) return kStreamPrefetch;
  return tuning().prefetch_panels ? kNearPrefetch : kNoPrefetch;
}
using MicroFn = void (*)(long, const float*, const float*, float*, long, float, float, int, int, const float*, int);
MicroFn micro_for(const KernelTable& kt, int level) {
  return level == kStreamPrefetch ? kt.gemm_micro_stream : level == kNearPrefetch ? kt.gemm_micro_prefetch : kt.gemm_micro;
}

// The Goto/BLIS loop nest on nt threads, B packed here block by block.
void gemm_blocked(const KernelTable& kt, const Problem& p, int nt) {
  const GemmBlocking blk = gemm_blocking_for_depth(kt, p.k);
  const int mr = kt.mr, nr = kt.nr;
  long tm = 1, tn = 1;
  if (nt > 1) choose_grid(p.m, p.n, nt, mr, nr, &tm, &tn);
  const long tasks = tm * tn;
  const bool parallel = tasks > 1;
  const int prefetch = tuning().prefetch_panels ? kNearPrefetch : kNoPrefetch;
  const MicroFn micro = micro_for(kt, prefetch);
  const long nc_l2 = blk.nc_l2;

  const long nc_max = min_l(blk.nc, ceil_div(p.n, nr) * nr);
  const long kc_max = min_l(blk.kc, p.k);
  const long mc = block_rows(blk, kc_max, mr);
  const RowTiles rt(p, mr);
  float* bpack = tl_pack_b.get(static_cast<std::size_t>(nc_max * kc_max));
  const int store = store_mode(p, blk.kc);

  for (long jc = 0; jc < p.n; jc += blk.nc) {
    const long ncur = min_l(blk.nc, p.n - jc);
    const long panels = ceil_div(ncur, nr);
    for (long pc = 0; pc < p.k; pc += blk.kc) {
      const long kc = min_l(blk.kc, p.k - pc);
      const float beta = pc == 0 ? p.beta : 1.0f;
      const int act = pc + kc >= p.k ? p.act | store : kActNone;  // on the finished sums only

      // Pack this B panel, split by micro-panels across the threads.
      const long pack_tasks = parallel ? min_l(tasks, panels) : 1;
      for_tasks(parallel, pack_tasks, [&](long t) {
        long q0 = split_point(panels, pack_tasks, t, 1);
        long q1 = split_point(panels, pack_tasks, t + 1, 1);
        if (q1 <= q0) return;
        long c0 = q0 * nr, c1 = min_l(q1 * nr, ncur);
        pack_b(kt, p.b, pc, kc, jc + c0, c1 - c0, bpack + c0 * kc);
      });

      for_tasks(parallel, tasks, [&](long t) {
        const long ti = t / tn, tj = t % tn;
        const long r0 = rt.split(tm, ti), r1 = rt.split(tm, ti + 1);
        const long c0 = split_point(ncur, tn, tj, nr), c1 = split_point(ncur, tn, tj + 1, nr);
        if (r1 <= r0 || c1 <= c0) return;
        float* apack = tl_pack_a.get(static_cast<std::size_t>(RowTiles::packed_rows(mc, mr) * kc));
        for (long ic = r0; ic < r1;) {
          const long end = rt.block_end(ic, mc, r1);
          pack_a_tiles(kt, p.a, rt, ic, end, pc, kc, apack);
          const auto bias_at = [&](long jr) { return pc == 0 && p.bias ? p.bias + jc + jr : nullptr; };
          block_tiles(
              rt, ic, end, c0, c1, nr, nc_l2,
              [&](long s, long i, long rows, long jr) {
                micro(kc, apack + s * mr * kc, bpack + jr * kc, p.c + i * p.ldc + jc + jr, p.ldc, p.alpha, beta,
                      static_cast<int>(rows), static_cast<int>(min_l(nr, c1 - jr)), bias_at(jr), act);
              },
              [&](long s, long i, long jr) {
                kt.gemm_micro_pair(kc, apack + s * mr * kc, static_cast<int>(rt.h), apack + (s + 1) * mr * kc,
                                   static_cast<int>(p.m - i - rt.h), bpack + jr * kc, p.c + i * p.ldc + jc + jr,
                                   p.c + (i + rt.h) * p.ldc + jc + jr,
                                   p.ldc, p.alpha, beta, static_cast<int>(min_l(nr, c1 - jr)), bias_at(jr), act,
                                   prefetch);
              });
          ic = end;
        }
        if (store) kt.fence();  // the streamed stores, before the task counts as done
      });
    }
  }
}

thread_local Scratch tl_pack_a_shared;

// The K blocks of B's micro-panel q, for the products that share B's
// micro-panels out among threads: f(jr, n, pc, kc, beta, act, bias) for the
// panel's first column jr and its n live columns, each depth block [pc, pc +
// kc) in order, the first block taking C's beta and the bias, the last the
// activation (on the finished sums only).
template <class F>
void for_panel_blocks(const Problem& p, const GemmBlocking& blk, long nr, long q, F&& f) {
  const long jr = q * nr, n = min_l(p.n, jr + nr) - jr;
  for (long pc = 0; pc < p.k; pc += blk.kc) {
    const long kc = min_l(blk.kc, p.k - pc);
    f(jr, static_cast<int>(n), pc, kc, pc == 0 ? p.beta : 1.0f, pc + kc >= p.k ? p.act : kActNone,
      pc == 0 && p.bias ? p.bias + jr : nullptr);
  }
}

// Few rows against B packed beforehand, on nt threads: all of A is packed,
// then B's micro-panels are shared out, each fetched once for every row tile
// (the pair reads it from L1; A stays in L2). A large A is packed once, on
// the pool, and shared; a small one (a short request) by each thread for
// itself, in its own memory: a shared copy, rewritten by one core on every
// call while the others' caches hold it from the last, cost a coherence miss
// per line (16 x 512: 10.8 us to pack on two threads, 1.2 us on one).
// Each pool thread starts on its own contiguous share of the panels (by its
// index: the same share on every call, so a weight of up to nt L2s' worth is
// read from the L2 that read it last time) and then helps with what the
// others have left, so one held up by the system does not hold up the
// product. Same tiles, same order over k for every element as the other
// paths, whichever thread computes a panel. Returns false (nothing done) when
// A would not fit the budget.
bool gemm_prepacked_few_rows(const KernelTable& kt, const Problem& p, int nt, const PackedMatrix& pre) {
  const GemmBlocking& blk = pre.blk;
  const long mr = kt.mr, nr = kt.nr;
  const RowTiles rt(p, mr);
  long starts[64], rows[64];
  long tiles = 0;
  for (long i = 0; i < p.m; i += rows[tiles++]) {
    if (tiles == 64) return false;
    starts[tiles] = i;
    rows[tiles] = rt.rows_at(i, p.m);
  }
  constexpr long kMaxFloats = 2L << 20;  // 8 MiB of packed A
  if (p.k > kMaxFloats / (tiles * mr)) return false;
  const std::size_t a_floats = static_cast<std::size_t>(tiles * mr * p.k);
  // Depth block pc of tile s is at apack + tiles * mr * pc + s * mr * kc.
  const long kblocks = ceil_div(p.k, blk.kc);
  auto pack = [&](float* apack, long t) {
    const long s = t % tiles, pc = t / tiles * blk.kc, kc = min_l(blk.kc, p.k - pc);
    kt.pack_panel(p.a.p + starts[s] * p.a.rs + pc * p.a.cs, p.a.rs, p.a.cs, rows[s], kc, static_cast<int>(mr), 0,
                  apack + tiles * mr * pc + s * mr * kc);
  };
  const bool shared = a_floats > (64u << 10);
  float* shared_a = nullptr;
  if (shared) {
    shared_a = tl_pack_a_shared.get(a_floats);
    parallel_for(tiles * kblocks, [&](long t) { pack(shared_a, t); });
  }
  const long panels = ceil_div(p.n, nr);
  const int prefetch = prefetch_level(p, block_rows(blk, min_l(blk.kc, p.k), static_cast<int>(mr)));
  const MicroFn micro = micro_for(kt, prefetch);
  ShareCursors shares(panels, nt);
  parallel_for(nt, [&](long) {
    float* apack = shared_a;
    if (!shared) {
      apack = tl_pack_a.get(a_floats);
      for (long t = 0; t < tiles * kblocks; ++t) pack(apack, t);
    }
    shares.for_each(ThreadPool::thread_index(), [&](long q) {
      for_panel_blocks(p, blk, nr, q, [&](long jr, int n, long pc, long kc, float beta, int act, const float* bias) {
        const float* ablock = apack + tiles * mr * pc;
        const float* b = pre.panel(jr, pc);
        for (long s = 0; s < tiles; ++s) {
          if (rt.pair_at(starts[s], p.m)) {
            kt.gemm_micro_pair(kc, ablock + s * mr * kc, static_cast<int>(rows[s]), ablock + (s + 1) * mr * kc,
                               static_cast<int>(rows[s + 1]), b, p.c + starts[s] * p.ldc + jr,
                               p.c + starts[s + 1] * p.ldc + jr, p.ldc, p.alpha, beta, n, bias, act, prefetch);
            break;
          }
          micro(kc, ablock + s * mr * kc, b, p.c + starts[s] * p.ldc + jr, p.ldc, p.alpha, beta,
                static_cast<int>(rows[s]), n, bias, act);
        }
      });
    });
  });
  return true;
}

// At most narrow_rows rows against B packed beforehand (a token's
// projections when decoding): A as one compact panel as wide as its rows (one
// contiguous row is used as it is), B's micro-panels shared out as in
// gemm_prepacked_few_rows, each tile by gemm_micro_narrow. Zen 4, packed
// weights in L3, one row, interleaved: 1 x 1536 x 512 0.057 -> 0.037 ms on
// one thread, 0.031 -> 0.022 on two; 1 x 512 x 512 0.018 -> 0.012. Same
// tiles, same order over k for every element as the other paths.
void gemm_prepacked_narrow(const KernelTable& kt, const Problem& p, int nt, const PackedMatrix& pre) {
  const GemmBlocking& blk = pre.blk;
  const long m = p.m, nr = kt.nr;
  const long panels = ceil_div(p.n, nr);
  const long parts = max_l(1, min_l(nt, panels / 2));
  ShareCursors shares(panels, parts);
  parallel_for(parts, [&](long) {
    const float* apack = p.a.p;
    if (m > 1 || p.a.cs != 1) {
      float* buf = tl_pack_a.get(static_cast<std::size_t>(m * p.k));
      kt.pack_panel(p.a.p, p.a.rs, p.a.cs, m, p.k, static_cast<int>(m), 0, buf);
      apack = buf;
    }
    shares.for_each(ThreadPool::thread_index(), [&](long q) {
      for_panel_blocks(p, blk, nr, q, [&](long jr, int n, long pc, long kc, float beta, int act, const float* bias) {
        kt.gemm_micro_narrow(kc, apack + m * pc, pre.panel(jr, pc), p.c + jr, p.ldc, p.alpha, beta,
                             static_cast<int>(m), n, bias, act);
      });
    });
  });
}

// ---- Products with packed weights on the tile unit (isa/amx.cc) ----

// Rows from which a product takes the tile unit: below, the float32 panels
// stream fewer bytes (4 per weight against 6) and the FMAs keep up.
long amx_min_rows() {
  static const long v = [] {
    const char* env = std::getenv("ATTN_AMX_MIN_ROWS");
    const long x = env ? std::strtol(env, nullptr, 10) : 0;
    return x > 0 ? x : 32L;
  }();
  return v;
}

// Blocking: kc values of k per block (a multiple of 32), mc rows per A
// block. A 32 x 32 block of C stays in the tile registers for all of a
// k block, so C is read and written once per k block: blocks are deep
// (short ones, with C re-read from memory each time, measured at half the
// speed), each A group (32 rows x kc) and B panel (32 columns x kc) streams
// from L2, and the A block takes half of L2. ATTN_AMX_BLOCKING=mc,kc
// overrides.
struct AmxBlocking {
  long mc, kc;
};
AmxBlocking amx_blocking(long k) {
  // The overrides (0: none), read once.
  static const AmxBlocking forced = [] {
    const long mc = parse_blocking_env("ATTN_AMX_BLOCKING", 0), kc = parse_blocking_env("ATTN_AMX_BLOCKING", 1);
    return AmxBlocking{mc > 0 ? max_l(32, round_down(mc, 32)) : 0, kc > 0 ? max_l(32, round_down(kc, 32)) : 0};
  }();
  long kc = forced.kc > 0 ? forced.kc : 1024;
  // Equal blocks: 1536 = 2 x 768 rather than 1024 + 512.
  const long blocks = ceil_div(k, kc);
  kc = min_l(kc, ceil_div(ceil_div(k, blocks), 32) * 32);
  long mc = round_down(static_cast<long>(cpu_info().cache_used.l2 / 2) / (6 * kc), 32);
  mc = forced.mc > 0 ? forced.mc : max_l(32, min_l(mc, 512));
  return AmxBlocking{mc, kc};
}

thread_local Scratch tl_amx_a;
thread_local Scratch tl_amx_shared;

// One 32 x 32 block of C (rows x cols of it live): whole blocks without an
// activation go straight to C, others through a block on the stack.
void amx_tile(const KernelTable& kt, long steps, const std::uint16_t* a, const std::uint16_t* b, float* c, long ldc,
              long rows, long cols, int init, const float* bias32, int act) {
  const AmxKernels& ax = *kt.amx;
  if (rows == 32 && cols == 32 && act == kActNone) {
    ax.block(steps, a, b, c, ldc, init, bias32);
    return;
  }
  alignas(64) float s[32 * 32];
  if (init == 1) {
    for (long i = 0; i < 32; ++i)
      for (long j = 0; j < 32; ++j) s[i * 32 + j] = i < rows && j < cols ? c[i * ldc + j] : 0.0f;
  }
  ax.block(steps, a, b, s, 32, init, bias32);
  if (act != kActNone) kt.activation_array(act, s, s, 32 * 32);
  for (long i = 0; i < rows; ++i)
    for (long j = 0; j < cols; ++j) c[i * ldc + j] = s[i * 32 + j];
}

// Whether a product can take the tile unit: a table with one, rows of A
// contiguous, alpha 1, and beta 0 (with or without bias) or 1 (without), 32
// rows or more (amx_min_rows).
bool amx_suits(const KernelTable& kt, const Problem& p) {
  if (!kt.amx || kt.nr != 32 || p.a.cs != 1 || p.alpha != 1.0f || p.m < amx_min_rows()) return false;
  return p.beta == 0.0f || (p.beta == 1.0f && !p.bias);
}

// C = A B (+ bias) (+ C when beta is 1), then the activation, on the tile
// unit, from B panels of steps_all steps of k each (all of k): the threads
// take runs of 32-row groups, or with few rows runs of column panels. Every
// element gets the same arithmetic (k blocks set by k alone) whatever the
// thread count.
void gemm_amx_core(const KernelTable& kt, const Problem& p, int nt, const std::uint16_t* panels, long steps_all) {
  const AmxKernels& ax = *kt.amx;
  const AmxBlocking blk = amx_blocking(p.k);
  const long groups = ceil_div(p.m, 32), npanels = ceil_div(p.n, 32);
  const long panel_len = steps_all * 3072;
  // Rows when each thread gets four groups or more; else runs of column
  // panels, with all of A split once beforehand and shared (each thread
  // splitting it again cost more than the columns it had to do, and two
  // threads were slower than one).
  const bool by_rows = nt <= 1 || groups >= 4L * nt;
  const GuidedRuns runs(by_rows ? groups : npanels, nt, 1, by_rows ? blk.mc / 32 : ceil_div(npanels, 2L * nt));
  std::uint16_t* shared = nullptr;
  if (!by_rows) {
    shared = reinterpret_cast<std::uint16_t*>(tl_amx_shared.get(static_cast<std::size_t>(groups * steps_all * 3072 / 2)));
    parallel_for(groups, [&](long g) {
      ax.split_a(p.a.p + g * 32 * p.a.rs, p.a.rs, min_l(32, p.m - g * 32), p.k, shared + g * steps_all * 3072);
    });
  }
  for_tasks(nt > 1, runs.count, [&](long t) {
    const long r0 = by_rows ? runs.at[t] * 32 : 0, r1 = by_rows ? min_l(p.m, runs.at[t + 1] * 32) : p.m;
    const long c0 = by_rows ? 0 : runs.at[t] * 32, c1 = by_rows ? p.n : min_l(p.n, runs.at[t + 1] * 32);
    const long mc = by_rows ? blk.mc : p.m;
    std::uint16_t* apack = shared;
    if (by_rows) {
      const long block_groups = ceil_div(min_l(mc, r1 - r0), 32);
      apack = reinterpret_cast<std::uint16_t*>(tl_amx_a.get(static_cast<std::size_t>(block_groups * (blk.kc / 32) * 3072 / 2)));
    }
    alignas(64) float bias32[32];
    ax.begin();
    for (long pc = 0; pc < p.k; pc += blk.kc) {
      const long kc = min_l(blk.kc, p.k - pc), steps = ceil_div(kc, 32);
      const bool first = pc == 0, last = pc + kc >= p.k;
      const int init = !first || p.beta == 1.0f ? 1 : p.bias ? 2 : 0;
      for (long ic = r0; ic < r1; ic += mc) {
        const long end = min_l(ic + mc, r1);
        // Group g's steps of this k block: split here, or in the shared copy.
        auto group = [&](long g) { return by_rows ? apack + g * steps * 3072 : apack + (g * steps_all + pc / 32) * 3072; };
        if (by_rows)
          for (long i = ic, g = 0; i < end; i += 32, ++g)
            ax.split_a(p.a.p + i * p.a.rs + pc, p.a.rs, min_l(32, end - i), kc, group(g));
        for (long jr = c0; jr < c1; jr += 32) {
          const long cols = min_l(32, c1 - jr);
          if (init == 2)
            for (long j = 0; j < 32; ++j) bias32[j] = j < cols ? p.bias[jr + j] : 0.0f;
          const std::uint16_t* bp = panels + (jr / 32) * panel_len + (pc / 32) * 3072;
          for (long i = ic, g = by_rows ? 0 : ic / 32; i < end; i += 32, ++g)
            amx_tile(kt, steps, group(g), bp, p.c + i * p.ldc + jr, p.ldc, min_l(32, end - i), cols, init, bias32,
                     last ? p.act : kActNone);
        }
      }
    }
    ax.end();
  });
}

// A product with packed weights on the tile unit; false (nothing done) when
// it does not suit it (or the weights' tile copy could not be made).
bool gemm_amx(const KernelTable& kt, const Problem& p, int nt, const PackedMatrix& pm) {
  if (!amx_suits(kt, p)) return false;
  const std::uint16_t* panels = pm.amx_panels();
  if (!panels || kt.amx->has_infinity(p.a.p, p.a.rs, p.m, p.k)) return false;
  gemm_amx_core(kt, p, nt, panels, pm.amx_steps());
  return true;
}

thread_local Scratch tl_amx_b;        // one panel's float32 columns (all of k)
thread_local Scratch tl_amx_panels;   // B panels of an unpacked product

// Packs columns [j0, j0 + cols) (cols <= 32) of op(B) over all k into one B
// panel of the tile unit's layout (through a float32 panel).
void amx_pack_panel(const KernelTable& kt, View b, long k, long j0, long cols, std::uint16_t* dst) {
  float* tmp = tl_amx_b.get(static_cast<std::size_t>(k * 32));
  kt.pack_panel(b.p + j0 * b.cs, b.cs, b.rs, cols, k, 32, 0, tmp);
  kt.amx->split_b(tmp, 32, k, dst);
}

// An unpacked product on the tile unit: B packed here, in column blocks
// whose panels take up to 8 MiB (the block width depends on k only).
bool gemm_amx_unpacked(const KernelTable& kt, const Problem& p, int nt) {
  if (!amx_suits(kt, p) || p.n < 32 || p.k < 32) return false;
  const AmxKernels& ax = *kt.amx;
  const bool b_rows = p.b.cs == 1;
  if (ax.has_infinity(p.a.p, p.a.rs, p.m, p.k) ||
      (b_rows ? ax.has_infinity(p.b.p, p.b.rs, p.k, p.n)
              : p.b.rs == 1 ? ax.has_infinity(p.b.p, p.b.cs, p.n, p.k) : true))
    return false;
  const long steps = ceil_div(p.k, 32);
  const long nc = max_l(32, round_down((8L << 20) / (6 * p.k), 32));
  auto* panels = reinterpret_cast<std::uint16_t*>(
      tl_amx_panels.get(static_cast<std::size_t>(ceil_div(min_l(nc, p.n), 32) * steps * 3072 / 2)));
  for (long jc = 0; jc < p.n; jc += nc) {
    const long ncur = min_l(nc, p.n - jc), np = ceil_div(ncur, 32);
    for_tasks(nt > 1, np, [&](long q) { amx_pack_panel(kt, p.b, p.k, jc + 32 * q, min_l(32, ncur - 32 * q), panels + q * steps * 3072); });
    Problem sub = p;
    sub.n = ncur;
    sub.c = p.c + jc;
    sub.bias = p.bias ? p.bias + jc : nullptr;
    gemm_amx_core(kt, sub, nt, panels, steps);
  }
  return true;
}

// B packed once beforehand (a layer's weights): one parallel region for the
// whole product, each task looping over every (kc, nc) block of its share of
// C. There is no B to pack, so nothing needs the threads to meet between
// blocks, and each task packs only its own rows of A, once per kc block (not
// once per nc block as well). Rows are split between the threads when each
// gets eight tiles or more (splitting columns has every thread pack all of A;
// fewer rows are too coarse a share to balance).
// Same tiles, same order over k for every element as gemm_blocked.
void gemm_prepacked(const KernelTable& kt, const Problem& p, int nt, const PackedMatrix& pre) {
  if (gemm_amx(kt, p, nt, pre)) return;
  if (p.m <= kt.narrow_rows) {
    gemm_prepacked_narrow(kt, p, nt, pre);
    return;
  }
  const GemmBlocking& blk = pre.blk;
  const int mr = kt.mr, nr = kt.nr;
  const long kc_max = min_l(blk.kc, p.k);
  const long mc = block_rows(blk, kc_max, mr);
  const RowTiles rt(p, mr);
  const long tiles = ceil_div(p.m, mr);
  // Tasks: a tm x tn grid, or with rows to spare, runs of row tiles the
  // threads take in turn (GuidedRuns: from one A block down to one tile): a
  // thread the system holds up leaves its share to the others. Runs end at
  // one tile, not four: each run streams all of B again, but the last runs
  // decide how long one thread waits for the other (Zen 4, two threads,
  // weights in L3, interleaved: 768 x 2304 x 768 88.5-89.0% -> 92.9-93.5% of
  // the peak, 768 x 768 x 768 88.1-88.5% -> 93.3-94.3%, 1024 x 1536 x 512
  // 92% -> 93%, 512 x 2304 x 768 the same).
  long tm = 1, tn = 1;
  bool guided = false;
  if (nt > 1) {
    if (tiles >= 8L * nt) {
      guided = true;
    } else if (ceil_div(p.n, nr) >= 2L * nt && gemm_prepacked_few_rows(kt, p, nt, pre)) {
      return;
    } else {
      choose_grid(p.m, p.n, nt, mr, nr, &tm, &tn);
    }
  }
  const GuidedRuns runs(guided ? tiles : 0, nt, 1, mc / mr);
  if (guided) tm = runs.count;
  const long tasks = tm * tn;
  const int prefetch = prefetch_level(p, mc);
  const MicroFn micro = micro_for(kt, prefetch);
  const int store = store_mode(p, blk.kc);
  for_tasks(tasks > 1, tasks, [&](long t) {
    const long ti = t / tn, tj = t % tn;
    const long r0 = guided ? rt.boundary(runs.at[ti] * mr) : rt.split(tm, ti);
    const long r1 = guided ? rt.boundary(runs.at[ti + 1] * mr) : rt.split(tm, ti + 1);
    const long c0 = split_point(p.n, tn, tj, nr), c1 = split_point(p.n, tn, tj + 1, nr);
    if (r1 <= r0 || c1 <= c0) return;
    float* apack = tl_pack_a.get(static_cast<std::size_t>(RowTiles::packed_rows(mc, mr) * kc_max));
    for (long pc = 0; pc < p.k; pc += blk.kc) {
      const long kc = min_l(blk.kc, p.k - pc);
      const float beta = pc == 0 ? p.beta : 1.0f;
      const int act = pc + kc >= p.k ? p.act | store : kActNone;  // on the finished sums only
      for (long ic = r0; ic < r1;) {
        const long end = rt.block_end(ic, mc, r1);
        pack_a_tiles(kt, p.a, rt, ic, end, pc, kc, apack);
        const auto bias_at = [&](long jr) { return pc == 0 && p.bias ? p.bias + jr : nullptr; };
        block_tiles(
            rt, ic, end, c0, c1, nr, blk.nc_l2,
            [&](long s, long i, long rows, long jr) {
              micro(kc, apack + s * mr * kc, pre.panel(jr, pc), p.c + i * p.ldc + jr, p.ldc, p.alpha, beta,
                    static_cast<int>(rows), static_cast<int>(min_l(nr, c1 - jr)), bias_at(jr), act);
            },
            [&](long s, long i, long jr) {
              kt.gemm_micro_pair(kc, apack + s * mr * kc, static_cast<int>(rt.h), apack + (s + 1) * mr * kc,
                                 static_cast<int>(p.m - i - rt.h), pre.panel(jr, pc), p.c + i * p.ldc + jr,
                                 p.c + (i + rt.h) * p.ldc + jr, p.ldc,
                                 p.alpha, beta, static_cast<int>(min_l(nr, c1 - jr)), bias_at(jr), act, prefetch);
            });
        ic = end;
      }
    }
    if (store) kt.fence();  // the streamed stores, before the task counts as done
  });
}

void gemm_small(const KernelTable& kt, const Problem& p, bool dot, int nt) {
  SmallGemm g{dot,   p.m,    p.n,    p.k,     p.a.p,  p.a.rs, p.a.cs, p.b.p,
              p.b.rs, p.b.cs, p.c, p.ldc, p.alpha, p.beta, p.bias, p.act};
  if (nt <= 1) {
    kt.gemm_small(g, 0, p.m, 0, p.n);
    return;
  }
  // Rows when there are enough of them, otherwise columns in whole vectors.
  const long row_unit = 4;
  if (p.m >= row_unit * nt) {
    parallel_for(nt, [&](long t) {
      long i0 = split_point(p.m, nt, t, row_unit), i1 = split_point(p.m, nt, t + 1, row_unit);
      if (i1 > i0) kt.gemm_small(g, i0, i1, 0, p.n);
    });
  } else {
    const long col_unit = 4L * kt.vector_width;
    parallel_for(nt, [&](long t) {
      long j0 = split_point(p.n, nt, t, col_unit), j1 = split_point(p.n, nt, t + 1, col_unit);
      if (j1 > j0) kt.gemm_small(g, 0, p.m, j0, j1);
    });
  }
}

// Unpacked when packing would cost about as much as the multiply: few rows,
// or a small problem overall; the layout must suit one of its two forms.
bool use_small(const KernelTable& kt, const Problem& p, bool* dot) {
  const bool row_ok = p.b.cs == 1;
  const bool dot_ok = p.a.cs == 1 && p.b.rs == 1;
  if (!row_ok && !dot_ok) return false;
  *dot = dot_ok && (!row_ok || p.n < kt.vector_width);
  const double work = static_cast<double>(p.m) * p.n * p.k;
  return p.m <= 4 || p.n < kt.vector_width || work <= 48.0 * 48.0 * 48.0;
}

// One GEMM, on up to all the pool's threads when `parallel`. With `pre`, B is
// that packed matrix (and the unpacked path is not an option).
void gemm_one(const KernelTable& kt, const Problem& p, bool parallel, const PackedMatrix* pre = nullptr) {
  if (p.m <= 0 || p.n <= 0) return;
  if (p.k <= 0 || p.alpha == 0.0f) {
    scale_c(kt, p);
    return;
  }
  const int nt = threads_for(gemm_work(p), parallel);
  bool dot = false;
  if (!pre && use_small(kt, p, &dot)) {
    gemm_small(kt, p, dot, nt);
  } else if (pre) {
    gemm_prepacked(kt, p, nt, *pre);
  } else if (!gemm_amx_unpacked(kt, p, nt)) {
    gemm_blocked(kt, p, nt);
  }
}

// Batch item `item` of g; with `pre`, B (and k, n) come from the packed matrix.
Problem problem_of(const GemmArgs& g, long item, const PackedMatrix* pre = nullptr, bool stream = false) {
  Problem p;
  p.m = g.m;
  p.n = pre ? pre->n : g.n;
  p.k = pre ? pre->k : g.k;
  p.a = View{g.a + item * g.stride_a, g.trans_a ? 1 : g.lda, g.trans_a ? g.lda : 1};
  p.b = pre ? View{nullptr, 0, 0} : View{g.b + item * g.stride_b, g.trans_b ? 1 : g.ldb, g.trans_b ? g.ldb : 1};
  p.c = g.c + item * g.stride_c;
  p.ldc = g.ldc;
  p.alpha = g.alpha;
  p.beta = g.beta;
  p.bias = g.bias;
  p.act = g.act;
  p.stream_c = stream;
  return p;
}

// Whether g's result goes past the caches where its tiles allow (see
// GemmArgs::stream_out), written by up to `threads` threads.
bool streams_result(const GemmArgs& g, long threads) {
  const bool aligned = reinterpret_cast<std::uintptr_t>(g.c) % 64 == 0 && g.ldc % 16 == 0 &&
                       (g.batch <= 1 || g.stride_c % 16 == 0);
  return g.stream_out && g.beta == 0.0f && g.act == kActNone && aligned &&
         stream_new_result(4.0 * static_cast<double>(g.m) * static_cast<double>(g.n) * static_cast<double>(g.batch),
                           threads);
}

// A B shared by the batch, with A and C rows contiguous across it, is one GEMM
// with batch * m rows (B packed once). Same per-element arithmetic either way.
GemmArgs merge_batch(const GemmArgs& in, bool b_shared) {
  GemmArgs g = in;
  if (g.batch > 1 && b_shared && !g.trans_a && g.stride_a == g.m * g.lda && g.stride_c == g.m * g.ldc) {
    g.m *= g.batch;
    g.batch = 1;
  }
  return g;
}

void run_gemm(const KernelTable& kt, const GemmArgs& in, bool parallel) {
  if (in.batch <= 0) return;
  const GemmArgs g = merge_batch(in, in.stride_b == 0);
  const double item_flops = 2.0 * g.m * g.n * g.k;
  const int pool = parallel ? ThreadPool::global().size() : 1;
  // One item per task when the items divide evenly among the threads, are
  // many, or are too small to split; otherwise threads work inside each item.
  const double min_flops = tuning().min_parallel_flops;
  const bool by_item = g.batch > 1 && pool > 1 && item_flops * g.batch >= min_flops &&
                       (item_flops < 2.0 * min_flops || g.batch % pool == 0 ||
                        g.batch >= 4L * pool);
  const bool stream = streams_result(g, pool);
  if (by_item) {
    parallel_for(g.batch, [&](long t) { gemm_one(kt, problem_of(g, t, nullptr, stream), false); });
    return;
  }
  for (long t = 0; t < g.batch; ++t) gemm_one(kt, problem_of(g, t, nullptr, stream), parallel);
}

// Value `which` of "mc,kc,nc[,ncl2]" in the environment variable `name`, or
// -1 when the variable, one of the first three values or the asked-for
// fourth is missing.
long parse_blocking_env(const char* name, int which) {
  const char* env = std::getenv(name);
  if (!env) return -1;
  long v[4] = {-1, -1, -1, -1};
  char* s = const_cast<char*>(env);
  for (int i = 0; i < 4; ++i) {
    char* end = nullptr;
    const long x = std::strtol(s, &end, 10);
    if (end == s) {
      if (i < 3) return -1;
      break;
    }
    v[i] = x;
    s = end;
    if (*s == ',') ++s;
  }
  return v[which];
}

}  // namespace

GemmBlocking gemm_blocking(const KernelTable& kt) {
  const CacheSizes& cs = cpu_info().cache_used;
  const Tuning& tu = tuning();
  const long mr = kt.mr, nr = kt.nr;
  // KC: long, so C is read and written few times; the packed B micro-panel
  // (kc x nr) streams from L2 with the A micro-panel (on Zen 5 and Cascade
  // Lake this beats keeping B in L1 with a short KC).
  long kc = static_cast<long>(static_cast<double>(cs.l2) * tu.kc_l2) / (nr * 4);
  kc = max_l(tu.kc_min, min_l(tu.kc_max, round_down(kc, 8)));
  // MC: the packed A block (mc x kc).
  long mc = static_cast<long>(static_cast<double>(cs.l2) * tu.mc_l2) / (kc * 4);
  mc = max_l(mr, round_down(min_l(mc, 1024), mr));
  // NC: the packed B panel (kc x nc).
  long nc = static_cast<long>(static_cast<double>(cs.l3) * tu.nc_l3) / (kc * 4);
  nc = max_l(4 * nr, round_down(min_l(nc, 8192), nr));
  // The A-in-L1 order: kc no deeper than an A micro-panel (mr x kc) in the
  // tuning's share of L1, B runs of kc x nc_l2 in its share of L2.
  long nc_l2 = 0;
  if (tu.a_panel_l1 > 0) {
    const long kc_l1 = round_down(static_cast<long>(static_cast<double>(cs.l1d) * tu.a_panel_l1) / (mr * 4), 8);
    kc = max_l(64, min_l(kc, kc_l1));
    nc_l2 = max_l(nr, round_down(static_cast<long>(static_cast<double>(cs.l2) * tu.b_run_l2) / (kc * 4), nr));
    mc = max_l(mr, round_down(min_l(static_cast<long>(static_cast<double>(cs.l2) * tu.mc_l2) / (kc * 4), 1024), mr));
  }
  // Tuning override: ATTN_GEMM_BLOCKING=mc,kc,nc[,ncl2] (each rounded to the
  // tile; ncl2 0 for the B-reusing order).
  if (long v = parse_blocking_env("ATTN_GEMM_BLOCKING", 0); v > 0) mc = max_l(mr, round_down(v, mr));
  if (long v = parse_blocking_env("ATTN_GEMM_BLOCKING", 1); v > 0) kc = max_l(8, v);
  if (long v = parse_blocking_env("ATTN_GEMM_BLOCKING", 2); v > 0) nc = max_l(nr, round_down(v, nr));
  if (long v = parse_blocking_env("ATTN_GEMM_BLOCKING", 3); v >= 0) nc_l2 = v == 0 ? 0 : max_l(nr, round_down(v, nr));
  return GemmBlocking{mc, kc, nc, nc_l2};
}

GemmBlocking gemm_blocking_for_depth(const KernelTable& kt, long k) {
  GemmBlocking blk = gemm_blocking(kt);
  if (blk.nc_l2 > 0 && k > blk.kc && !blocking_overridden()) {
    // Equal blocks: 768 = 2 x 384 rather than 512 + 256.
    const long blocks = ceil_div(k, blk.kc);
    blk.kc = min_l(blk.kc, (ceil_div(k, blocks) + 7) / 8 * 8);
  }
  return blk;
}

void sgemm(const KernelTable& kt, const GemmArgs& g) {
  const FlushDenormals fp;
  run_gemm(kt, g, true);
}

void pack_panels(const KernelTable& kt, const float* src, long ls, long ks, long lanes, long kc, int w,
                 float* dst) {
  for (long l = 0; l < lanes; l += w) {
    kt.pack_panel(src + l * ls, ls, ks, min_l(w, lanes - l), kc, w, max_l(0, min_l(w, lanes - l - w)), dst + l * kc);
  }
}

PackedMatrix::~PackedMatrix() {
  std::free(data);
  std::free(amx_);
}

std::size_t PackedMatrix::amx_bytes() const {
  if (!kt->amx || kt->nr != 32) return 0;
  return static_cast<std::size_t>(ceil_div(n, 32)) * static_cast<std::size_t>(amx_steps()) * 3072 * 2;
}

const std::uint16_t* PackedMatrix::amx_panels() const {
  std::call_once(amx_once_, [this] {
    const long steps = amx_steps(), npanels = ceil_div(n, 32);
    const std::size_t bytes = amx_bytes();  // 6 per weight of the float32 panels' < 2^60 bytes: no overflow
    if (bytes == 0 || kt->amx->has_infinity(data, 0, 1, static_cast<long>(floats))) return;
    auto* dst = static_cast<std::uint16_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (!dst) return;
    // Panel q from the float32 panels of its 32 columns: their depth blocks
    // (kc x 32 floats each, in order of k) together are all of k. A thread
    // that cannot get its staging memory leaves the matrix without a copy.
    try {
      parallel_for(npanels, [&](long q) {
        float* tmp = tl_amx_b.get(static_cast<std::size_t>(k * 32));
        for (long pc = 0; pc < k; pc += blk.kc)
          std::memcpy(tmp + pc * 32, panel(32 * q, pc), static_cast<std::size_t>(min_l(blk.kc, k - pc)) * 32 * sizeof(float));
        kt->amx->split_b(tmp, 32, k, dst + static_cast<std::size_t>(q) * static_cast<std::size_t>(steps) * 3072);
      });
    } catch (const std::bad_alloc&) {
      std::free(dst);
      return;
    }
    amx_ = dst;
  });
  return amx_;
}

std::size_t PackedMatrix::offset(long jc, long pc) const {
  // Blocks are stored jc-major, then pc; a block holds kc x round_up(ncur, nr).
  // Every block column before jc is nc wide (a multiple of nr) and k deep.
  const long width = ceil_div(min_l(blk.nc, n - jc), kt->nr) * kt->nr;
  return static_cast<std::size_t>(jc) * static_cast<std::size_t>(k) +
         static_cast<std::size_t>(pc) * static_cast<std::size_t>(width);
}

const float* PackedMatrix::panel(long jr, long pc) const {
  const long jc = jr / blk.nc * blk.nc;
  return data + offset(jc, pc) + (jr - jc) * min_l(blk.kc, k - pc);
}

std::unique_ptr<PackedMatrix> pack_matrix(const KernelTable& kt, const float* b, long ldb, bool trans_b, long k,
                                          long n) {
  auto pm = std::make_unique<PackedMatrix>();
  pm->kt = &kt;
  pm->k = k;
  pm->n = n;
  pm->blk = gemm_blocking_for_depth(kt, k);
  // An empty matrix packs to nothing (one float keeps the pointer valid).
  const long width = ceil_div(n, kt.nr) * kt.nr;
  long floats = 1;
  if (k > 0 && n > 0 && (!checked_mul(k, width, &floats) || floats > (1L << 60) / static_cast<long>(sizeof(float)))) {
    throw std::bad_alloc();
  }
  pm->floats = static_cast<std::size_t>(floats);
  pm->data = static_cast<float*>(std::aligned_alloc(64, (pm->floats * sizeof(float) + 63) / 64 * 64));
  if (!pm->data) throw std::bad_alloc();
  const View v{b, trans_b ? 1 : ldb, trans_b ? ldb : 1};
  for (long jc = 0; jc < n; jc += pm->blk.nc) {
    const long ncur = min_l(pm->blk.nc, n - jc);
    for (long pc = 0; pc < k; pc += pm->blk.kc) {
      const long kc = min_l(pm->blk.kc, k - pc);
      float* dst = pm->data + pm->offset(jc, pc);
      const long panels = ceil_div(ncur, kt.nr);
      parallel_for(panels, [&](long q) {
        pack_b(kt, v, pc, kc, jc + q * kt.nr, min_l(kt.nr, ncur - q * kt.nr), dst + q * kt.nr * kc);
      });
    }
  }
  return pm;
}

void sgemm_with_packed(const GemmArgs& in, const PackedMatrix& pm) {
  if (in.batch <= 0) return;
  const FlushDenormals fp;
  const GemmArgs g = merge_batch(in, true);
  const bool stream = streams_result(g, ThreadPool::global().size());
  for (long t = 0; t < g.batch; ++t) gemm_one(*pm.kt, problem_of(g, t, &pm, stream), true, &pm);
}

void sgemm_serial(const KernelTable& kt, const GemmArgs& g) {
  const FlushDenormals fp;
  run_gemm(kt, g, false);
}

namespace {
bool extent(long rows, long cols, long rs, long cs, long stride, long batch, long* e) {
  const long shape[3] = {batch, rows, cols};
  const long strides[3] = {stride, rs, cs};
  return strided_extent(3, shape, strides, e);
}
}  // namespace

bool gemm_extent_a(const GemmArgs& g, long* e) {
  return g.trans_a ? extent(g.m, g.k, 1, g.lda, g.stride_a, g.batch, e)
                   : extent(g.m, g.k, g.lda, 1, g.stride_a, g.batch, e);
}
bool gemm_extent_b(const GemmArgs& g, long* e) {
  return g.trans_b ? extent(g.k, g.n, 1, g.ldb, g.stride_b, g.batch, e)
                   : extent(g.k, g.n, g.ldb, 1, g.stride_b, g.batch, e);
}
bool gemm_extent_c(const GemmArgs& g, long* e) { return extent(g.m, g.n, g.ldc, 1, g.stride_c, g.batch, e); }

}  // namespace attn
