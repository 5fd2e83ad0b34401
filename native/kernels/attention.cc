#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../runtime/fp_env.h"
#include "../runtime/thread_pool.h"
#include "bounds.h"
#include "gemm.h"
#include "scratch.h"
#include "softmax.h"

namespace attn {
namespace {

// Queries per task. Fixed, so the decomposition (and every GEMM shape in it)
// is the same for any thread count.
constexpr long kQueryBlock = 64;

thread_local Scratch tl_scores;
thread_local Scratch tl_row;

// Keys query i may see: [0, visible_keys(a, i)).
inline long visible_keys(const AttentionArgs& a, long i) {
  return a.causal ? causal_keys(i, a.sq, a.sk, a.causal_always) : a.sk;
}

// Applies one row of a mask to the scores row[0:n]: a float32 mask is added
// times fscale, a uint8 mask gives -inf where it is nonzero. Entry j of the
// mask row is at `off + j * stride` (stride 0 or 1) of `mask`.
void add_mask_row(const KernelTable& kt, MaskKind kind, const void* mask, long off, long stride, float fscale,
                  float* row, long n) {
  if (n <= 0) return;
  if (kind == MaskKind::kF32) {
    kt.attn_mask_row(row, n, static_cast<const float*>(mask) + off, stride, fscale, nullptr, 0);
  } else if (kind == MaskKind::kU8) {
    kt.attn_mask_row(row, n, nullptr, 0, 0.0f, static_cast<const std::uint8_t*>(mask) + off, stride);
  }
}

// The attention mask's row for query i of head (b, h), and the key padding's
// row for batch item b, both from key 0.
inline long mask_offset(const AttentionArgs& a, long b, long h, long i) {
  return b * a.mask_strides[0] + h * a.mask_strides[1] + i * a.mask_strides[2];
}
inline long kpm_offset(const AttentionArgs& a, long b) { return b * a.kpm_stride_b; }

// S = alpha Q K^T for queries [i0, i0 + rows) and keys [j0, j0 + n) of head
// (b, h), into c (ldc floats per row).
GemmArgs scores_gemm(const AttentionArgs& a, long b, long h, long i0, long rows, long j0, long n, float alpha,
                     float* c, long ldc) {
  GemmArgs g;
  g.m = rows;
  g.n = n;
  g.k = a.dk;
  g.trans_b = true;
  g.alpha = alpha;
  g.a = a.q + b * a.q_strides[0] + h * a.q_strides[1] + i0 * a.q_strides[2];
  g.lda = a.q_strides[2];  // any stride works for reading, even 0 (a broadcast query)
  g.b = a.k + b * a.k_strides[0] + h * a.k_strides[1] + j0 * a.k_strides[2];
  g.ldb = a.k_strides[2];
  g.c = c;
  g.ldc = ldc;
  return g;
}

// O = P V for `rows` rows of weights P (ldp apart) over keys [j0, j0 + n) of
// head (b, h), into o (ldo floats per row).
GemmArgs values_gemm(const AttentionArgs& a, long b, long h, long rows, long j0, long n, const float* p, long ldp,
                     float* o, long ldo) {
  GemmArgs g;
  g.m = rows;
  g.n = a.dv;
  g.k = n;
  g.a = p;
  g.lda = ldp;
  g.b = a.v + b * a.v_strides[0] + h * a.v_strides[1] + j0 * a.v_strides[2];
  g.ldb = a.v_strides[2];
  g.c = o;
  g.ldc = ldo;
  return g;
}

}  // namespace

void attention_explicit(const KernelTable& kt, const AttentionArgs& a) {
  if (a.batch <= 0 || a.heads <= 0 || a.sq <= 0 || (a.dv <= 0 && !a.weights)) return;
  const FlushDenormals fp;
  const long blocks = (a.sq + kQueryBlock - 1) / kQueryBlock;
  const long tasks = a.batch * a.heads * blocks;

  auto task = [&](long t) {
    const long b = t / (a.heads * blocks);
    const long h = (t / blocks) % a.heads;
    const long i0 = (t % blocks) * kQueryBlock;
    const long i1 = i0 + kQueryBlock < a.sq ? i0 + kQueryBlock : a.sq;
    const long rows = i1 - i0;
    float* out = a.out + b * a.out_strides[0] + h * a.out_strides[1] + i0 * a.out_strides[2];
    // Keys any query of this block may see; the rest of each row is zero.
    const long kmax = visible_keys(a, i1 - 1);

    // Scores for the block: into the weights output when asked for, else scratch.
    float* s = a.weights ? a.weights + ((b * a.heads + h) * a.sq + i0) * a.sk
                         : tl_scores.get(static_cast<std::size_t>(rows * (a.sk > 0 ? a.sk : 1)));
    if (kmax > 0) {
      if (a.scores) {
        const float* src = a.scores + ((b * a.heads + h) * a.sq + i0) * a.sk;
        if (src != s) std::memcpy(s, src, static_cast<std::size_t>(rows * a.sk) * sizeof(float));
      } else {
        sgemm_serial(kt, scores_gemm(a, b, h, i0, rows, 0, kmax, a.scale, s, a.sk));
      }
    }

    // Masked softmax, row by row (natural-base scores: a float mask adds as is).
    for (long i = i0; i < i1; ++i) {
      float* row = s + (i - i0) * a.sk;
      const long valid = visible_keys(a, i);
      add_mask_row(kt, a.mask_kind, a.mask, mask_offset(a, b, h, i), a.mask_strides[3], 1.0f, row, valid);
      add_mask_row(kt, a.kpm_kind, a.kpm, kpm_offset(a, b), 1, 1.0f, row, valid);
      kt.softmax_row(row, row, a.sk, valid, 1.0f, nullptr, nullptr, nullptr, nullptr);
    }

    // out = P V over the keys that can carry weight (k == 0 writes zeros).
    const long ldo = a.out_strides[2] > a.dv ? a.out_strides[2] : a.dv;
    sgemm_serial(kt, values_gemm(a, b, h, rows, 0, kmax, s, a.sk > 0 ? a.sk : 1, out, ldo));
  };
  parallel_for(tasks, task);
}

namespace {

// Fused path blocking. Query blocks (4 mr rows) and key blocks
// (kAttnKeyBlock) are fixed, so every query row sees the same sequence of
// operations whatever the thread count; only the grouping of query blocks into
// tasks adapts to the threads (it decides how often K^T is packed, not what is
// computed).
constexpr long kMinChunkQueries = 128;  // a task packs K^T once for at least this many queries
constexpr long kDecodeQueries = 4;   // at most this many queries: the decode path
constexpr long kDecodeChunk = 1024;  // keys per decode task
// A task of at most this many queries reads V in place (rows vs floats
// apart) instead of packing it: packing costs more than it saves when few
// query blocks reuse the panels (one thread, Zen 4, Q/K/V as views of a
// [B, S, 3E] projection: [8, 8, 128, 64] 5% faster in place, [4, 8, 512,
// 64] 2%, [1, 8, 2048, 64] 1% slower). Either way the P V tiles do the same
// arithmetic on the same values.
constexpr long kVInPlaceQueries = 512;

thread_local Scratch tl_qpack;
thread_local Scratch tl_ktpack;
thread_local Scratch tl_vpack;
thread_local Scratch tl_tile;
thread_local Scratch tl_out;
thread_local Scratch tl_stats;

inline long round_up(long v, long m) { return (v + m - 1) / m * m; }

// Prefetches `rows` rows of `cols` floats, `ld` floats apart (Write: to be
// written).
template <int Locality = 3, int Write = 0>
inline void prefetch_rows(const float* p, long ld, long rows, long cols) {
  if (cols <= 0) return;  // nothing to fetch (and p may be null)
  constexpr long kLine = 64 / sizeof(float);
  for (long r = 0; r < rows; ++r) {
    const float* row = p + r * ld;
    for (long c = 0; c < cols; c += kLine) __builtin_prefetch(row + c, Write, Locality);
    __builtin_prefetch(row + cols - 1, Write, Locality);  // a row that straddles one more line
  }
}

// Keys [0, n) per batch item when the uint8 key padding is zeros then ones;
// empty when any item has another pattern (then it is applied as a mask).
std::vector<long> padding_lengths(const AttentionArgs& a) {
  std::vector<long> len(static_cast<std::size_t>(a.batch), a.sk);
  if (a.kpm_kind == MaskKind::kNone) return len;
  if (a.kpm_kind != MaskKind::kU8) return {};
  for (long b = 0; b < a.batch; ++b) {
    const std::uint8_t* m = static_cast<const std::uint8_t*>(a.kpm) + b * a.kpm_stride_b;
    long first = a.sk;
    for (long j = 0; j < a.sk; ++j)
      if (m[j]) {
        first = j;
        break;
      }
    for (long j = first; j < a.sk; ++j)
      if (!m[j]) return {};
    len[static_cast<std::size_t>(b)] = first;
  }
  return len;
}

// The fused kernel's scores are in base 2: scale * log2(e) * q.k.
constexpr float kLog2e = 1.44269504088896341f;

// Adds the general masks (the attn mask, and key padding when it is not a
// per-batch length, float ones times log2 e) to `rows` score rows for keys
// [j0, j0 + valid[r]).
void mask_tile(const KernelTable& kt, const AttentionArgs& a, bool kpm_general, long b, long h, long i0,
               long j0, float* s, long lds, long rows, long cols, const long* valid) {
  const long ms = a.mask_strides[3];
  for (long r = 0; r < rows; ++r) {
    const long n = valid ? std::min(valid[r], cols) : cols;
    float* row = s + r * lds;
    add_mask_row(kt, a.mask_kind, a.mask, mask_offset(a, b, h, i0 + r) + j0 * ms, ms, kLog2e, row, n);
    if (kpm_general) add_mask_row(kt, a.kpm_kind, a.kpm, kpm_offset(a, b) + j0, 1, kLog2e, row, n);
  }
}

// Sum of a row's W partial sums, in a fixed order.
inline float lanes_sum(const float* l, long w) {
  float s = 0.0f;
  for (long i = 0; i < w; ++i) s += l[i];
  return s;
}

// inv[r] = 1 / the sum of row r's w partial sums (l[r * w ...]): the factor
// that normalises its output; a row whose sum is 0 gets 0, a NaN sum NaN.
void inverse_sums(const float* l, long w, long rows, float* inv) {
  for (long r = 0; r < rows; ++r) {
    const float sum = lanes_sum(l + r * w, w);
    inv[r] = sum > 0.0f ? 1.0f / sum : (sum == sum ? 0.0f : sum);
  }
}

// A run of positions attended over as one sequence: batch item b, queries at
// rows [q0, q0 + sq) of q and out, keys at rows [k0, k0 + sk) of k and v, the
// first kvl of which can carry weight (uint8 key padding as a length); under
// causal masking its first `always` keys are visible to every query.
struct Segment {
  long b, q0, k0, sq, sk, kvl, always;
};

// Keys query i of a segment may see: [0, segment_keys(...)).
inline long segment_keys(bool causal, const Segment& s, long i) {
  return causal ? causal_keys(i, s.sq, s.sk, s.always) : s.sk;
}

// The segments of a call: each batch item whole, or with seq_offsets each
// packed sequence of each batch item.
std::vector<Segment> flash_segments(const AttentionArgs& a, const std::vector<long>& kv_len) {
  std::vector<Segment> segs;
  if (a.seq_offsets) {
    segs.reserve(static_cast<std::size_t>(a.batch * a.sequences));
    for (long b = 0; b < a.batch; ++b)
      for (long s = 0; s < a.sequences; ++s) {
        const long q0 = a.seq_offsets[s], n = a.seq_offsets[s + 1] - q0;
        segs.push_back({b, q0, q0, n, n, n, 0});
      }
  } else {
    segs.reserve(static_cast<std::size_t>(a.batch));
    for (long b = 0; b < a.batch; ++b) segs.push_back({b, 0, 0, a.sq, a.sk, kv_len.empty() ? a.sk : kv_len[static_cast<std::size_t>(b)], a.causal_always});
  }
  return segs;
}

// One task of the flash path: head h of segment seg, its queries [i_begin, i_end).
struct FlashTask {
  long seg, h, i_begin, i_end;
  double cost;  // query rows times the keys each query block visits
};

// The tasks of a call, heaviest first. Whole heads of a segment per task when
// there are enough (segment, head) pairs to keep the threads busy (K^T packed
// once per head); otherwise each head's queries are split, into more pieces
// with causal masking, where the work per piece varies. The split decides how
// often K^T is packed, never what a query row computes.
std::vector<FlashTask> flash_tasks(const AttentionArgs& a, const std::vector<Segment>& segs, long bq) {
  const long units = static_cast<long>(segs.size()) * a.heads;
  const long threads = ThreadPool::global().size();
  const long want = threads <= 1 ? 1 : std::max(1L, (threads * (a.causal ? 4 : 2) + units - 1) / units);
  const long min_blocks = std::max(1L, (kMinChunkQueries + bq - 1) / bq);
  std::vector<FlashTask> tasks;
  for (std::size_t g = 0; g < segs.size(); ++g) {
    const Segment& s = segs[g];
    const long blocks = (s.sq + bq - 1) / bq;
    const long per_task = std::max(min_blocks, (blocks + want - 1) / want);
    for (long i_begin = 0; i_begin < s.sq; i_begin += per_task * bq) {
      const long i_end = std::min(s.sq, i_begin + per_task * bq);
      double cost = 0;
      for (long i0 = i_begin; i0 < i_end; i0 += bq) {
        const long rows = std::min(bq, i_end - i0);
        cost += static_cast<double>(rows) * static_cast<double>(std::min(s.kvl, segment_keys(a.causal, s, i0 + rows - 1)));
      }
      for (long h = 0; h < a.heads; ++h) tasks.push_back({static_cast<long>(g), h, i_begin, i_end, cost});
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const FlashTask& x, const FlashTask& y) { return x.cost > y.cost; });
  return tasks;
}

void fused_flash(const KernelTable& kt, const AttentionArgs& a, const std::vector<long>& kv_len, bool kpm_general) {
  const long mr = kt.mr, nr = kt.nr, bk_max = kt.attn_key_block;
  const long bq = 4 * mr;
  const std::vector<Segment> segs = flash_segments(a, kv_len);
  const std::vector<FlashTask> tasks = flash_tasks(a, segs, bq);

  auto run = [&](long t) {
    const FlashTask& task = tasks[static_cast<std::size_t>(t)];
    const Segment& seg = segs[static_cast<std::size_t>(task.seg)];
    const long b = seg.b, h = task.h;
    const long i_begin = task.i_begin, i_end = task.i_end;
    auto visible = [&](long i) { return segment_keys(a.causal, seg, i); };
    const long kend_task = std::min(seg.kvl, visible(i_end - 1));
    const float* qh = a.q + b * a.q_strides[0] + h * a.q_strides[1] + seg.q0 * a.q_strides[2];
    const float* kh = a.k + b * a.k_strides[0] + h * a.k_strides[1] + seg.k0 * a.k_strides[2];
    const float* vh = a.v + b * a.v_strides[0] + h * a.v_strides[1] + seg.k0 * a.v_strides[2];
    float* outh = a.out + b * a.out_strides[0] + h * a.out_strides[1] + seg.q0 * a.out_strides[2];

    // K^T and V for every key this task can see, in nr-wide panels: K^T as
    // panels of dk rows, V as panels of kend_task rows (each P V pass then
    // streams one contiguous panel), or for a task of few queries V's rows
    // in place (kVInPlaceQueries). They are packed a key block at a time,
    // when a query block first needs it, while the next key block is
    // prefetched into L2: the rows are strided (often pages apart in a
    // projection output), out of the hardware prefetcher's reach, and come
    // from L3 or memory; their latency hides behind the block in between.
    const long ks = a.k_strides[2], vs = a.v_strides[2];
    float* ktp = tl_ktpack.get(static_cast<std::size_t>(std::max(1L, round_up(kend_task, nr) * a.dk)));
    const bool v_in_place = i_end - i_begin <= kVInPlaceQueries;
    float* vpk = v_in_place ? nullptr : tl_vpack.get(static_cast<std::size_t>(std::max(1L, kend_task * round_up(a.dv, nr))));
    // K^T is packed before a block's scores, V before its P V: V's rows,
    // fetched at the start, arrive while the scores and softmax run. Each
    // packs its key blocks up to `upto` with pack(j, n), the block after the
    // last one packed fetched into L2 meanwhile.
    long packed_k = 0, packed_v = 0;  // keys [0, packed_k) are in ktp, [0, packed_v) in vpk
    auto pack_blocks = [&](long* packed, long upto, const float* src, long ld, long cols, auto&& pack) {
      while (*packed < upto) {
        const long j = *packed, n = std::min(bk_max, kend_task - j);
        const long next = j + n, next_n = std::min(bk_max, kend_task - next);
        if (next_n > 0) prefetch_rows<2>(src + next * ld, ld, next_n, cols);
        pack(j, n);
        *packed = next;
      }
    };
    auto pack_k = [&](long upto) {
      pack_blocks(&packed_k, upto, kh, ks, a.dk, [&](long j, long n) {
        pack_panels(kt, kh + j * ks, ks, 1, n, a.dk, static_cast<int>(nr), ktp + j * a.dk);
      });
    };
    auto pack_v = [&](long upto) {
      pack_blocks(&packed_v, upto, vh, vs, a.dv, [&](long j, long n) {
        for (long g = j; g < j + n; g += nr) {
          const long gn = std::min(nr, j + n - g);
          for (long c0 = 0; c0 < a.dv; c0 += nr) {
            kt.pack_panel(vh + g * vs + c0, 1, vs, std::min(nr, a.dv - c0), gn, static_cast<int>(nr), 0,
                          vpk + c0 * kend_task + g * nr);
          }
        }
      });
    };
    // Nothing to overlap the first blocks with: fetch them at once.
    prefetch_rows<2>(qh + i_begin * a.q_strides[2], a.q_strides[2], std::min(bq, i_end - i_begin), a.dk);
    prefetch_rows<2>(kh, ks, std::min(bk_max, kend_task), a.dk);
    prefetch_rows<2>(vh, vs, std::min(bk_max, kend_task), a.dv);
    // A block of queries, scaled: as rows ldq floats apart when dk fits one
    // of the score kernel's row strides (a plain copy: the packed panels'
    // transposes cost more: one thread, Zen 4, [1, 12, 32, 64] 6% slower,
    // 1% from 128 queries up), else in mr-row panels.
    const long ldq = a.dk <= 64 ? 64 : a.dk <= 128 ? 128 : 0;
    float* qp = tl_qpack.get(static_cast<std::size_t>(std::max(1L, bq * (ldq > 0 ? ldq : a.dk))));
    float* tile = tl_tile.get(static_cast<std::size_t>(bq * bk_max));
    float* o = tl_out.get(static_cast<std::size_t>(bq * a.dv));
    const long w = kt.vector_width;
    float* stats = tl_stats.get(static_cast<std::size_t>((4 + w) * bq));
    float* m = stats;
    float* rescale = stats + bq;
    float* bmax = stats + 2 * bq;
    float* inv = stats + 3 * bq;
    float* l = stats + 4 * bq;  // w partial sums per row
    std::vector<long> valid(static_cast<std::size_t>(bq));

    for (long i0 = i_begin; i0 < i_end; i0 += bq) {
      const long rows = std::min(bq, seg.sq - i0);
      // The next block's queries, into L2 while this block computes.
      if (i0 + bq < i_end)
        prefetch_rows<2>(qh + (i0 + bq) * a.q_strides[2], a.q_strides[2], std::min(bq, i_end - i0 - bq), a.dk);
      if (ldq > 0) {
        kt.pack_panel(qh + i0 * a.q_strides[2], 1, a.q_strides[2], a.dk, rows, static_cast<int>(ldq), 0, qp);
      } else {
        pack_panels(kt, qh + i0 * a.q_strides[2], a.q_strides[2], 1, rows, a.dk, static_cast<int>(mr), qp);
      }
      // Fold scale * log2(e) into Q once: the scores come out in base 2.
      const float qscale = a.scale * kLog2e;
      kt.scale(qp, ldq > 0 ? rows * ldq : round_up(rows, mr) * a.dk, qscale);
      for (long r = 0; r < rows; ++r) m[r] = -INFINITY;
      std::fill(l, l + rows * w, 0.0f);
      const long kend = std::min(kend_task, visible(i0 + rows - 1));
      // Every visible key in one block (short sequences): P V goes straight
      // to the output, scaled by 1 / sum, and O is never built.
      const bool one_block = kend > 0 && kend <= bk_max;
      float* dst = outh + i0 * a.out_strides[2];
      // The output rows, for writing by the P V tiles: fetched only when
      // those store into them, their misses filled the store buffer and
      // stalled the tiles (the output is seldom in cache).
      if (one_block) prefetch_rows<3, 1>(dst, a.out_strides[2], rows, a.dv);
      if (!one_block) std::fill(o, o + rows * a.dv, 0.0f);
      for (long j0 = 0; j0 < kend; j0 += bk_max) {
        const long bk = std::min(bk_max, kend - j0);
        pack_k(std::min(kend_task, j0 + bk_max));
        // S = scale * log2(e) * Q K^T for this block of keys, with row maxima.
        kt.attn_scores(a.dk, qp, ldq, ktp + j0 * a.dk, rows, bk, tile, bmax);
        // Rows that reach the causal diagonal inside this block see fewer keys.
        const bool partial = a.causal && visible(i0) < j0 + bk;
        if (partial)
          for (long r = 0; r < rows; ++r)
            valid[static_cast<std::size_t>(r)] = std::clamp(visible(i0 + r) - j0, 0L, bk);
        const long* vp = partial ? valid.data() : nullptr;
        const bool masked = a.mask_kind != MaskKind::kNone || kpm_general;
        if (masked) mask_tile(kt, a, kpm_general, b, h, seg.q0 + i0, seg.k0 + j0, tile, bk_max, rows, bk, vp);
        // The kernel's row maxima hold when every entry of the block is live.
        kt.attn_online_softmax(tile, bk_max, rows, bk, vp, masked || partial ? nullptr : bmax, m, l, rescale);
        if (!v_in_place) {
          pack_v(std::min(kend_task, j0 + bk_max));
        } else if (i0 == i_begin && j0 + bk < kend_task) {
          // The next key block's values, into L2 while this one computes.
          prefetch_rows<2>(vh + (j0 + bk) * vs, vs, std::min(bk_max, kend_task - j0 - bk), a.dv);
        }
        // V's panels: packed (nr floats a key, kend_task * nr apart), or its rows in place.
        const float* vb = v_in_place ? vh + j0 * vs : vpk + j0 * nr;
        const long vstride = v_in_place ? nr : kend_task * nr, ldv = v_in_place ? vs : nr;
        if (one_block) {
          inverse_sums(l, w, rows, rescale);  // out = P V / sum
          kt.attn_pv_block(bk, tile, vb, vstride, ldv, rows, a.dv, dst, a.out_strides[2], rescale, true, nullptr, 0,
                           nullptr);
        } else if (j0 + bk < kend) {
          // O = O * rescale + P V.
          kt.attn_pv_block(bk, tile, vb, vstride, ldv, rows, a.dv, o, a.dv, rescale, false, nullptr, 0, nullptr);
        } else {
          // The last block: out = (O * rescale + P V) / sum, O not stored.
          inverse_sums(l, w, rows, inv);
          kt.attn_pv_block(bk, tile, vb, vstride, ldv, rows, a.dv, o, a.dv, rescale, false, dst, a.out_strides[2],
                           inv);
        }
      }
      // No visible key (a key padding length of 0): zero weights, zero output.
      if (kend <= 0)
        for (long r = 0; r < rows; ++r) std::fill(dst + r * a.out_strides[2], dst + r * a.out_strides[2] + a.dv, 0.0f);
    }
  };
  parallel_for(static_cast<long>(tasks.size()), run);
}

// Few queries over many keys: key chunks in parallel, then a merge of the
// partial (max, sum, unnormalised output) triples, in chunk order.
void fused_decode(const KernelTable& kt, const AttentionArgs& a, const std::vector<long>& kv_len, bool kpm_general) {
  const long heads = a.batch * a.heads;
  const long chunks = std::max(1L, (a.sk + kDecodeChunk - 1) / kDecodeChunk);
  const long sq = a.sq, dv = a.dv;
  const long part = sq * (dv + 2);  // per task: m[sq], l[sq], o[sq][dv]
  long count;
  if (!checked_mul(heads, chunks, &count) || !checked_mul(count, part, &count)) throw std::bad_alloc();
  HeapFloats partials(static_cast<std::size_t>(count));

  parallel_for(heads * chunks, [&](long t) {
    const long bh = t / chunks, c = t % chunks;
    const long b = bh / a.heads, h = bh % a.heads;
    const long kvl = kv_len.empty() ? a.sk : kv_len[static_cast<std::size_t>(b)];
    const long j0 = c * kDecodeChunk;
    const long j1 = std::min({a.sk, j0 + kDecodeChunk, kvl, visible_keys(a, sq - 1)});
    float* pm = partials.data() + t * part;
    float* pl = pm + sq;
    float* po = pl + sq;
    for (long r = 0; r < sq; ++r) {
      pm[r] = -INFINITY;
      pl[r] = 0.0f;
    }
    std::fill(po, po + sq * dv, 0.0f);
    if (j1 <= j0) return;
    const long n = j1 - j0;
    float* s = tl_tile.get(static_cast<std::size_t>(sq * n));
    // Base-2 scores, as in the flash path.
    sgemm_serial(kt, scores_gemm(a, b, h, 0, sq, j0, n, a.scale * kLog2e, s, n));
    long valid[kDecodeQueries];
    for (long r = 0; r < sq; ++r) valid[r] = std::clamp(visible_keys(a, r) - j0, 0L, n);
    if (a.mask_kind != MaskKind::kNone || kpm_general) mask_tile(kt, a, kpm_general, b, h, 0, j0, s, n, sq, n, valid);
    float rescale[kDecodeQueries];
    const long w = kt.vector_width;
    std::vector<float> lv(static_cast<std::size_t>(sq * w), 0.0f);
    kt.attn_online_softmax(s, n, sq, n, valid, nullptr, pm, lv.data(), rescale);
    for (long r = 0; r < sq; ++r) pl[r] = lanes_sum(lv.data() + r * w, w);
    sgemm_serial(kt, values_gemm(a, b, h, sq, j0, n, s, n, po, dv));
  });

  parallel_for(heads, [&](long bh) {
    const long b = bh / a.heads, h = bh % a.heads;
    float* out = a.out + b * a.out_strides[0] + h * a.out_strides[1];
    std::vector<double> acc(static_cast<std::size_t>(dv));
    for (long r = 0; r < sq; ++r) {
      float mx = -INFINITY;
      bool nan = false;
      for (long c = 0; c < chunks; ++c) {
        const float* pm = partials.data() + (bh * chunks + c) * part;
        nan = nan || pm[r] != pm[r] || pm[sq + r] != pm[sq + r];
        mx = std::max(mx, pm[r]);
      }
      float* dst = out + r * a.out_strides[2];
      if (nan || mx == -INFINITY) {
        for (long d = 0; d < dv; ++d) dst[d] = nan ? NAN : 0.0f;
        continue;
      }
      double lsum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (long c = 0; c < chunks; ++c) {
        const float* pm = partials.data() + (bh * chunks + c) * part;
        if (pm[r] == -INFINITY) continue;
        const double w = std::exp2(static_cast<double>(pm[r]) - mx);
        lsum += w * pm[sq + r];
        const float* po = pm + 2 * sq + r * dv;
        for (long d = 0; d < dv; ++d) acc[static_cast<std::size_t>(d)] += w * po[d];
      }
      for (long d = 0; d < dv; ++d) dst[d] = static_cast<float>(acc[static_cast<std::size_t>(d)] / lsum);
    }
  });
}

}  // namespace

void attention_fused(const KernelTable& kt, const AttentionArgs& a) {
  if (a.batch <= 0 || a.heads <= 0 || a.sq <= 0 || a.dv <= 0) return;
  const FlushDenormals fp;
  const std::vector<long> kv_len = padding_lengths(a);
  const bool kpm_general = a.kpm_kind != MaskKind::kNone && kv_len.empty();
  if (a.sq <= kDecodeQueries && !a.seq_offsets) {
    fused_decode(kt, a, kv_len, kpm_general);
  } else {
    fused_flash(kt, a, kv_len, kpm_general);
  }
}

void additive_scores(const KernelTable& kt, const AdditiveArgs& a) {
  const long rows = a.batch * a.heads * a.sq;
  if (rows == 0 || a.sk == 0) return;
  if (a.hidden == 0) {  // an empty sum (and pq, pk hold nothing to read)
    std::fill(a.scores, a.scores + rows * a.sk, 0.0f);
    return;
  }
  const FlushDenormals fp;
  parallel_ranges(rows, task_count(rows, rows * a.sk * a.hidden, 1L << 16), [&](long r0, long r1) {
    float* qb = tl_row.get(static_cast<std::size_t>(a.hidden > 0 ? a.hidden : 1));
    for (long r = r0; r < r1; ++r) {
      const long b = r / (a.heads * a.sq), h = (r / a.sq) % a.heads, i = r % a.sq;
      const float* pq = a.pq + b * a.pq_strides[0] + h * a.pq_strides[1] + i * a.pq_strides[2];
      for (long c = 0; c < a.hidden; ++c) qb[c] = pq[c] + (a.bias ? a.bias[c] : 0.0f);
      const float* pk = a.pk + b * a.pk_strides[0] + h * a.pk_strides[1];
      kt.additive_row(qb, pk, a.sk, a.pk_strides[2], a.hidden, a.w, a.scores + r * a.sk);
    }
  });
}

}  // namespace attn
