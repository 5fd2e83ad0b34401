#include "attention.h"

#include <cmath>
#include <cstring>

#include "../runtime/thread_pool.h"
#include "gemm.h"
#include "scratch.h"
#include "strided.h"

namespace attn {
namespace {

// Queries per task. Fixed, so the decomposition (and every GEMM shape in it)
// is the same for any thread count.
constexpr long kQueryBlock = 64;

thread_local Scratch tl_scores;
thread_local Scratch tl_row;

inline long clamp_l(long v, long lo, long hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Keys query i may see: [0, valid).
inline long valid_keys(const AttentionArgs& a, long i) {
  return a.causal ? clamp_l(i + a.sk - a.sq + 1, 0, a.sk) : a.sk;
}

// Adds the masks to one row of scaled scores (uint8: -inf where set).
void apply_masks(const AttentionArgs& a, long b, long h, long i, float* row, long valid) {
  const float ninf = -INFINITY;
  if (a.mask_kind != MaskKind::kNone) {
    const long off = b * a.mask_strides[0] + h * a.mask_strides[1] + i * a.mask_strides[2];
    const long js = a.mask_strides[3];
    if (a.mask_kind == MaskKind::kF32) {
      const float* m = static_cast<const float*>(a.mask) + off;
      for (long j = 0; j < valid; ++j) row[j] += m[j * js];
    } else {
      const std::uint8_t* m = static_cast<const std::uint8_t*>(a.mask) + off;
      for (long j = 0; j < valid; ++j)
        if (m[j * js]) row[j] = ninf;
    }
  }
  if (a.kpm_kind != MaskKind::kNone) {
    const long off = b * a.kpm_stride_b;
    if (a.kpm_kind == MaskKind::kF32) {
      const float* m = static_cast<const float*>(a.kpm) + off;
      for (long j = 0; j < valid; ++j) row[j] += m[j];
    } else {
      const std::uint8_t* m = static_cast<const std::uint8_t*>(a.kpm) + off;
      for (long j = 0; j < valid; ++j)
        if (m[j]) row[j] = ninf;
    }
  }
}

}  // namespace

void attention_explicit(const KernelTable& kt, const AttentionArgs& a) {
  if (a.batch <= 0 || a.heads <= 0 || a.sq <= 0 || (a.dv <= 0 && !a.weights)) return;
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
    const long kmax = valid_keys(a, i1 - 1);

    // Scores for the block: into the weights output when asked for, else scratch.
    float* s = a.weights ? a.weights + ((b * a.heads + h) * a.sq + i0) * a.sk
                         : tl_scores.get(static_cast<std::size_t>(rows * (a.sk > 0 ? a.sk : 1)));
    if (kmax > 0) {
      if (a.scores) {
        const float* src = a.scores + ((b * a.heads + h) * a.sq + i0) * a.sk;
        if (src != s) std::memcpy(s, src, static_cast<std::size_t>(rows * a.sk) * sizeof(float));
      } else {
        GemmArgs g;
        g.m = rows;
        g.n = kmax;
        g.k = a.dk;
        g.trans_b = true;
        g.alpha = a.scale;
        g.a = a.q + b * a.q_strides[0] + h * a.q_strides[1] + i0 * a.q_strides[2];
        g.lda = a.q_strides[2];  // any stride works for reading, even 0 (a broadcast query)
        g.b = a.k + b * a.k_strides[0] + h * a.k_strides[1];
        g.ldb = a.k_strides[2];
        g.c = s;
        g.ldc = a.sk;
        sgemm_serial(kt, g);
      }
    }

    // Masked softmax, row by row.
    for (long i = i0; i < i1; ++i) {
      float* row = s + (i - i0) * a.sk;
      const long valid = valid_keys(a, i);
      apply_masks(a, b, h, i, row, valid);
      kt.softmax_row(row, row, a.sk, valid, 1.0f, nullptr, nullptr, nullptr, nullptr);
    }

    // out = P V over the keys that can carry weight.
    GemmArgs g;
    g.m = rows;
    g.n = a.dv;
    g.k = kmax;
    g.a = s;
    g.lda = a.sk > 0 ? a.sk : 1;
    g.b = a.v + b * a.v_strides[0] + h * a.v_strides[1];
    g.ldb = a.v_strides[2];
    g.c = out;
    g.ldc = a.out_strides[2] > a.dv ? a.out_strides[2] : a.dv;
    sgemm_serial(kt, g);  // k == 0 writes zeros
  };
  parallel_for(tasks, task);
}

void l2_normalize(int rank, const long* shape, const float* src, const long* strides, float* dst,
                  float eps) {
  if (rank <= 0) return;
  const long dim = shape[rank - 1];
  long rows = 1;
  for (int d = 0; d < rank - 1; ++d) rows *= shape[d];
  if (rows == 0 || dim == 0) return;
  long tasks = rows * dim / (1L << 15);
  if (tasks < 1) tasks = 1;
  if (tasks > rows) tasks = rows;
  parallel_for(tasks, [&](long t) {
    const long r0 = rows * t / tasks, r1 = rows * (t + 1) / tasks;
    const long* st[1] = {strides};
    Odometer od(rank - 1, shape, 1, st, r0);
    for (long r = r0; r < r1; ++r, od.next()) {
      const float* x = src + od.off[0];
      double ss = 0;
      for (long j = 0; j < dim; ++j) ss += static_cast<double>(x[j]) * x[j];
      const double norm = std::sqrt(ss);
      const float inv = static_cast<float>(1.0 / (norm > eps ? norm : eps));
      float* y = dst + r * dim;
      for (long j = 0; j < dim; ++j) y[j] = x[j] * inv;
    }
  });
}

void additive_scores(const KernelTable& kt, const AdditiveArgs& a) {
  const long rows = a.batch * a.heads * a.sq;
  if (rows == 0 || a.sk == 0) return;
  long tasks = rows * a.sk * a.hidden / (1L << 16);
  if (tasks < 1) tasks = 1;
  if (tasks > rows) tasks = rows;
  parallel_for(tasks, [&](long t) {
    const long r0 = rows * t / tasks, r1 = rows * (t + 1) / tasks;
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
