// Kernel tests without Node: every ISA table this CPU can run, checked against
// float64 references on awkward sizes. Built plain, under ASan + UBSan, and
// for aarch64 (run under qemu-user) by .ci/run.
//
// Usage: kernel_test [--quick]     exit status 0 when every check passes.
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../kernels/attention.h"
#include "../kernels/bounds.h"
#include "../kernels/gemm.h"
#include "../kernels/layers.h"
#include "../kernels/softmax.h"
#include "../kernels/tensor_ops.h"
#include "../runtime/cpu.h"
#include "../runtime/dispatch.h"
#include "../runtime/fp_env.h"
#include "../runtime/thread_pool.h"

using namespace attn;

namespace {

int g_pass = 0, g_fail = 0;
bool g_quick = false;

void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_pass;
  } else {
    ++g_fail;
    std::printf("  FAIL %s\n", what.c_str());
  }
}

// Runs f() with the pool at n threads, then gives the pool back its size.
template <class F>
void on_threads(int n, F&& f) {
  const int before = ThreadPool::global().size();
  ThreadPool::global().resize(n);
  f();
  ThreadPool::global().resize(before);
}

// A pointer into `buf` (at least 32 floats longer than needed) whose address
// is `skew` floats past a 64-byte boundary, for the streamed stores' heads.
float* at_skew(std::vector<float>& buf, long skew) {
  const auto addr = reinterpret_cast<std::uintptr_t>(buf.data());
  const long to_line = static_cast<long>((64 - addr % 64) % 64) / 4;
  return buf.data() + to_line + skew;
}

// Deterministic values in [-1, 1).
struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed * 2654435761u + 1) {}
  float next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<float>(static_cast<double>(s >> 11) / 4503599627370496.0 - 1.0);
  }
  void fill(std::vector<float>& v) {
    for (float& x : v) x = next();
  }
};

double ulp_distance(float got, double want) {
  if (std::isnan(want)) return std::isnan(got) ? 0 : 1e30;
  if (std::isinf(want)) return got == static_cast<float>(want) ? 0 : 1e30;
  float wf = static_cast<float>(want);
  if (wf == 0.0f) {
    // Below the smallest denormal: distance in units of that denormal.
    return std::fabs(static_cast<double>(got)) / 1.401298464324817e-45;
  }
  double ulp = std::fabs(static_cast<double>(std::nextafter(wf, std::numeric_limits<float>::infinity())) -
                         static_cast<double>(wf));
  return std::fabs(static_cast<double>(got) - want) / ulp;
}

// The largest ulp distance of y[i] from ref(xs[i]), and where it is.
template <typename Ref>
double worst_ulp(const std::vector<float>& xs, const std::vector<float>& y, Ref ref, float* where) {
  double worst = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double d = ulp_distance(y[i], ref(static_cast<double>(xs[i])));
    if (d > worst) {
      worst = d;
      *where = xs[i];
    }
  }
  return worst;
}

// ---------------------------------------------------------------- exp
void test_exp(const KernelTable& kt) {
  std::vector<float> xs;
  for (double x = -110.0; x <= 90.0; x += 0.0137) xs.push_back(static_cast<float>(x));
  for (float x : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.72f, 88.7228f, 88.73f, -87.33f, -87.34f,
                  -103.97f, -103.98f, -104.5f, -149.0f * 0.6931472f})
    xs.push_back(x);
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> special = {inf, -inf, std::nanf("")};
  std::vector<float> y(xs.size());
  kt.exp_array(xs.data(), y.data(), static_cast<long>(xs.size()));
  float worst_x = 0;
  const double worst = worst_ulp(xs, y, [](double x) { return std::exp(x); }, &worst_x);
  check(worst <= 2.0, std::string(kt.name) + " exp max error " + std::to_string(worst) +
                          " ulp at x=" + std::to_string(worst_x) + " (want <= 2)");
  std::vector<float> ys(3);
  kt.exp_array(special.data(), ys.data(), 3);
  check(ys[0] == inf && ys[1] == 0.0f && std::isnan(ys[2]),
        std::string(kt.name) + " exp(inf, -inf, nan) = (inf, 0, nan)");
  // Every length up to a few vectors, so tails are covered.
  for (long n = 0; n <= 3 * kt.vector_width + 1; ++n) {
    std::vector<float> a(static_cast<std::size_t>(n) + 1, 0.5f), b(static_cast<std::size_t>(n) + 1, -7.0f);
    kt.exp_array(a.data(), b.data(), n);
    bool ok = b[static_cast<std::size_t>(n)] == -7.0f;
    for (long i = 0; i < n; ++i) ok = ok && std::fabs(b[i] - 1.6487213f) < 1e-6f;
    check(ok, std::string(kt.name) + " exp tail n=" + std::to_string(n));
  }
  std::printf("  %s exp: max %.3f ulp over %zu points\n", kt.name, worst, xs.size());
}

// ---------------------------------------------------------------- tanh
void test_tanh(const KernelTable& kt) {
  std::vector<float> xs;
  for (double x = -12.0; x <= 12.0; x += 0.00731) xs.push_back(static_cast<float>(x));
  for (float x : {0.0f, -0.0f, 1e-30f, -1e-20f, 1e-5f, 0.6249f, 0.625f, 0.6251f, 9.0f, 50.0f, -50.0f, 1e30f})
    xs.push_back(x);
  std::vector<float> y(xs.size());
  kt.tanh_array(xs.data(), y.data(), static_cast<long>(xs.size()));
  float worst_x = 0;
  const double worst = worst_ulp(xs, y, [](double x) { return std::tanh(x); }, &worst_x);
  check(worst <= 3.0, std::string(kt.name) + " tanh max error " + std::to_string(worst) + " ulp at x=" +
                          std::to_string(worst_x) + " (want <= 3)");
  float nan_in = std::nanf(""), nan_out = 0;
  kt.tanh_array(&nan_in, &nan_out, 1);
  check(std::isnan(nan_out), std::string(kt.name) + " tanh(NaN) is NaN");
  std::printf("  %s tanh: max %.3f ulp over %zu points\n", kt.name, worst, xs.size());
}

// ---------------------------------------------------------------- attention
// Reference for one (b, h): scores, masks, softmax, P V, in double.
struct AttnRef {
  std::vector<double> out, weights;
};

void test_attention(const KernelTable& kt) {
  const long B = 2, H = 3, Sq = 70, Sk = 83, dk = 19, dv = 23;
  Rng rng(21);
  // Q, K, V laid out [B, S, H, d] (as a projection output) and read as [B, H, S, d].
  std::vector<float> q(static_cast<std::size_t>(B * Sq * H * dk)), k(static_cast<std::size_t>(B * Sk * H * dk)),
      v(static_cast<std::size_t>(B * Sk * H * dv));
  rng.fill(q);
  rng.fill(k);
  rng.fill(v);
  std::vector<float> fmask(static_cast<std::size_t>(B * Sq * Sk));  // [B, 1, Sq, Sk]
  for (float& x : fmask) x = rng.next();
  fmask[5] = -INFINITY;
  std::vector<std::uint8_t> kpm(static_cast<std::size_t>(B * Sk), 0);
  for (long j = 70; j < Sk; ++j) kpm[static_cast<std::size_t>(Sk + j)] = 1;  // batch 1 pads its last keys

  for (int variant = 0; variant < 4; ++variant) {
    const bool causal = variant & 1, masks = variant & 2;
    AttentionArgs a;
    a.batch = B;
    a.heads = H;
    a.sq = Sq;
    a.sk = Sk;
    a.dk = dk;
    a.dv = dv;
    a.q = q.data();
    a.q_strides[0] = Sq * H * dk;
    a.q_strides[1] = dk;
    a.q_strides[2] = H * dk;
    a.k = k.data();
    a.k_strides[0] = Sk * H * dk;
    a.k_strides[1] = dk;
    a.k_strides[2] = H * dk;
    a.v = v.data();
    a.v_strides[0] = Sk * H * dv;
    a.v_strides[1] = dv;
    a.v_strides[2] = H * dv;
    std::vector<float> out(static_cast<std::size_t>(B * Sq * H * dv), 7.0f), weights(static_cast<std::size_t>(B * H * Sq * Sk));
    a.out = out.data();  // written as [B, Sq, H, dv]: the head merge for free
    a.out_strides[0] = Sq * H * dv;
    a.out_strides[1] = dv;
    a.out_strides[2] = H * dv;
    a.scale = 1.0f / std::sqrt(static_cast<float>(dk));
    a.causal = causal;
    if (masks) {
      a.mask_kind = MaskKind::kF32;
      a.mask = fmask.data();
      a.mask_strides[0] = Sq * Sk;
      a.mask_strides[1] = 0;
      a.mask_strides[2] = Sk;
      a.mask_strides[3] = 1;
      a.kpm_kind = MaskKind::kU8;
      a.kpm = kpm.data();
      a.kpm_stride_b = Sk;
    }
    a.weights = weights.data();
    attention_explicit(kt, a);

    double err_o = 0, err_w = 0;
    for (long b = 0; b < B; ++b)
      for (long h = 0; h < H; ++h)
        for (long i = 0; i < Sq; ++i) {
          std::vector<double> sc(static_cast<std::size_t>(Sk));
          const long valid = causal ? std::min(Sk, std::max(0L, i + Sk - Sq + 1)) : Sk;
          double m = -INFINITY;
          for (long j = 0; j < Sk; ++j) {
            double d = 0;
            for (long c = 0; c < dk; ++c)
              d += static_cast<double>(q[static_cast<std::size_t>(b * a.q_strides[0] + h * dk + i * H * dk + c)]) *
                   k[static_cast<std::size_t>(b * a.k_strides[0] + h * dk + j * H * dk + c)];
            d *= a.scale;
            if (masks) {
              d += fmask[static_cast<std::size_t>(b * Sq * Sk + i * Sk + j)];
              if (kpm[static_cast<std::size_t>(b * Sk + j)]) d = -INFINITY;
            }
            if (j >= valid) d = -INFINITY;
            sc[static_cast<std::size_t>(j)] = d;
            m = std::max(m, d);
          }
          double sum = 0;
          for (long j = 0; j < Sk; ++j) sum += m == -INFINITY ? 0 : std::exp(sc[static_cast<std::size_t>(j)] - m);
          for (long j = 0; j < Sk; ++j) {
            double p = (m == -INFINITY || sum == 0) ? 0 : std::exp(sc[static_cast<std::size_t>(j)] - m) / sum;
            sc[static_cast<std::size_t>(j)] = p;
            err_w = std::max(err_w, std::fabs(weights[static_cast<std::size_t>(((b * H + h) * Sq + i) * Sk + j)] - p));
          }
          for (long c = 0; c < dv; ++c) {
            double o = 0;
            for (long j = 0; j < Sk; ++j)
              o += sc[static_cast<std::size_t>(j)] * v[static_cast<std::size_t>(b * a.v_strides[0] + h * dv + j * H * dv + c)];
            err_o = std::max(err_o, std::fabs(out[static_cast<std::size_t>(b * a.out_strides[0] + h * dv + i * H * dv + c)] - o));
          }
        }
    check(err_o < 2e-6 && err_w < 2e-6, std::string(kt.name) + " attention causal=" + std::to_string(causal) +
                                            " masks=" + std::to_string(masks) + " err out " + std::to_string(err_o) +
                                            " weights " + std::to_string(err_w));

    // Without the weights output, and on other thread counts: the same bits.
    std::vector<float> out2(out.size(), -1.0f);
    a.out = out2.data();
    a.weights = nullptr;
    on_threads(3, [&] { attention_explicit(kt, a); });
    check(std::memcmp(out.data(), out2.data(), out.size() * sizeof(float)) == 0,
          std::string(kt.name) + " attention without weights, 3 threads: same bits, variant " + std::to_string(variant));

    // Precomputed scores give the same result as computing them.
    if (!masks) {
      std::vector<float> scores(weights.size());
      AttentionArgs s = a;
      s.out = out2.data();
      s.weights = scores.data();
      s.mask_kind = MaskKind::kNone;
      s.kpm_kind = MaskKind::kNone;
      // The scaled scores, computed with the GEMM directly.
      for (long b = 0; b < B; ++b)
        for (long h = 0; h < H; ++h) {
          GemmArgs g;
          g.m = Sq;
          g.n = Sk;
          g.k = dk;
          g.trans_b = true;
          g.alpha = a.scale;
          g.a = q.data() + b * a.q_strides[0] + h * dk;
          g.lda = H * dk;
          g.b = k.data() + b * a.k_strides[0] + h * dk;
          g.ldb = H * dk;
          g.c = scores.data() + (b * H + h) * Sq * Sk;
          g.ldc = Sk;
          sgemm_serial(kt, g);
        }
      std::vector<float> out3(out.size(), 0.0f);
      s.scores = scores.data();
      s.weights = nullptr;
      s.out = out3.data();
      attention_explicit(kt, s);
      double d = 0;
      for (std::size_t i = 0; i < out.size(); ++i) d = std::max(d, static_cast<double>(std::fabs(out3[i] - out[i])));
      check(d < 1e-6, std::string(kt.name) + " attention from precomputed scores, diff " + std::to_string(d));
    }
  }

  // Additive scores against a direct evaluation.
  const long hid = 37;
  std::vector<float> pq(static_cast<std::size_t>(B * H * Sq * hid)), pk(static_cast<std::size_t>(B * H * Sk * hid)),
      w(static_cast<std::size_t>(hid)), bias(static_cast<std::size_t>(hid)), sc(static_cast<std::size_t>(B * H * Sq * Sk));
  rng.fill(pq);
  rng.fill(pk);
  rng.fill(w);
  rng.fill(bias);
  AdditiveArgs ad;
  ad.batch = B;
  ad.heads = H;
  ad.sq = Sq;
  ad.sk = Sk;
  ad.hidden = hid;
  ad.pq = pq.data();
  ad.pq_strides[0] = H * Sq * hid;
  ad.pq_strides[1] = Sq * hid;
  ad.pq_strides[2] = hid;
  ad.pk = pk.data();
  ad.pk_strides[0] = H * Sk * hid;
  ad.pk_strides[1] = Sk * hid;
  ad.pk_strides[2] = hid;
  ad.w = w.data();
  ad.bias = bias.data();
  ad.scores = sc.data();
  additive_scores(kt, ad);
  double err = 0;
  for (long r = 0; r < B * H * Sq; ++r)
    for (long j = 0; j < Sk; ++j) {
      const long bh = r / Sq;
      double want = 0;
      for (long c = 0; c < hid; ++c)
        want += w[static_cast<std::size_t>(c)] *
                std::tanh(static_cast<double>(pq[static_cast<std::size_t>(r * hid + c)]) +
                          pk[static_cast<std::size_t>((bh * Sk + j) * hid + c)] + bias[static_cast<std::size_t>(c)]);
      err = std::max(err, std::fabs(sc[static_cast<std::size_t>(r * Sk + j)] - want));
    }
  check(err < 1e-5, std::string(kt.name) + " additive scores err " + std::to_string(err));
}

// ---------------------------------------------------------------- fused attention
struct FusedCase {
  long B, H, Sq, Sk, dk, dv;
  bool causal;
  int mask;  // 0 none, 1 f32 [B,1,Sq,Sk], 2 u8 [Sq,Sk], 3 f32 broadcast along keys
  int kpm;   // 0 none, 1 u8 suffix padding, 2 u8 scattered, 3 f32
};

void test_fused(const KernelTable& kt) {
  const FusedCase cases[] = {
      {1, 1, 1, 1, 1, 1, false, 0, 0},       {2, 3, 70, 83, 19, 23, false, 0, 0},
      {2, 3, 70, 83, 19, 23, true, 0, 0},    {1, 2, 130, 130, 64, 64, true, 0, 0},
      {2, 2, 57, 200, 64, 40, true, 1, 1},   {2, 2, 45, 97, 32, 64, false, 2, 2},
      {3, 1, 33, 191, 16, 16, true, 3, 3},   {1, 2, 300, 300, 64, 64, true, 0, 1},
      {2, 2, 1, 2500, 64, 64, true, 0, 1},   {1, 3, 3, 2100, 24, 40, false, 1, 2},
      {2, 1, 4, 1500, 64, 64, true, 2, 3},   {1, 1, 260, 40, 8, 8, true, 0, 0},
      {1, 1, 5, 7, 8, 8, false, 0, 0},       {1, 1, 97, 1025, 96, 128, false, 0, 0},
      {1, 2, 33, 47, 0, 8, true, 0, 0},      // dk = 0: every score is 0 (and Q, K are empty)
      // More queries than a task reads V in place for on one thread, fewer
      // per task on three: packed and in-place V give the same bits.
      {1, 1, 700, 300, 40, 72, false, 0, 0}, {2, 1, 600, 600, 64, 40, true, 0, 1},
      // Queries staged as rows 64 and 128 floats apart, and in panels beyond.
      {1, 2, 60, 70, 64, 24, true, 0, 0},    {1, 2, 60, 70, 65, 24, false, 0, 0},
      {1, 2, 60, 70, 128, 24, true, 0, 0},   {1, 2, 60, 70, 130, 24, false, 0, 0},
      // Key blocks of one vector or less (the narrow score tile) on rows
      // split into even tiles, and last query blocks of 1 to 3 rows.
      {1, 3, 16, 16, 64, 64, false, 0, 0},   {2, 2, 17, 9, 64, 32, true, 1, 2},
      {1, 2, 29, 16, 100, 64, false, 3, 3},  {1, 1, 6, 13, 64, 64, true, 2, 1},
      {1, 2, 40, 131, 64, 64, true, 0, 0},   {1, 2, 57, 10, 64, 64, false, 0, 0},
      {1, 1, 59, 16, 48, 48, true, 0, 1},    {1, 1, 58, 8, 128, 16, false, 1, 0},
  };
  double worst = 0;
  for (const FusedCase& c : cases) {
    Rng rng(static_cast<std::uint64_t>(c.Sq * 31 + c.Sk));
    // [B, S, H, d] storage read as [B, H, S, d].
    std::vector<float> q(static_cast<std::size_t>(c.B * c.Sq * c.H * c.dk)), k(static_cast<std::size_t>(c.B * c.Sk * c.H * c.dk)),
        v(static_cast<std::size_t>(c.B * c.Sk * c.H * c.dv));
    rng.fill(q);
    rng.fill(k);
    rng.fill(v);
    for (float& x : q) x *= 2.0f;
    std::vector<float> fm(static_cast<std::size_t>(c.B * c.Sq * c.Sk));
    for (float& x : fm) x = rng.next() * 3.0f;
    for (std::size_t i = 0; i < fm.size(); i += 7) fm[i] = -INFINITY;
    std::vector<std::uint8_t> um(static_cast<std::size_t>(c.Sq * c.Sk));
    for (std::size_t i = 0; i < um.size(); ++i) um[i] = (i % 5 == 3) ? 1 : 0;
    std::vector<std::uint8_t> kpu(static_cast<std::size_t>(c.B * c.Sk), 0);
    std::vector<float> kpf(static_cast<std::size_t>(c.B * c.Sk));
    for (long b = 0; b < c.B; ++b)
      for (long j = 0; j < c.Sk; ++j) {
        const std::size_t i = static_cast<std::size_t>(b * c.Sk + j);
        if (c.kpm == 1) kpu[i] = j >= c.Sk - b * (c.Sk / 3) ? 1 : 0;  // batch 0 unpadded, later ones padded
        if (c.kpm == 2) kpu[i] = (j % 4 == 1 && b == c.B - 1) ? 1 : 0;
        kpf[i] = rng.next();
      }
    AttentionArgs a;
    a.batch = c.B;
    a.heads = c.H;
    a.sq = c.Sq;
    a.sk = c.Sk;
    a.dk = c.dk;
    a.dv = c.dv;
    a.q = q.data();
    a.q_strides[0] = c.Sq * c.H * c.dk;
    a.q_strides[1] = c.dk;
    a.q_strides[2] = c.H * c.dk;
    a.k = k.data();
    a.k_strides[0] = c.Sk * c.H * c.dk;
    a.k_strides[1] = c.dk;
    a.k_strides[2] = c.H * c.dk;
    a.v = v.data();
    a.v_strides[0] = c.Sk * c.H * c.dv;
    a.v_strides[1] = c.dv;
    a.v_strides[2] = c.H * c.dv;
    a.out_strides[0] = c.Sq * c.H * c.dv;
    a.out_strides[1] = c.dv;
    a.out_strides[2] = c.H * c.dv;
    a.scale = 1.0f / std::sqrt(static_cast<float>(c.dk));
    a.causal = c.causal;
    if (c.mask == 1) {
      a.mask_kind = MaskKind::kF32;
      a.mask = fm.data();
      a.mask_strides[0] = c.Sq * c.Sk;
      a.mask_strides[2] = c.Sk;
      a.mask_strides[3] = 1;
    } else if (c.mask == 2) {
      a.mask_kind = MaskKind::kU8;
      a.mask = um.data();
      a.mask_strides[2] = c.Sk;
      a.mask_strides[3] = 1;
    } else if (c.mask == 3) {
      a.mask_kind = MaskKind::kF32;
      a.mask = fm.data();
      a.mask_strides[2] = 1;  // one value per query row
    }
    if (c.kpm == 1 || c.kpm == 2) {
      a.kpm_kind = MaskKind::kU8;
      a.kpm = kpu.data();
      a.kpm_stride_b = c.Sk;
    } else if (c.kpm == 3) {
      a.kpm_kind = MaskKind::kF32;
      a.kpm = kpf.data();
      a.kpm_stride_b = c.Sk;
    }
    std::vector<float> ref(static_cast<std::size_t>(c.B * c.Sq * c.H * c.dv)), got(ref.size(), 9.0f), got3(ref.size(), -9.0f);
    a.out = ref.data();
    attention_explicit(kt, a);
    a.out = got.data();
    attention_fused(kt, a);
    double err = 0, mag = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      err = std::max(err, static_cast<double>(std::fabs(got[i] - ref[i])));
      mag = std::max(mag, static_cast<double>(std::fabs(ref[i])));
    }
    const double rel = err / std::max(mag, 1e-30);
    worst = std::max(worst, rel);
    check(rel < 1e-5, std::string(kt.name) + " fused vs explicit B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) +
                          " Sq=" + std::to_string(c.Sq) + " Sk=" + std::to_string(c.Sk) + " dk=" + std::to_string(c.dk) +
                          " causal=" + std::to_string(c.causal) + " mask=" + std::to_string(c.mask) + " kpm=" +
                          std::to_string(c.kpm) + " rel err " + std::to_string(rel));
    a.out = got3.data();
    on_threads(3, [&] { attention_fused(kt, a); });
    check(std::memcmp(got.data(), got3.data(), got.size() * sizeof(float)) == 0,
          std::string(kt.name) + " fused attention: same bits on 3 threads, Sq=" + std::to_string(c.Sq));
  }
  // A NaN in a query makes its rows NaN (and only those).
  {
    const long S = 20, d = 8;
    std::vector<float> q(S * d, 0.5f), k(S * d, 0.25f), v(S * d, 1.0f), out(S * d);
    q[3 * d + 2] = NAN;
    AttentionArgs a;
    a.batch = a.heads = 1;
    a.sq = a.sk = S;
    a.dk = a.dv = d;
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    a.out = out.data();
    a.q_strides[2] = a.k_strides[2] = a.v_strides[2] = a.out_strides[2] = d;
    a.causal = true;
    attention_fused(kt, a);
    bool ok = true;
    for (long i = 0; i < S; ++i)
      for (long c = 0; c < d; ++c) ok = ok && (i == 3 ? std::isnan(out[i * d + c]) : out[i * d + c] == 1.0f);
    check(ok, std::string(kt.name) + " fused attention: NaN query row is NaN, others exact");
  }
  std::printf("  %s fused attention: %zu cases, worst relative error vs explicit %.2e\n", kt.name,
              sizeof cases / sizeof cases[0], worst);
}

// Packed variable-length sequences: each sequence's rows equal the fused
// kernel run on that sequence alone (bitwise, beyond the decode path's 4
// queries), heads and sequences over several threads, causal or not. Under
// ASan this also checks that no task reads outside its sequence's rows.
void test_packed(const KernelTable& kt) {
  const long lengths[] = {57, 1, 130, 4, 17, 129, 56, 5, 97, 2, 300, 33};
  const long n = sizeof lengths / sizeof lengths[0];
  std::vector<long> off(static_cast<std::size_t>(n) + 1, 0);
  for (long s = 0; s < n; ++s) off[static_cast<std::size_t>(s) + 1] = off[static_cast<std::size_t>(s)] + lengths[s];
  const long T = off.back(), H = 3, d = 24;
  Rng rng(77);
  // Exactly sized buffers, [T, H, d] read as [H, T, d]: a read past the last row is an ASan error.
  std::vector<float> q(static_cast<std::size_t>(T * H * d)), k(q.size()), v(q.size());
  rng.fill(q);
  rng.fill(k);
  rng.fill(v);
  for (bool causal : {false, true}) {
    AttentionArgs a;
    a.batch = 1;
    a.heads = H;
    a.sq = a.sk = T;
    a.dk = a.dv = d;
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    for (long* st : {a.q_strides, a.k_strides, a.v_strides, a.out_strides}) {
      st[0] = T * H * d;
      st[1] = d;
      st[2] = H * d;
    }
    a.scale = 0.2f;
    a.causal = causal;
    a.seq_offsets = off.data();
    a.sequences = n;
    std::vector<float> packed(q.size(), 7.0f), packed3(q.size(), -7.0f);
    a.out = packed.data();
    attention_fused(kt, a);
    a.out = packed3.data();
    on_threads(3, [&] { attention_fused(kt, a); });
    check(std::memcmp(packed.data(), packed3.data(), packed.size() * sizeof(float)) == 0,
          std::string(kt.name) + " packed sequences: same bits on 3 threads, causal=" + std::to_string(causal));
    double worst = 0;
    bool same = true;
    for (long s = 0; s < n; ++s) {
      const long r0 = off[static_cast<std::size_t>(s)], len = lengths[s];
      AttentionArgs one = a;
      one.seq_offsets = nullptr;
      one.sequences = 0;
      one.sq = one.sk = len;
      one.q = q.data() + r0 * H * d;
      one.k = k.data() + r0 * H * d;
      one.v = v.data() + r0 * H * d;
      std::vector<float> alone(static_cast<std::size_t>(len * H * d));
      one.out = alone.data();
      attention_fused(kt, one);
      const float* got = packed.data() + r0 * H * d;
      for (std::size_t i = 0; i < alone.size(); ++i) {
        worst = std::max(worst, static_cast<double>(std::fabs(got[i] - alone[i])));
        same = same && (len <= 4 || got[i] == alone[i]);
      }
    }
    check(worst < 1e-5 && same, std::string(kt.name) + " packed sequences equal each alone, causal=" +
                                    std::to_string(causal) + ", max |diff| " + std::to_string(worst));
  }
}

// ---------------------------------------------------------------- softmax
void softmax_ref(const float* x, double* y, long n, long valid, float scale, const float* fm,
                 const std::uint8_t* um) {
  std::vector<double> z(static_cast<std::size_t>(n));
  double m = -INFINITY;
  bool nan = false;
  for (long j = 0; j < n; ++j) {
    double v = static_cast<double>(static_cast<float>(scale * x[j]));
    if (fm) v += fm[j];
    if (um && um[j]) v = -INFINITY;
    if (j >= valid) v = -INFINITY;
    z[j] = v;
    if (std::isnan(v)) nan = true;
    if (v > m) m = v;
  }
  if (nan || m == INFINITY) {
    for (long j = 0; j < n; ++j) y[j] = NAN;
    return;
  }
  if (m == -INFINITY) {
    for (long j = 0; j < n; ++j) y[j] = 0;
    return;
  }
  double s = 0;
  for (long j = 0; j < n; ++j) s += (z[j] == -INFINITY) ? 0 : std::exp(z[j] - m);
  for (long j = 0; j < n; ++j) y[j] = (z[j] == -INFINITY) ? 0 : std::exp(z[j] - m) / s;
}

void test_softmax_rows(const KernelTable& kt) {
  Rng rng(7);
  const long sizes[] = {1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 97, 127, 128, 257, 1000, 4099};
  double worst = 0;
  for (long n : sizes) {
    for (int mode = 0; mode < 7; ++mode) {
      std::vector<float> x(static_cast<std::size_t>(n)), y(static_cast<std::size_t>(n)), fm;
      std::vector<std::uint8_t> um;
      rng.fill(x);
      for (float& v : x) v *= 8.0f;
      float scale = mode == 1 ? 0.125f : 1.0f;
      long valid = n;
      if (mode == 2) {
        fm.resize(static_cast<std::size_t>(n));
        for (long j = 0; j < n; ++j) fm[j] = (j % 3 == 0) ? -INFINITY : rng.next();
      }
      if (mode == 3) {
        um.resize(static_cast<std::size_t>(n));
        for (long j = 0; j < n; ++j) um[j] = (j % 4 == 1) ? 1 : 0;
      }
      if (mode == 4) valid = n / 2 + 1;
      if (mode == 5) {
        for (long j = 0; j < n; ++j) x[j] = (j % 2) ? 1e4f : -1e4f;
      }
      if (mode == 6) {
        // No mask, so the plain path's exp sees -inf and differences far
        // below any float's exponent range (2^x of x < -150 is 0).
        for (long j = 0; j < n; ++j)
          if (j % 5 == 2) x[j] = -INFINITY;
          else if (j % 5 == 4) x[j] = -1e30f;
          else if (j % 7 == 3) x[j] = -200.0f;
      }
      std::vector<double> ref(static_cast<std::size_t>(n));
      const float* fmp = fm.empty() ? nullptr : fm.data();
      const std::uint8_t* ump = um.empty() ? nullptr : um.data();
      softmax_ref(x.data(), ref.data(), n, valid, scale, fmp, ump);
      kt.softmax_row(x.data(), y.data(), n, valid, scale, fmp, ump, nullptr, nullptr);
      double err = 0, sum = 0, ref_sum = 0;
      for (long j = 0; j < n; ++j) {
        err = std::fmax(err, std::fabs(y[j] - ref[j]));
        sum += y[j];
        ref_sum += ref[j];
      }
      worst = std::fmax(worst, err);
      check(err < 2e-6 && std::fabs(sum - ref_sum) < 4e-6,
            std::string(kt.name) + " softmax n=" + std::to_string(n) + " mode=" + std::to_string(mode) +
                " err=" + std::to_string(err) + " sum=" + std::to_string(sum));
      // In place gives the same bits.
      std::vector<float> inplace = x;
      kt.softmax_row(inplace.data(), inplace.data(), n, valid, scale, fmp, ump, nullptr, nullptr);
      check(std::memcmp(inplace.data(), y.data(), y.size() * sizeof(float)) == 0,
            std::string(kt.name) + " softmax in place n=" + std::to_string(n));
      // So does the streamed form, at any alignment of y, and in place.
      std::vector<float> stage(static_cast<std::size_t>(n)), buf(static_cast<std::size_t>(n + 32));
      bool streamed_same = true;
      for (long shift : {0L, 1L, 5L, 15L}) {
        float* ys = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(buf.data()) + 63) / 64 * 64) + shift;
        if (ys + n > buf.data() + buf.size()) ys = buf.data();
        kt.softmax_row_streamed(x.data(), ys, n, valid, scale, fmp, ump, nullptr, stage.data());
        kt.fence();
        streamed_same = streamed_same && std::memcmp(ys, y.data(), y.size() * sizeof(float)) == 0;
      }
      std::vector<float> inplace2 = x;
      kt.softmax_row_streamed(inplace2.data(), inplace2.data(), n, valid, scale, fmp, ump, nullptr, stage.data());
      kt.fence();
      streamed_same = streamed_same && std::memcmp(inplace2.data(), y.data(), y.size() * sizeof(float)) == 0;
      check(streamed_same, std::string(kt.name) + " softmax streamed n=" + std::to_string(n) + " mode=" + std::to_string(mode));
    }
  }
  // Edge rows.
  const float inf = std::numeric_limits<float>::infinity();
  for (long n : {1L, 5L, 16L, 33L}) {
    std::vector<float> x(static_cast<std::size_t>(n), -inf), y(static_cast<std::size_t>(n), 9.0f);
    kt.softmax_row(x.data(), y.data(), n, n, 1.0f, nullptr, nullptr, nullptr, nullptr);
    bool zeros = true;
    for (float v : y) zeros = zeros && v == 0.0f;
    check(zeros, std::string(kt.name) + " all -inf row -> zeros, n=" + std::to_string(n));

    std::vector<std::uint8_t> all(static_cast<std::size_t>(n), 1);
    std::vector<float> x2(static_cast<std::size_t>(n), 1.0f);
    kt.softmax_row(x2.data(), y.data(), n, n, 1.0f, nullptr, all.data(), nullptr, nullptr);
    zeros = true;
    for (float v : y) zeros = zeros && v == 0.0f;
    check(zeros, std::string(kt.name) + " all-masked row -> zeros, n=" + std::to_string(n));

    x2[static_cast<std::size_t>(n - 1)] = std::nanf("");
    kt.softmax_row(x2.data(), y.data(), n, n, 1.0f, nullptr, nullptr, nullptr, nullptr);
    bool nans = true;
    for (float v : y) nans = nans && std::isnan(v);
    check(nans, std::string(kt.name) + " NaN row -> NaN, n=" + std::to_string(n));
    std::vector<float> stage(static_cast<std::size_t>(n)), ys(static_cast<std::size_t>(n), 9.0f);
    kt.softmax_row_streamed(x2.data(), ys.data(), n, n, 1.0f, nullptr, nullptr, nullptr, stage.data());
    kt.softmax_row_streamed(x.data(), y.data(), n, n, 1.0f, nullptr, nullptr, nullptr, stage.data());
    kt.fence();
    nans = true;
    for (float v : ys) nans = nans && std::isnan(v);
    zeros = true;
    for (float v : y) zeros = zeros && v == 0.0f;
    check(nans && zeros, std::string(kt.name) + " streamed: NaN row -> NaN, all -inf row -> zeros, n=" + std::to_string(n));

    // NaN among otherwise -inf entries is still NaN.
    std::vector<float> x3(static_cast<std::size_t>(n), -inf);
    x3[0] = std::nanf("");
    kt.softmax_row(x3.data(), y.data(), n, n, 1.0f, nullptr, nullptr, nullptr, nullptr);
    nans = true;
    for (float v : y) nans = nans && std::isnan(v);
    check(nans, std::string(kt.name) + " NaN among -inf -> NaN, n=" + std::to_string(n));

    kt.softmax_row(x2.data(), y.data(), n, 0, 1.0f, nullptr, nullptr, nullptr, nullptr);
    zeros = true;
    for (float v : y) zeros = zeros && v == 0.0f;
    check(zeros, std::string(kt.name) + " valid=0 -> zeros, n=" + std::to_string(n));
  }
  std::printf("  %s softmax rows: max abs error %.2e\n", kt.name, worst);
}

// Runs of rows (softmax_rows, three rows' passes overlapped) give each row
// softmax_row's bits: awkward lengths, row strides wider than the rows, in
// place, scale 0, with and without prefetching, and rows of -inf, of NaN, of
// NaN among -inf and of +inf among the ordinary ones anywhere in the run.
void test_softmax_runs(const KernelTable& kt) {
  Rng rng(19);
  const float inf = std::numeric_limits<float>::infinity();
  long cases = 0;
  bool all_same = true;
  for (long n : {1L, 3L, 15L, 16L, 17L, 63L, 64L, 65L, 100L, 257L, 1000L}) {
    for (long rows : {1L, 2L, 3L, 4L, 7L}) {
      for (int variant = 0; variant < 4; ++variant) {
        const long ld = n + (variant == 1 ? 5 : 0);
        std::vector<float> x(static_cast<std::size_t>(rows * ld));
        rng.fill(x);
        for (float& v : x) v *= 6.0f;
        if (variant == 3) {  // special rows in the middle and at the ends
          for (long j = 0; j < n; ++j) x[static_cast<std::size_t>(j)] = -inf;
          if (rows > 1) x[static_cast<std::size_t>(ld + n / 2)] = std::nanf("");
          if (rows > 2) {
            for (long j = 0; j < n; ++j) x[static_cast<std::size_t>(2 * ld + j)] = -inf;
            x[static_cast<std::size_t>(2 * ld)] = std::nanf("");
          }
          if (rows > 3) x[static_cast<std::size_t>((rows - 1) * ld + n - 1)] = inf;
        }
        const float scale = variant == 2 ? 0.0f : 0.75f;
        std::vector<float> want(x.size(), 5.0f), got(x.size(), 5.0f);
        for (long r = 0; r < rows; ++r)
          kt.softmax_row(x.data() + r * ld, want.data() + r * ld, n, n, scale, nullptr, nullptr, nullptr, nullptr);
        std::vector<float> stage(static_cast<std::size_t>(2 * n));
        for (int how = 0; how < 3; ++how) {
          // 0: plain, 1: prefetching, 2: streamed through the stage.
          const bool prefetch = how == 1;
          float* st = how == 2 ? stage.data() : nullptr;
          std::fill(got.begin(), got.end(), 5.0f);
          kt.softmax_rows(x.data(), ld, got.data(), ld, rows, n, scale, prefetch, st);
          kt.fence();
          const bool same = std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0;
          std::vector<float> inplace = x;
          kt.softmax_rows(inplace.data(), ld, inplace.data(), ld, rows, n, scale, prefetch, st);
          kt.fence();
          bool same_inplace = true;
          for (long r = 0; r < rows; ++r)
            same_inplace = same_inplace && std::memcmp(inplace.data() + r * ld, want.data() + r * ld, static_cast<std::size_t>(n) * sizeof(float)) == 0;
          all_same = all_same && same && same_inplace;
          ++cases;
          if (!same || !same_inplace) {
            check(false, std::string(kt.name) + " softmax runs n=" + std::to_string(n) + " rows=" + std::to_string(rows) +
                             " variant=" + std::to_string(variant) + " how=" + std::to_string(how) +
                             (same ? " (in place)" : ""));
          }
        }
      }
    }
  }
  check(all_same, std::string(kt.name) + " softmax runs equal softmax_row bit for bit (" + std::to_string(cases) + " cases)");

  // Streamed through the stage into rows at every alignment (the aligned
  // middle streamed, the ends stored): the same bits, and nothing written
  // outside the rows.
  bool aligned_same = true;
  for (long n : {5L, 16L, 33L, 100L}) {
    const long rows = 3, ld = n + 7;
    std::vector<float> x(static_cast<std::size_t>(rows * ld)), stage(static_cast<std::size_t>(2 * n));
    rng.fill(x);
    std::vector<float> want(static_cast<std::size_t>(rows * n));
    for (long r = 0; r < rows; ++r)
      kt.softmax_row(x.data() + r * ld, want.data() + r * n, n, n, 1.0f, nullptr, nullptr, nullptr, nullptr);
    for (long shift = 0; shift < 16; ++shift) {
      std::vector<float> buf(static_cast<std::size_t>(rows * ld + 64), -3.0f);
      float* base = buf.data() + 16;
      float* y = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(base) + 63) / 64 * 64) + shift;
      kt.softmax_rows(x.data(), ld, y, ld, rows, n, 1.0f, false, stage.data());
      kt.fence();
      for (long r = 0; r < rows; ++r)
        aligned_same = aligned_same && std::memcmp(y + r * ld, want.data() + r * n, static_cast<std::size_t>(n) * sizeof(float)) == 0;
      for (long r = 0; r < rows; ++r)
        for (long j = n; j < ld && r * ld + j < rows * ld - (ld - n); ++j) aligned_same = aligned_same && y[r * ld + j] == -3.0f;
      aligned_same = aligned_same && y[-1] == -3.0f;
    }
  }
  check(aligned_same, std::string(kt.name) + " softmax runs streamed at every alignment: same bits, nothing outside the rows");
}

// Softmax over a rank-4 view: its shape, the strides of x, y and the mask.
SoftmaxArgs softmax_args4(const long (&shape)[4], const long (&xs)[4], const long (&ys)[4], const long (&ms)[4]) {
  SoftmaxArgs a;
  a.rank = 4;
  std::memcpy(a.shape, shape, sizeof shape);
  std::memcpy(a.x_strides, xs, sizeof xs);
  std::memcpy(a.y_strides, ys, sizeof ys);
  std::memcpy(a.m_strides, ms, sizeof ms);
  return a;
}

void test_softmax_driver(const KernelTable& kt) {
  // [B=2, H=3, R=5, C=37] with a [B, 1, 1, C] uint8 key mask, causal, strided rows.
  const long B = 2, H = 3, R = 5, C = 37, ld = 40;
  Rng rng(11);
  std::vector<float> x(static_cast<std::size_t>(B * H * R * ld)), y(static_cast<std::size_t>(B * H * R * C));
  rng.fill(x);
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(B * C), 0);
  for (long j = 30; j < C; ++j) mask[static_cast<std::size_t>(1 * C + j)] = 1;
  const long xs[4] = {H * R * ld, R * ld, ld, 1};
  const long ys[4] = {H * R * C, R * C, C, 1};
  SoftmaxArgs s = softmax_args4({B, H, R, C}, xs, ys, {C, 0, 0, 1});
  s.x = x.data();
  s.y = y.data();
  s.umask = mask.data();
  s.causal = true;
  s.scale = 0.5f;
  softmax(kt, s);
  double err = 0;
  for (long b = 0; b < B; ++b)
    for (long h = 0; h < H; ++h)
      for (long r = 0; r < R; ++r) {
        std::vector<double> ref(static_cast<std::size_t>(C));
        softmax_ref(x.data() + b * xs[0] + h * xs[1] + r * xs[2], ref.data(), C, r + C - R + 1, 0.5f,
                    nullptr, mask.data() + b * C);
        for (long c = 0; c < C; ++c)
          err = std::fmax(err, std::fabs(y[static_cast<std::size_t>(b * ys[0] + h * ys[1] + r * ys[2] + c)] - ref[c]));
      }
  check(err < 2e-6, std::string(kt.name) + " softmax driver (strided, broadcast mask, causal) err=" +
                        std::to_string(err));

  // Without mask or causal limit the rows go in runs (the rows of a run end
  // with the last leading axis): each equals softmax_row's, on 1 and 3
  // threads, rows in L2 (runs) and rows of 2048 (one at a time).
  for (long cols : {37L, 2048L, 3000L}) {
    const long rows_per = cols == 37 ? 5 : cols == 2048 ? 9 : 20;
    const long lx = cols + 3;
    std::vector<float> x2(static_cast<std::size_t>(B * H * rows_per * lx)), y1(static_cast<std::size_t>(B * H * rows_per * cols)),
        y3(y1.size()), want(y1.size());
    rng.fill(x2);
    SoftmaxArgs p = softmax_args4({B, H, rows_per, cols}, {H * rows_per * lx, rows_per * lx, lx, 1},
                                  {H * rows_per * cols, rows_per * cols, cols, 1}, {0, 0, 0, 0});
    p.x = x2.data();
    p.scale = 0.5f;
    for (long row = 0; row < B * H * rows_per; ++row)
      kt.softmax_row(x2.data() + row * lx, want.data() + row * cols, cols, cols, 0.5f, nullptr, nullptr, nullptr, nullptr);
    p.y = y1.data();
    softmax(kt, p);
    p.y = y3.data();
    on_threads(3, [&] { softmax(kt, p); });
    // As a new result: long rows written past the caches, the same bits.
    std::vector<float> ys(y1.size(), 7.0f);
    p.y = ys.data();
    p.stream_out = true;
    softmax(kt, p);
    check(std::memcmp(y1.data(), want.data(), want.size() * sizeof(float)) == 0 &&
              std::memcmp(y3.data(), want.data(), want.size() * sizeof(float)) == 0 &&
              std::memcmp(ys.data(), want.data(), want.size() * sizeof(float)) == 0,
          std::string(kt.name) + " softmax driver: plain rows equal softmax_row's on 1 and 3 threads and streamed, cols=" +
              std::to_string(cols));
  }
  // Short rows of a new result larger than any L2 (streamed as well: a
  // thread's share of it is at least half its L2), on 1 and 3 threads; rows
  // of 37 floats are off the vector alignment.
  for (long cols : {37L, 100L}) {
    const long rows = (6L << 20) / (4 * cols);
    std::vector<float> xl(static_cast<std::size_t>(rows * cols)), want(xl.size()), y1(xl.size(), 5.0f), y3(xl.size(), 6.0f);
    rng.fill(xl);
    for (long row = 0; row < rows; ++row)
      kt.softmax_row(xl.data() + row * cols, want.data() + row * cols, cols, cols, 0.5f, nullptr, nullptr, nullptr, nullptr);
    SoftmaxArgs p = softmax_args4({1, 1, rows, cols}, {rows * cols, rows * cols, cols, 1}, {rows * cols, rows * cols, cols, 1},
                                  {0, 0, 0, 0});
    p.x = xl.data();
    p.scale = 0.5f;
    p.stream_out = true;
    p.y = y1.data();
    softmax(kt, p);
    p.y = y3.data();
    on_threads(3, [&] { softmax(kt, p); });
    check(std::memcmp(y1.data(), want.data(), want.size() * sizeof(float)) == 0 &&
              std::memcmp(y3.data(), want.data(), want.size() * sizeof(float)) == 0,
          std::string(kt.name) + " softmax driver: short rows of a large new result equal softmax_row's on 1 and 3 threads, cols=" +
              std::to_string(cols));
  }
  // The masked, causal rows above as a new result (streamed one at a time when long enough).
  for (long cols : {37L, 1500L}) {
    std::vector<float> xm(static_cast<std::size_t>(B * H * R * cols)), ya(xm.size()), yb(xm.size(), 3.0f);
    rng.fill(xm);
    std::vector<std::uint8_t> km(static_cast<std::size_t>(B * cols), 0);
    for (long j = cols - 3; j < cols; ++j) km[static_cast<std::size_t>(cols + j)] = 1;
    const long stq[4] = {H * R * cols, R * cols, cols, 1};
    SoftmaxArgs q = softmax_args4({B, H, R, cols}, stq, stq, {cols, 0, 0, 1});
    q.x = xm.data();
    q.umask = km.data();
    q.causal = true;
    q.scale = 0.5f;
    q.y = ya.data();
    softmax(kt, q);
    q.y = yb.data();
    q.stream_out = true;
    softmax(kt, q);
    check(std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float)) == 0,
          std::string(kt.name) + " softmax driver: masked causal rows streamed give the same bits, cols=" + std::to_string(cols));
  }
}

// ---------------------------------------------------------------- GEMM
struct GemmCase {
  long m, n, k;
  bool ta, tb;
  long pad;  // extra leading-dimension padding
  float alpha, beta;
  long batch;
  bool bcast_b;
};

bool run_gemm_case(const KernelTable& kt, const GemmCase& c, double* worst) {
  const long lda = (c.ta ? c.m : c.k) + c.pad, ldb = (c.tb ? c.k : c.n) + c.pad, ldc = c.n + c.pad;
  const long a_rows = c.ta ? c.k : c.m, b_rows = c.tb ? c.n : c.k;
  const long sa = a_rows * lda + 3, sb = c.bcast_b ? 0 : b_rows * ldb + 5, sc = c.m * ldc + 1;
  std::vector<float> A(static_cast<std::size_t>(sa * c.batch + 8)), Bm(static_cast<std::size_t>((c.bcast_b ? b_rows * ldb : sb * c.batch) + 8)),
      C(static_cast<std::size_t>(sc * c.batch + 8));
  Rng rng(static_cast<std::uint64_t>(c.m * 131 + c.n * 17 + c.k));
  rng.fill(A);
  rng.fill(Bm);
  rng.fill(C);
  if (c.beta == 0.0f) {
    for (float& v : C) v = std::nanf("");  // beta == 0 must not read C
  }
  std::vector<float> C0 = C;
  GemmArgs g;
  g.m = c.m;
  g.n = c.n;
  g.k = c.k;
  g.trans_a = c.ta;
  g.trans_b = c.tb;
  g.alpha = c.alpha;
  g.beta = c.beta;
  g.a = A.data() + 1;
  g.lda = lda;
  g.stride_a = sa;
  g.b = Bm.data() + 2;
  g.ldb = ldb;
  g.stride_b = sb;
  g.c = C.data() + 1;
  g.ldc = ldc;
  g.stride_c = sc;
  g.batch = c.batch;
  sgemm(kt, g);
  bool ok = true;
  for (long t = 0; t < c.batch && ok; ++t) {
    const float* a = g.a + t * sa;
    const float* b = g.b + t * sb;
    for (long i = 0; i < c.m; ++i)
      for (long j = 0; j < c.n; ++j) {
        double acc = 0, mag = 0;
        for (long p = 0; p < c.k; ++p) {
          double av = c.ta ? a[p * lda + i] : a[i * lda + p];
          double bv = c.tb ? b[j * ldb + p] : b[p * ldb + j];
          acc += av * bv;
          mag += std::fabs(av * bv);
        }
        const std::size_t ci = static_cast<std::size_t>(1 + t * sc + i * ldc + j);
        double want = c.alpha * acc + (c.beta == 0.0f ? 0.0 : c.beta * static_cast<double>(C0[ci]));
        double tol = 4e-7 * (std::fabs(c.alpha) * mag + std::fabs(c.beta) + 1.0) * (2.0 + std::sqrt(static_cast<double>(c.k)));
        double err = std::fabs(C[ci] - want);
        *worst = std::fmax(*worst, err / tol);
        if (!(err <= tol)) ok = false;
      }
  }
  // Nothing outside C was written (padding columns and gaps between items).
  for (long t = 0; t < c.batch && ok; ++t)
    for (long i = 0; i < c.m; ++i)
      for (long j = c.n; j < ldc && (i < c.m - 1 || j < c.n); ++j) {
        const std::size_t ci = static_cast<std::size_t>(1 + t * sc + i * ldc + j);
        if (std::memcmp(&C[ci], &C0[ci], sizeof(float)) != 0) ok = false;
      }
  if (std::memcmp(&C[0], &C0[0], sizeof(float)) != 0) ok = false;
  return ok;
}

void test_gemm(const KernelTable& kt) {
  std::vector<long> dims = {1, 2, 3, 5, 7, 13, 14, 15, 16, 17, 31, 32, 33, 47, 64, 97, 131};
  if (!g_quick) {
    dims.push_back(193);
    dims.push_back(257);
    dims.push_back(300);
  }
  double worst = 0;
  int cases = 0;
  Rng pick(3);
  for (long m : dims)
    for (long n : dims) {
      // A sample of k per (m, n), plus all transposes on a rotating basis.
      long k = dims[static_cast<std::size_t>((m * 7 + n * 3) % static_cast<long>(dims.size()))];
      int tr = static_cast<int>((m + n) % 4);
      GemmCase c{m, n, k, (tr & 1) != 0, (tr & 2) != 0, (m + n) % 3, 1.0f, 0.0f, 1, false};
      if ((m * n) % 5 == 0) {
        c.alpha = -0.5f;
        c.beta = 0.75f;
      }
      bool ok = run_gemm_case(kt, c, &worst);
      ++cases;
      check(ok, std::string(kt.name) + " gemm m=" + std::to_string(m) + " n=" + std::to_string(n) +
                    " k=" + std::to_string(k) + " ta=" + std::to_string(c.ta) + " tb=" + std::to_string(c.tb));
    }
  // Larger and batched shapes, every transpose pair.
  std::vector<GemmCase> big = {
      {300, 300, 300, false, false, 0, 1.0f, 0.0f, 1, false},
      {257, 131, 600, false, true, 3, 2.0f, 1.0f, 1, false},
      {131, 257, 513, true, false, 1, 1.0f, 0.5f, 1, false},
      {97, 193, 1031, true, true, 2, -1.0f, 0.0f, 1, false},
      // Shallow products: the A block grows to keep its L2 share (a row
      // count that is not a multiple of the tile's).
      {1030, 70, 1, false, false, 0, 1.0f, 0.0f, 1, false},
      {1100, 40, 3, true, false, 1, 1.0f, 0.0f, 1, false},
      {64, 64, 64, false, true, 0, 0.125f, 0.0f, 7, false},
      {33, 17, 65, false, false, 5, 1.0f, 1.0f, 5, true},
      {1, 300, 257, false, true, 0, 1.0f, 0.0f, 3, false},
      {300, 1, 257, false, false, 0, 1.0f, 0.0f, 2, true},
      {5, 700, 3, true, false, 0, 1.0f, -1.0f, 1, false},
      // A few rows against B read along its rows, in chunks of its columns
      // (more than one chunk, a partial last vector).
      {4, 2100, 300, false, false, 1, 1.0f, 0.5f, 1, false},
      {1, 1500, 40, true, false, 2, -2.0f, 0.0f, 2, false},
      {3, 1031, 1029, false, false, 0, 1.0f, 1.0f, 1, false},
      {1000, 1000, 2, false, false, 0, 1.0f, 0.0f, 1, false},
      {2, 3, 0, false, false, 0, 1.0f, 0.5f, 1, false},
      {2, 3, 4, false, false, 0, 0.0f, 2.0f, 1, false},
  };
  if (g_quick) big.resize(8);
  for (const GemmCase& c : big) {
    bool ok = run_gemm_case(kt, c, &worst);
    ++cases;
    check(ok, std::string(kt.name) + " gemm big m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) +
                  " k=" + std::to_string(c.k) + " batch=" + std::to_string(c.batch));
  }
  std::printf("  %s gemm: %d cases, worst error %.3f of tolerance\n", kt.name, cases, worst);

  // The unpacked product's rows computed 1 to 4 at a time have the bits they
  // have inside a larger small product, with alpha, beta, a bias and an
  // activation: in the row form, rows streamed along B's rows against B
  // walked a column block at a time; in the dot form (B transposed,
  // contiguous in k), any rows of A per pass over B.
  {
    const long m = 9, n = 150, k = 300;  // rows wider than a column block
    std::vector<float> A(static_cast<std::size_t>(m * k)), Bm(static_cast<std::size_t>(k * n)),
        bias(static_cast<std::size_t>(n)), C0(static_cast<std::size_t>(m * n));
    Rng rng(19);
    rng.fill(A);
    rng.fill(Bm);
    rng.fill(bias);
    rng.fill(C0);
    for (const bool dot : {false, true}) {
      auto small = [&](long i0, long rows, std::vector<float>& C) {
        SmallGemm g{dot, rows, n, k, A.data() + i0 * k, k, 1, Bm.data(), dot ? 1 : n, dot ? k : 1, C.data() + i0 * n,
                    n, 0.5f, 0.25f, bias.data(), kActGelu};
        kt.gemm_small(g, 0, rows, 0, n);
      };
      std::vector<float> whole = C0;
      small(0, m, whole);
      bool same = true;
      for (long rows = 1; rows <= 4; ++rows) {
        std::vector<float> part = C0;
        for (long i0 = 0; i0 + rows <= m; i0 += rows) small(i0, rows, part);
        const long done = m / rows * rows;
        same = same && std::memcmp(whole.data(), part.data(), static_cast<std::size_t>(done * n) * sizeof(float)) == 0;
      }
      check(same, std::string(kt.name) + (dot ? " unpacked dot form" : " unpacked row form") +
                      ": rows 1 to 4 at a time equal the same rows of a larger product bitwise");
    }
  }
}

// The two micro-kernel variants (with and without panel prefetch, chosen
// per CPU family) give bitwise the same tiles, for every row count, partial
// widths, beta and bias.
void test_micro_variants(const KernelTable& kt) {
  bool same = true;
  int cases = 0;
  for (long kc : {1L, 5L, 37L, 300L}) {
    std::vector<float> a(static_cast<std::size_t>(kt.mr * kc)), b(static_cast<std::size_t>(kt.nr * kc)),
        bias(static_cast<std::size_t>(kt.nr));
    Rng rng(static_cast<std::uint64_t>(kc));
    rng.fill(a);
    rng.fill(b);
    rng.fill(bias);
    for (int m = 1; m <= kt.mr; ++m)
      for (int n : {1, kt.vector_width, kt.nr - 1, kt.nr}) {
        if (n < 1) continue;
        const long ldc = kt.nr + 3;
        std::vector<float> c1(static_cast<std::size_t>(kt.mr * ldc)), c2;
        rng.fill(c1);
        c2 = c1;
        const float beta = (m + n) % 2 ? 0.0f : 0.5f;
        const float* bp = m % 3 == 0 ? bias.data() : nullptr;
        std::vector<float> c3 = c1;
        kt.gemm_micro(kc, a.data(), b.data(), c1.data(), ldc, 1.25f, beta, m, n, bp, kActNone);
        kt.gemm_micro_prefetch(kc, a.data(), b.data(), c2.data(), ldc, 1.25f, beta, m, n, bp, kActNone);
        kt.gemm_micro_stream(kc, a.data(), b.data(), c3.data(), ldc, 1.25f, beta, m, n, bp, kActNone);
        same = same && std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0 &&
               std::memcmp(c1.data(), c3.data(), c1.size() * sizeof(float)) == 0;
        ++cases;
      }
  }
  check(same, std::string(kt.name) + " micro-kernel without, with near and with streaming panel prefetch agree bitwise (" +
                  std::to_string(cases) + " tiles)");

  // The narrow tile reads a compact A panel (m floats a step) and gives the
  // bits gemm_micro gives the same rows from an mr-wide panel: partial
  // widths, beta, bias, activations, depths of 1 to past a set multiple.
  bool narrow_same = true;
  int narrow_cases = 0;
  for (long kc : {1L, 3L, 6L, 37L, 513L}) {
    std::vector<float> wide(static_cast<std::size_t>(kt.mr * kc)), b(static_cast<std::size_t>(kt.nr * kc)),
        bias(static_cast<std::size_t>(kt.nr));
    Rng rng(static_cast<std::uint64_t>(kc) + 5);
    rng.fill(wide);
    rng.fill(b);
    rng.fill(bias);
    for (int m = 1; m <= kt.narrow_rows; ++m) {
      std::vector<float> compact(static_cast<std::size_t>(m * kc));
      for (long p = 0; p < kc; ++p)
        for (int r = 0; r < m; ++r) compact[static_cast<std::size_t>(p * m + r)] = wide[static_cast<std::size_t>(p * kt.mr + r)];
      for (int n : {1, kt.vector_width - 1, kt.nr - 1, kt.nr}) {
        if (n < 1) continue;
        const int variant = (m + n + static_cast<int>(kc)) % 4;
        const float beta = variant == 1 ? 0.5f : 0.0f;
        const float* bp = variant >= 2 ? bias.data() : nullptr;
        const int act = variant == 3 ? kActGelu : kActNone;
        const long ldc = kt.nr + 3;
        std::vector<float> want(static_cast<std::size_t>(m * ldc));
        rng.fill(want);
        std::vector<float> got = want;
        kt.gemm_micro(kc, wide.data(), b.data(), want.data(), ldc, 0.75f, beta, m, n, bp, act);
        kt.gemm_micro_narrow(kc, compact.data(), b.data(), got.data(), ldc, 0.75f, beta, m, n, bp, act);
        narrow_same = narrow_same && std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0;
        ++narrow_cases;
      }
    }
  }
  check(narrow_cases > 0 && narrow_same, std::string(kt.name) + " narrow tiles from compact A panels agree bitwise with the micro-kernel (" +
                                             std::to_string(narrow_cases) + " tiles)");

  // A pair of tiles (gemm_micro_pair, in chunks of k) gives each tile the bits
  // gemm_micro gives it alone: every pair of row counts, depths shorter and
  // longer than a chunk and not a multiple of it, partial widths, beta, bias,
  // an activation, at each prefetch level.
  bool pairs_same = true;
  int pairs = 0;
  for (long kc : {1L, 7L, 97L, 300L}) {
    std::vector<float> a0(static_cast<std::size_t>(kt.mr * kc)), a1(a0.size()), b(static_cast<std::size_t>(kt.nr * kc)),
        bias(static_cast<std::size_t>(kt.nr));
    Rng rng(static_cast<std::uint64_t>(kc) + 11);
    rng.fill(a0);
    rng.fill(a1);
    rng.fill(b);
    rng.fill(bias);
    const long ldc = kt.nr + 5;
    for (int m0 = 1; m0 <= kt.mr; ++m0)
      for (int m1 = 1; m1 <= kt.mr; ++m1)
        for (int n : {kt.nr - 3, kt.nr}) {
          if (n < 1) continue;
          const int variant = (m0 * 3 + m1 + n) % 4;
          const float beta = variant == 1 ? 0.5f : 0.0f;
          const float* bp = variant >= 2 ? bias.data() : nullptr;
          const int act = variant == 3 ? kActGelu : kActNone;
          const int prefetch = (m0 + m1 + n) % 3;  // none, near, streaming
          std::vector<float> c(static_cast<std::size_t>(2 * kt.mr * ldc));
          rng.fill(c);
          std::vector<float> want = c;
          float* c0 = c.data();
          float* c1 = c.data() + kt.mr * ldc;
          const auto alone = prefetch == 2 ? kt.gemm_micro_stream : prefetch == 1 ? kt.gemm_micro_prefetch : kt.gemm_micro;
          alone(kc, a0.data(), b.data(), want.data(), ldc, 1.0f, beta, m0, n, bp, act);
          kt.gemm_micro(kc, a1.data(), b.data(), want.data() + kt.mr * ldc, ldc, 1.0f, beta, m1, n, bp, act);
          kt.gemm_micro_pair(kc, a0.data(), m0, a1.data(), m1, b.data(), c0, c1, ldc, 1.0f, beta, n, bp, act, prefetch);
          pairs_same = pairs_same && std::memcmp(c.data(), want.data(), c.size() * sizeof(float)) == 0;
          ++pairs;
        }
  }
  check(pairs_same, std::string(kt.name) + " tile pairs agree bitwise with their tiles run alone (" +
                        std::to_string(pairs) + " pairs)");
}

// Bitwise equality across thread counts.
void test_threads(const KernelTable& kt) {
  const int before = ThreadPool::global().size();
  struct Shape {
    long m, n, k;
    bool ta, tb;
    long batch;
  };
  // Row counts with a short last tile (16, 30, 60, 117 for 14-row tiles)
  // are tiled as balanced pairs; the thread split must keep those whole. 1000
  // rows: runs of row tiles shrinking from a whole A block to a few tiles,
  // whichever thread takes them.
  const Shape shapes[] = {{301, 257, 263, false, false, 1}, {512, 96, 300, false, true, 1},
                          {3, 2000, 500, false, false, 1},  {67, 61, 59, true, false, 12},
                          {200, 700, 64, true, true, 3},    {16, 700, 300, false, true, 1},
                          {30, 333, 129, false, false, 1},  {60, 200, 700, false, true, 1},
                          {117, 90, 1100, false, false, 1}, {1000, 300, 700, false, true, 1},
                          {20, 1536, 512, false, true, 1},  {15, 640, 384, false, false, 1}};
  for (const Shape& s : shapes) {
    std::vector<float> A(static_cast<std::size_t>(s.m * s.k * s.batch)), Bm(static_cast<std::size_t>(s.k * s.n * s.batch));
    Rng rng(static_cast<std::uint64_t>(s.m + s.n));
    rng.fill(A);
    rng.fill(Bm);
    auto args = [&](std::vector<float>& C) {
      GemmArgs g;
      g.m = s.m;
      g.n = s.n;
      g.k = s.k;
      g.trans_a = s.ta;
      g.trans_b = s.tb;
      g.a = A.data();
      g.lda = s.ta ? s.m : s.k;
      g.stride_a = s.m * s.k;
      g.b = Bm.data();
      g.ldb = s.tb ? s.k : s.n;
      g.stride_b = s.k * s.n;
      g.c = C.data();
      g.ldc = s.n;
      g.stride_c = s.m * s.n;
      g.batch = s.batch;
      return g;
    };
    std::vector<std::vector<float>> outs, packed_outs;
    // B packed beforehand (the shapes with batch 1): the same bits on any
    // thread count too (not always those of sgemm, which takes the unpacked
    // kernel for few rows).
    std::unique_ptr<PackedMatrix> packed;
    if (s.batch == 1) packed = pack_matrix(kt, Bm.data(), s.tb ? s.k : s.n, s.tb, s.k, s.n);
    for (int threads : {1, 2, 3, 4}) {
      ThreadPool::global().resize(threads);
      std::vector<float> C(static_cast<std::size_t>(s.m * s.n * s.batch), 0.0f);
      sgemm(kt, args(C));
      outs.push_back(C);
      if (packed) {
        std::vector<float> P(C.size(), 0.0f);
        sgemm_with_packed(args(P), *packed);
        packed_outs.push_back(P);
      }
    }
    bool same = true;
    for (std::size_t i = 1; i < outs.size(); ++i)
      same = same && std::memcmp(outs[0].data(), outs[i].data(), outs[0].size() * sizeof(float)) == 0;
    for (std::size_t i = 1; i < packed_outs.size(); ++i)
      same = same && std::memcmp(packed_outs[0].data(), packed_outs[i].data(), packed_outs[0].size() * sizeof(float)) == 0;
    check(same, std::string(kt.name) + " gemm (and with B packed beforehand) bitwise equal for 1..4 threads m=" +
                    std::to_string(s.m) + " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k));
    // The serial entry point agrees too.
    std::vector<float> C(static_cast<std::size_t>(s.m * s.n * s.batch), 0.0f);
    sgemm_serial(kt, args(C));
    check(std::memcmp(outs[0].data(), C.data(), C.size() * sizeof(float)) == 0,
          std::string(kt.name) + " sgemm_serial equals sgemm m=" + std::to_string(s.m));
  }
  ThreadPool::global().resize(before);
}

// A new result (stream_out) larger than half of any L2, its tiles written past
// the caches where the product allows (one depth block, beta 0, no
// activation, C's rows 64-byte aligned): the same bits as ordinary stores on
// 1 and 3 threads, nothing written past C; with B unpacked, packed
// beforehand, batched, and where streaming does not apply (ldc off the
// alignment, deeper than a block, beta 1).
void test_gemm_stream(const KernelTable& kt) {
  struct Case {
    long m, n, k, batch;
    bool bias, packed;
    float alpha, beta;
  };
  const Case cases[] = {
      {1531, 1024, 24, 1, false, false, 1.0f, 0.0f}, {1531, 1040, 24, 1, true, false, 0.5f, 0.0f},
      {700, 1024, 40, 3, false, false, 1.0f, 0.0f},  {1531, 1024, 40, 1, true, true, 1.0f, 0.0f},
      {1500, 1000, 24, 1, false, false, 1.0f, 0.0f}, {64, 1024, 1500, 1, false, true, 1.0f, 0.0f},
      {1531, 1024, 24, 1, false, false, 1.0f, 1.0f},
  };
  const int before = ThreadPool::global().size();
  Rng rng(77);
  for (const Case& c : cases) {
    std::vector<float> A(static_cast<std::size_t>(c.m * c.k * c.batch)), Bm(static_cast<std::size_t>(c.k * c.n * c.batch)),
        bias(static_cast<std::size_t>(c.n));
    rng.fill(A);
    rng.fill(Bm);
    rng.fill(bias);
    const std::size_t size = static_cast<std::size_t>(c.m * c.n * c.batch);
    std::unique_ptr<PackedMatrix> packed;
    if (c.packed) packed = pack_matrix(kt, Bm.data(), c.n, false, c.k, c.n);
    // Into a 64-byte aligned C with guard floats after it, all 0.25 first
    // (beta 1 reads it).
    auto run = [&](bool stream, int threads, std::vector<float>& buf) {
      buf.assign(size + 64, 0.25f);
      float* C = at_skew(buf, 0);
      GemmArgs g;
      g.m = c.m;
      g.n = c.n;
      g.k = c.k;
      g.a = A.data();
      g.lda = c.k;
      g.stride_a = c.m * c.k;
      g.b = Bm.data();
      g.ldb = c.n;
      g.stride_b = c.k * c.n;
      g.c = C;
      g.ldc = c.n;
      g.stride_c = c.m * c.n;
      g.batch = c.batch;
      g.alpha = c.alpha;
      g.beta = c.beta;
      g.bias = c.bias ? bias.data() : nullptr;
      g.stream_out = stream;
      ThreadPool::global().resize(threads);
      if (packed) {
        sgemm_with_packed(g, *packed);
      } else {
        sgemm(kt, g);
      }
      long outside = 0;
      for (const float* q = buf.data(); q < buf.data() + buf.size(); ++q)
        if (q < C || q >= C + size) outside += *q != 0.25f;
      return std::make_pair(C, outside);
    };
    std::vector<float> want_buf, got_buf;
    const float* want = run(false, 1, want_buf).first;
    std::vector<float> ref(want, want + size);
    bool same = true;
    for (int threads : {1, 3}) {
      const auto [got, outside] = run(true, threads, got_buf);
      same = same && outside == 0 && std::memcmp(got, ref.data(), size * sizeof(float)) == 0;
    }
    check(same, std::string(kt.name) + " gemm new result (stream_out) equals ordinary stores on 1 and 3 threads m=" +
                    std::to_string(c.m) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k) +
                    " batch=" + std::to_string(c.batch) + (c.packed ? " packed" : "") + " beta=" + std::to_string(c.beta));
  }
  ThreadPool::global().resize(before);
}

// Subnormals are zeros inside every kernel, on every thread that runs it, and
// the caller's floating-point control word is the same afterwards: whether or
// not the caller flushes already.
void test_fp_env(const KernelTable& kt) {
  if (kFlushBits == 0) return;  // no control register on this architecture
  const int before_threads = ThreadPool::global().size();
  const std::uint64_t original = fp_control();
  auto is_subnormal = [](float x) { return x != 0.0f && std::fabs(x) < std::numeric_limits<float>::min(); };
  for (const bool caller_flushes : {false, true}) {
    const std::uint64_t caller = caller_flushes ? (original | kFlushBits) : (original & ~kFlushBits);
    for (int threads : {1, 2, 3}) {
      ThreadPool::global().resize(threads);
      const std::string tag = std::string(kt.name) + " threads=" + std::to_string(threads) +
                              (caller_flushes ? " (caller flushes)" : "");
      set_fp_control(caller);
      // GEMM: every product is 1e-20 * 1e-20 = 1e-40, a subnormal: zeros. A
      // subnormal operand reads as zero too (1e-39 * 1).
      const long m = 203, n = 190, k = 70;  // large enough for the pool
      std::vector<float> A(static_cast<std::size_t>(m * k), 1e-20f), Bm(static_cast<std::size_t>(k * n), 1e-20f);
      std::vector<float> C(static_cast<std::size_t>(m * n), 1.0f);
      A[5] = 1e-39f;  // subnormal
      GemmArgs g;
      g.m = m;
      g.n = n;
      g.k = k;
      g.a = A.data();
      g.lda = k;
      g.b = Bm.data();
      g.ldb = n;
      g.c = C.data();
      g.ldc = n;
      sgemm(kt, g);
      bool zeros = true;
      for (float c : C) zeros = zeros && c == 0.0f;
      const bool gemm_env = fp_control() == caller;
      // Softmax of peaky rows: many exp results below 2^-126 become zeros.
      const long rows = 64, cols = 333;
      std::vector<float> x(static_cast<std::size_t>(rows * cols)), y(x.size());
      Rng rng(77);
      for (float& v : x) v = 30.0f * rng.next();
      SoftmaxArgs s;
      s.rank = 2;
      s.shape[0] = rows;
      s.shape[1] = cols;
      s.x = x.data();
      s.x_strides[0] = cols;
      s.x_strides[1] = 1;
      s.y = y.data();
      s.y_strides[0] = cols;
      s.y_strides[1] = 1;
      s.scale = 4.0f;
      softmax(kt, s);
      bool no_subnormal = true;
      long flushed = 0;
      for (long i = 0; i < rows * cols; ++i) {
        no_subnormal = no_subnormal && !is_subnormal(y[static_cast<std::size_t>(i)]);
        // exp(z) with z in (-87.3, -103.3] would be subnormal: it is 0.
        const double z = 4.0 * (x[static_cast<std::size_t>(i)] - *std::max_element(x.begin() + (i / cols) * cols, x.begin() + (i / cols + 1) * cols));
        if (z < -88.0 && z > -100.0) flushed += y[static_cast<std::size_t>(i)] == 0.0f;
      }
      const bool softmax_env = fp_control() == caller;
      set_fp_control(original);
      check(zeros, tag + ": gemm results that would be subnormal are zeros");
      check(no_subnormal && flushed > 0, tag + ": softmax gives no subnormals (" + std::to_string(flushed) + " flushed)");
      check(gemm_env && softmax_env, tag + ": the caller's floating-point control word is unchanged");
    }
  }
  // The pool's workers flush while they run a job (whatever the control word
  // they were started with), and only then.
  for (const bool started_flushing : {false, true}) {
    set_fp_control(started_flushing ? (original | kFlushBits) : (original & ~kFlushBits));
    ThreadPool::global().resize(1);
    ThreadPool::global().resize(3);  // workers inherit this thread's control word
    set_fp_control(original & ~kFlushBits);
    std::vector<int> flushing(256, 0);
    std::vector<std::thread::id> who(256);
    {
      const FlushDenormals fp;  // as a kernel entry point holds
      parallel_for(256, [&](long t) {
        flushing[static_cast<std::size_t>(t)] = flushing_denormals() ? 1 : 0;
        who[static_cast<std::size_t>(t)] = std::this_thread::get_id();
        volatile double spin = 0;
        for (int i = 0; i < 20000; ++i) spin = spin + 1.0;
      });
    }
    const bool caller_restored = !flushing_denormals();
    set_fp_control(original);
    long threads_seen = 0;
    for (std::size_t i = 0; i < who.size(); ++i)
      threads_seen += std::find(who.begin(), who.begin() + static_cast<long>(i), who[i]) == who.begin() + static_cast<long>(i);
    long flushed = 0;
    for (int f : flushing) flushed += f;
    check(flushed == 256 && caller_restored && threads_seen >= 2,
          std::string("pool workers flush during a job (started ") + (started_flushing ? "flushing" : "not flushing") +
              "): " + std::to_string(flushed) + " of 256 tasks on " + std::to_string(threads_seen) + " threads");
  }
  ThreadPool::global().resize(before_threads);
}

// ---------------------------------------------------------------- activations
double gelu_ref(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double gelu_tanh_ref(double x) {
  const double y = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  return x / (1.0 + std::exp(-2.0 * y));
}

// Dense sweeps: worst ulp against float64 references. erf over [-6, 6];
// GELU over [-13, 14] (below -13.2, x Phi(x) is subnormal); GELU's tanh form
// over [-1, 10], and in [-20, -1] the relative error divided by the
// function's condition number |x f'(x) / f(x)| (about |x| (1 + 0.13 x^2)
// there: a 1-ulp change of x moves the result that many ulp, and rounding
// sqrt(2 / pi) x (1 + 0.044715 x^2) to float32 does as much).
void test_erf_gelu(const KernelTable& kt) {
  auto sweep = [](double lo, double hi, double step, std::initializer_list<float> extra) {
    std::vector<float> xs;
    for (double x = lo; x <= hi; x += step) xs.push_back(static_cast<float>(x));
    for (float x : extra) xs.push_back(x);
    return xs;
  };
  const float inf = std::numeric_limits<float>::infinity();
  {
    std::vector<float> xs = sweep(-6.0, 6.0, 1.1e-5, {0.0f, -0.0f, 1e-30f, -1e-38f, 0.4999999f, 0.5f, 0.5000001f,
                                                      3.9f, 3.92f, 10.0f, 10.1f, 11.0f, -30.0f});
    std::vector<float> y(xs.size());
    kt.erf_array(xs.data(), y.data(), static_cast<long>(xs.size()));
    float wx = 0;
    const double worst = worst_ulp(xs, y, [](double x) { return std::erf(x); }, &wx);
    check(worst <= 4.0, std::string(kt.name) + " erf max error " + std::to_string(worst) + " ulp at x=" +
                            std::to_string(wx) + " (want <= 4)");
    std::printf("  %s erf: max %.3f ulp over %zu points\n", kt.name, worst, xs.size());
    std::vector<float> sp = {inf, -inf, std::nanf("")}, ys(3);
    kt.erf_array(sp.data(), ys.data(), 3);
    check(ys[0] == 1.0f && ys[1] == -1.0f && std::isnan(ys[2]), std::string(kt.name) + " erf(inf, -inf, nan)");
  }
  {
    std::vector<float> xs = sweep(-13.0, 14.0, 2.3e-5, {0.0f, -0.0f, 1e-30f, -1e-30f, 14.2f, 20.0f});
    std::vector<float> y(xs.size());
    kt.activation_array(kActGelu, xs.data(), y.data(), static_cast<long>(xs.size()));
    float wx = 0;
    const double worst = worst_ulp(xs, y, gelu_ref, &wx);
    check(worst <= 8.0, std::string(kt.name) + " gelu max error " + std::to_string(worst) + " ulp at x=" +
                            std::to_string(wx) + " (want <= 8)");
    std::vector<float> tail = sweep(-15.0, -13.0, 1e-4, {}), yt(tail.size());
    kt.activation_array(kActGelu, tail.data(), yt.data(), static_cast<long>(tail.size()));
    double sub = 0;
    for (std::size_t i = 0; i < tail.size(); ++i) sub = std::fmax(sub, std::fabs(yt[i] - gelu_ref(tail[i])));
    check(sub < 1e-43, std::string(kt.name) + " gelu subnormal tail error " + std::to_string(sub));
    std::printf("  %s gelu: max %.3f ulp over %zu points in [-13, 14]\n", kt.name, worst, xs.size());
    std::vector<float> sp = {inf, -inf, std::nanf(""), -20.0f, -100.0f}, ys(5);
    kt.activation_array(kActGelu, sp.data(), ys.data(), 5);
    check(ys[0] == inf && ys[1] == 0.0f && std::signbit(ys[1]) && std::isnan(ys[2]) && ys[3] == 0.0f && ys[4] == 0.0f,
          std::string(kt.name) + " gelu(inf, -inf, nan, -20, -100) = (inf, -0, nan, -0, -0)");
  }
  {
    std::vector<float> xs = sweep(-1.0, 10.0, 1.3e-5, {0.0f, -0.0f, 1e-30f, -1e-30f, inf});
    std::vector<float> y(xs.size());
    kt.activation_array(kActGeluTanh, xs.data(), y.data(), static_cast<long>(xs.size()));
    float wx = 0;
    const double worst = worst_ulp(xs, y, gelu_tanh_ref, &wx);
    check(worst <= 6.0, std::string(kt.name) + " gelu (tanh) max error " + std::to_string(worst) + " ulp at x=" +
                            std::to_string(wx) + " (want <= 6)");
    std::vector<float> tail = sweep(-20.0, -1.0, 1e-4, {}), yt(tail.size());
    kt.activation_array(kActGeluTanh, tail.data(), yt.data(), static_cast<long>(tail.size()));
    double scaled = 0;
    for (std::size_t i = 0; i < tail.size(); ++i) {
      const double x = tail[i], want = gelu_tanh_ref(x);
      if (std::fabs(want) < 1e-37) continue;
      const double cond = std::fabs(x) * (1 + 0.134145 * x * x) + 1;
      scaled = std::fmax(scaled, ulp_distance(yt[i], want) / cond);
    }
    check(scaled <= 2.0, std::string(kt.name) + " gelu (tanh) tail error " + std::to_string(scaled) +
                             " ulp per unit of condition number");
    float ninf = -inf, out = 1;
    kt.activation_array(kActGeluTanh, &ninf, &out, 1);
    check(out == 0.0f, std::string(kt.name) + " gelu (tanh) of -inf is 0");
    std::printf("  %s gelu (tanh): max %.3f ulp in [-1, 10], %.3f ulp x condition number below\n", kt.name, worst, scaled);
  }
  {
    std::vector<float> xs = {-2.0f, -0.0f, 0.0f, 3.5f, -inf, inf, std::nanf("")}, ys(xs.size());
    kt.activation_array(kActRelu, xs.data(), ys.data(), static_cast<long>(xs.size()));
    check(ys[0] == 0 && ys[1] == 0 && ys[2] == 0 && ys[3] == 3.5f && ys[4] == 0 && ys[5] == inf && std::isnan(ys[6]),
          std::string(kt.name) + " relu");
  }
  // Every length up to a few vectors, in place and not, for each kind.
  for (int act = kActRelu; act < kActivationCount; ++act)
    for (long n = 0; n <= 3 * kt.vector_width + 1; ++n) {
      std::vector<float> a(static_cast<std::size_t>(n) + 1), b(static_cast<std::size_t>(n) + 1, -7.0f);
      for (long i = 0; i <= n; ++i) a[static_cast<std::size_t>(i)] = 0.37f * static_cast<float>(i) - 2.0f;
      kt.activation_array(act, a.data(), b.data(), n);
      std::vector<float> c = a;
      kt.activation_array(act, c.data(), c.data(), n);
      bool ok = b[static_cast<std::size_t>(n)] == -7.0f && c[static_cast<std::size_t>(n)] == a[static_cast<std::size_t>(n)];
      for (long i = 0; i < n; ++i) {
        const double x = a[static_cast<std::size_t>(i)];
        const double want = act == kActRelu ? std::fmax(x, 0.0) : act == kActGelu ? gelu_ref(x) : gelu_tanh_ref(x);
        ok = ok && std::fabs(b[static_cast<std::size_t>(i)] - want) <= 1e-6 * (1 + std::fabs(want)) &&
             std::memcmp(&b[static_cast<std::size_t>(i)], &c[static_cast<std::size_t>(i)], 4) == 0;
      }
      // Streamed at three alignments of y: the same bits, nothing written outside.
      std::vector<float> buf(static_cast<std::size_t>(n) + 40);
      for (long skew : {0L, 1L, 5L}) {
        std::fill(buf.begin(), buf.end(), -7.0f);
        float* ys = at_skew(buf, skew);
        kt.activation_array_streamed(act, a.data(), ys, n);
        kt.fence();
        long outside = 0;
        for (const float* q = buf.data(); q < buf.data() + buf.size(); ++q)
          if (q < ys || q >= ys + n) outside += *q != -7.0f;
        ok = ok && outside == 0 && std::memcmp(ys, b.data(), static_cast<std::size_t>(n) * 4) == 0;
      }
      check(ok, std::string(kt.name) + " activation " + std::to_string(act) + " tail n=" + std::to_string(n));
    }
}

// Products with B packed beforehand (a layer's weights; on amx, the tile
// unit's three-part bfloat16 arithmetic) against float64: shapes that leave
// partial 32 x 32 blocks and k steps, magnitudes spread over 2^-40 .. 2^40
// in rows and columns, bias and activations, beta 1 (C accumulated), the
// same bits on 1 and 3 threads, and infinities and NaNs propagated.
void test_packed_products(const KernelTable& kt) {
  struct Case {
    long m, n, k;
    float beta;
    bool bias, spread;
    int act;
  };
  const Case cases[] = {{32, 32, 32, 0.0f, false, false, kActNone},   {33, 65, 31, 0.0f, true, false, kActNone},
                        {64, 96, 512, 0.0f, true, true, kActNone},    {97, 50, 1100, 1.0f, false, false, kActNone},
                        {40, 70, 77, 0.0f, true, false, kActGelu},    {129, 33, 64, 0.0f, true, false, kActRelu},
                        {300, 130, 2100, 0.0f, true, true, kActNone}, {45, 31, 3, 1.0f, false, true, kActNone},
                        // Few rows against weights of a quarter of L2 or more: a full
                        // tile and the rest as one pair (14 + r on 14-row tiles).
                        {16, 1536, 512, 0.0f, true, true, kActNone},  {15, 1000, 700, 1.0f, false, false, kActNone},
                        {27, 1100, 512, 0.0f, true, false, kActGelu}, {20, 1536, 768, 0.0f, false, true, kActNone},
                        // One to three rows (narrow tiles): a token's projections, a
                        // depth over two K blocks, partial panels, an epilogue.
                        {1, 1536, 512, 0.0f, true, true, kActNone},   {2, 97, 1100, 1.0f, false, false, kActNone},
                        {3, 65, 31, 0.0f, true, false, kActGelu},     {1, 33, 2100, 1.0f, true, true, kActRelu},
                        {3, 2304, 768, 0.0f, false, true, kActNone},  {2, 5, 1, 0.0f, true, false, kActNone}};
  const int before = ThreadPool::global().size();
  for (const Case& c : cases) {
    std::vector<float> A(static_cast<std::size_t>(c.m * c.k)), W(static_cast<std::size_t>(c.n * c.k)),
        bias(static_cast<std::size_t>(c.n)), C0(static_cast<std::size_t>(c.m * c.n));
    Rng rng(static_cast<std::uint64_t>(c.m * 31 + c.n * 7 + c.k));
    rng.fill(A);
    rng.fill(W);
    rng.fill(bias);
    rng.fill(C0);
    if (c.spread) {
      // Row i of A scaled by 2^(i mod 81 - 40), column j of B by 2^-(j mod 81 - 40).
      for (long i = 0; i < c.m; ++i)
        for (long p = 0; p < c.k; ++p) A[static_cast<std::size_t>(i * c.k + p)] *= std::ldexp(1.0f, static_cast<int>(i % 81) - 40);
      for (long j = 0; j < c.n; ++j)
        for (long p = 0; p < c.k; ++p) W[static_cast<std::size_t>(j * c.k + p)] *= std::ldexp(1.0f, 40 - static_cast<int>(j % 81));
    }
    auto pm = pack_matrix(kt, W.data(), c.k, true, c.k, c.n);  // W is [n, k], PyTorch's layout
    // The product on `threads` threads, with the packed weights or (unpacked)
    // with W itself as the transposed B.
    auto run = [&](int threads, bool unpacked = false) {
      std::vector<float> C = C0;
      GemmArgs g;
      g.m = c.m;
      g.n = c.n;
      g.k = c.k;
      g.beta = c.beta;
      g.a = A.data();
      g.lda = c.k;
      g.b = W.data();
      g.ldb = c.k;
      g.trans_b = true;
      g.c = C.data();
      g.ldc = c.n;
      g.bias = c.bias ? bias.data() : nullptr;
      g.act = c.act;
      ThreadPool::global().resize(threads);
      if (unpacked) {
        sgemm(kt, g);
      } else {
        sgemm_with_packed(g, *pm);
      }
      return C;
    };
    const std::vector<float> one = run(1), three = run(3);
    const std::string what = std::string(kt.name) + " packed product m=" + std::to_string(c.m) + " n=" +
                             std::to_string(c.n) + " k=" + std::to_string(c.k);
    check(std::memcmp(one.data(), three.data(), one.size() * 4) == 0, what + ": same bits on 3 threads");
    if (c.m > kt.mr && c.m < 2 * kt.mr) {
      // The unpacked product of the same shape tiles its rows the same way.
      const std::vector<float> C = run(2, true);
      check(std::memcmp(one.data(), C.data(), C.size() * 4) == 0, what + ": the unpacked product's bits");
    }
    double worst = 0;
    for (long i = 0; i < c.m; ++i)
      for (long j = 0; j < c.n; ++j) {
        double acc = 0, mag = 0;
        for (long p = 0; p < c.k; ++p) {
          const double t = static_cast<double>(A[static_cast<std::size_t>(i * c.k + p)]) * W[static_cast<std::size_t>(j * c.k + p)];
          acc += t;
          mag += std::fabs(t);
        }
        const std::size_t ci = static_cast<std::size_t>(i * c.n + j);
        const double add = c.beta * static_cast<double>(C0[ci]) + (c.bias ? bias[static_cast<std::size_t>(j)] : 0.0);
        const double pre = acc + add;
        const double want = c.act == kActRelu ? std::fmax(pre, 0.0) : c.act == kActGelu ? gelu_ref(pre) : pre;
        // A float32 dot product's bound, with room for the tile unit's six partial products per term.
        const double tol = 1e-6 * (mag + std::fabs(add) + 1e-30) * (2.0 + std::sqrt(static_cast<double>(c.k)));
        worst = std::fmax(worst, std::fabs(one[ci] - want) / tol);
      }
    check(worst <= 1.0, what + ": error " + std::to_string(worst) + " of tolerance");
  }
  {
    // An infinity in A gives infinities (or NaN against a zero) in its row,
    // a NaN in B NaN in its column; the other elements are finite.
    const long m = 40, n = 40, k = 64;
    std::vector<float> A(static_cast<std::size_t>(m * k), 0.5f), W(static_cast<std::size_t>(n * k), 0.25f),
        C(static_cast<std::size_t>(m * n));
    A[3 * k + 5] = std::numeric_limits<float>::infinity();
    W[7 * k + 9] = std::numeric_limits<float>::quiet_NaN();
    auto pm = pack_matrix(kt, W.data(), k, true, k, n);
    GemmArgs g;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = A.data();
    g.lda = k;
    g.c = C.data();
    g.ldc = n;
    sgemm_with_packed(g, *pm);
    bool ok = true;
    for (long i = 0; i < m; ++i)
      for (long j = 0; j < n; ++j) {
        const float v = C[static_cast<std::size_t>(i * n + j)];
        if (j == 7) ok = ok && std::isnan(v);
        else if (i == 3) ok = ok && v == std::numeric_limits<float>::infinity();
        else ok = ok && v == 0.5f * 0.25f * static_cast<float>(k);
      }
    check(ok, std::string(kt.name) + " packed product: infinity and NaN propagate, other elements exact");
  }
  {
    // A few rows of A as a view: rows far apart (lda > k) or transposed (k
    // strided): the same bits as contiguous rows, on one and on two threads.
    const long n = 200, k = 300;
    std::vector<float> W(static_cast<std::size_t>(n * k));
    Rng rng(91);
    rng.fill(W);
    auto pm = pack_matrix(kt, W.data(), k, true, k, n);
    bool same = true;
    for (long m = 1; m <= kt.narrow_rows + 1; ++m)
      for (int threads : {1, 2}) {
        ThreadPool::global().resize(threads);
        std::vector<float> A(static_cast<std::size_t>(m * k)), At(A.size()), Aw(static_cast<std::size_t>(m * (k + 9)));
        rng.fill(A);
        for (long i = 0; i < m; ++i)
          for (long p = 0; p < k; ++p) {
            const float v = A[static_cast<std::size_t>(i * k + p)];
            At[static_cast<std::size_t>(p * m + i)] = v;
            Aw[static_cast<std::size_t>(i * (k + 9) + p)] = v;
          }
        auto product = [&](const float* a, long lda, bool ta) {
          std::vector<float> C(static_cast<std::size_t>(m * n));
          GemmArgs g;
          g.m = m;
          g.n = n;
          g.k = k;
          g.a = a;
          g.lda = lda;
          g.trans_a = ta;
          g.c = C.data();
          g.ldc = n;
          sgemm_with_packed(g, *pm);
          return C;
        };
        const std::vector<float> plain = product(A.data(), k, false), t = product(At.data(), m, true),
                                 w = product(Aw.data(), k + 9, false);
        same = same && std::memcmp(plain.data(), t.data(), plain.size() * 4) == 0 &&
               std::memcmp(plain.data(), w.data(), plain.size() * 4) == 0;
      }
    check(same, std::string(kt.name) + " packed product of few rows: strided and transposed A give the bits of contiguous rows");
  }
  ThreadPool::global().resize(before);
}

// The GEMM epilogue: C = act(alpha A B + beta C + bias) on the packed and the
// unpacked paths, bitwise equal to the plain GEMM followed by the activation
// pass, within tolerance of a float64 reference, the same for any thread
// count, and applied once when K spans several blocks.
void test_gemm_activation(const KernelTable& kt) {
  struct Case {
    long m, n, k;
    bool tb;
    float beta;
  };
  const Case cases[] = {{1, 37, 19, false, 0.0f},    {3, 5, 2, true, 0.0f},     {31, 67, 129, false, 0.5f},
                        {97, 131, 300, true, 0.0f},  {130, 257, 2100, true, 0.0f}, {15, 33, 17, false, 1.0f},
                        {64, 64, 0, false, 1.0f},    {200, 45, 77, false, 0.0f}};
  const int before = ThreadPool::global().size();
  for (const Case& c : cases)
    for (int act = kActRelu; act < kActivationCount; ++act) {
      const long lda = c.k + 3, ldb = (c.tb ? c.k : c.n) + 1, ldc = c.n + 2;
      std::vector<float> A(static_cast<std::size_t>(c.m * lda + 1)), Bm(static_cast<std::size_t>((c.tb ? c.n : c.k) * ldb + 1)),
          bias(static_cast<std::size_t>(c.n)), C0(static_cast<std::size_t>(c.m * ldc));
      Rng rng(static_cast<std::uint64_t>(c.m * 7 + c.n * 3 + c.k + act));
      rng.fill(A);
      rng.fill(Bm);
      rng.fill(bias);
      rng.fill(C0);
      auto run = [&](int a_act, int threads) {
        std::vector<float> C = C0;
        GemmArgs g;
        g.m = c.m;
        g.n = c.n;
        g.k = c.k;
        g.trans_b = c.tb;
        g.alpha = 0.75f;
        g.beta = c.beta;
        g.a = A.data();
        g.lda = lda;
        g.b = Bm.data();
        g.ldb = ldb;
        g.c = C.data();
        g.ldc = ldc;
        g.bias = bias.data();
        g.act = a_act;
        ThreadPool::global().resize(threads);
        sgemm(kt, g);
        return C;
      };
      const std::vector<float> fused = run(act, 1), fused3 = run(act, 3);
      std::vector<float> plain = run(kActNone, 1);
      {
        const FlushDenormals fp;  // as every kernel driver runs (subnormal GELU results are zeros)
        for (long i = 0; i < c.m; ++i) kt.activation_array(act, plain.data() + i * ldc, plain.data() + i * ldc, c.n);
      }
      const std::string what = std::string(kt.name) + " gemm act " + std::to_string(act) + " m=" + std::to_string(c.m) +
                               " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k);
      check(std::memcmp(fused.data(), plain.data(), fused.size() * 4) == 0, what + ": equals gemm then activation");
      check(std::memcmp(fused.data(), fused3.data(), fused.size() * 4) == 0, what + ": same bits on 3 threads");
      double worst = 0;
      for (long i = 0; i < c.m; ++i)
        for (long j = 0; j < c.n; ++j) {
          double acc = 0, mag = 0;
          for (long p = 0; p < c.k; ++p) {
            const double av = A[static_cast<std::size_t>(i * lda + p)];
            const double bv = c.tb ? Bm[static_cast<std::size_t>(j * ldb + p)] : Bm[static_cast<std::size_t>(p * ldb + j)];
            acc += av * bv;
            mag += std::fabs(av * bv);
          }
          const std::size_t ci = static_cast<std::size_t>(i * ldc + j);
          const double pre = 0.75 * acc + c.beta * static_cast<double>(C0[ci]) + bias[static_cast<std::size_t>(j)];
          const double want = act == kActRelu ? std::fmax(pre, 0.0) : act == kActGelu ? gelu_ref(pre) : gelu_tanh_ref(pre);
          const double tol = 1.2 * 4e-7 * (0.75 * mag + std::fabs(c.beta) + 2.0) * (2.0 + std::sqrt(static_cast<double>(c.k)));
          worst = std::fmax(worst, std::fabs(fused[ci] - want) / tol);
        }
      check(worst <= 1.0, what + ": error " + std::to_string(worst) + " of tolerance");
    }
  ThreadPool::global().resize(before);
}

// ---------------------------------------------------------------- LayerNorm
// Reference: z = x + r + shift in float64 from the float32 inputs, two-pass
// statistics in float64.
void layer_norm_ref(const float* x, const float* r, const float* sh, const float* g, const float* b, long n, double eps,
                    double* y) {
  std::vector<double> z(static_cast<std::size_t>(n));
  double mean = 0;
  for (long j = 0; j < n; ++j) {
    z[static_cast<std::size_t>(j)] = static_cast<double>(x[j]) + (r ? r[j] : 0.0) + (sh ? sh[j] : 0.0);
    mean += z[static_cast<std::size_t>(j)];
  }
  mean /= static_cast<double>(n);
  double var = 0;
  for (long j = 0; j < n; ++j) var += (z[static_cast<std::size_t>(j)] - mean) * (z[static_cast<std::size_t>(j)] - mean);
  var /= static_cast<double>(n);
  const double rstd = 1.0 / std::sqrt(var + eps);
  for (long j = 0; j < n; ++j) y[j] = (z[static_cast<std::size_t>(j)] - mean) * rstd * (g ? g[j] : 1.0) + (b ? b[j] : 0.0);
}


// Activation arguments for `rows` rows of `cols`: x's rows ldx apart, y's contiguous.
ActivationArgs activation_rows(int act, long rows, long cols, const float* x, long ldx, float* y) {
  ActivationArgs a;
  a.act = act;
  a.rank = 2;
  a.shape[0] = rows;
  a.shape[1] = cols;
  a.x = x;
  a.x_strides[0] = ldx;
  a.x_strides[1] = 1;
  a.y = y;
  a.y_strides[0] = cols;
  a.y_strides[1] = 1;
  return a;
}

void test_layer_norm(const KernelTable& kt) {
  // Rows of every awkward length, with each optional input on or off, and
  // rows far from 0 (mean 1e4, spread 1; and mean -3e5 spread 0.01 with the
  // mean split between x and the residual).
  std::vector<long> lens = {1, 2, 3, 5, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 255, 384, 768, 1000, 1031};
  double worst_plain = 0, worst_far = 0;
  for (long n : lens)
    for (int variant = 0; variant < 16; ++variant) {
      const bool use_r = variant & 1, use_sh = variant & 2, use_g = variant & 4, use_b = variant & 8;
      for (int far = 0; far < 3; ++far) {
        Rng rng(static_cast<std::uint64_t>(n * 16 + variant + far * 1000));
        std::vector<float> x(static_cast<std::size_t>(n)), r(static_cast<std::size_t>(n)), sh(static_cast<std::size_t>(n)),
            g(static_cast<std::size_t>(n)), b(static_cast<std::size_t>(n)), y(static_cast<std::size_t>(n) + 1, 42.0f);
        rng.fill(x);
        rng.fill(r);
        rng.fill(sh);
        rng.fill(g);
        rng.fill(b);
        if (far == 1) {
          for (float& v : x) v = 1e4f + 3.0f * v;
        } else if (far == 2) {
          for (float& v : x) v = -2e5f + 0.01f * v;
          for (float& v : r) v = -1e5f + 0.02f * v;
        }
        const float* rp = use_r ? r.data() : nullptr;
        const float* sp = use_sh ? sh.data() : nullptr;
        const float* gp = use_g ? g.data() : nullptr;
        const float* bp = use_b ? b.data() : nullptr;
        kt.layer_norm_row(x.data(), rp, sp, gp, bp, y.data(), nullptr, n, 1e-5f);
        std::vector<double> ref(static_cast<std::size_t>(n));
        layer_norm_ref(x.data(), rp, sp, gp, bp, n, 1e-5, ref.data());
        double err = 0;
        for (long j = 0; j < n; ++j) err = std::fmax(err, std::fabs(y[static_cast<std::size_t>(j)] - ref[static_cast<std::size_t>(j)]));
        (far ? worst_far : worst_plain) = std::fmax(far ? worst_far : worst_plain, err);
        check(err < 4e-6 && y[static_cast<std::size_t>(n)] == 42.0f,
              std::string(kt.name) + " layer_norm n=" + std::to_string(n) + " variant " + std::to_string(variant) +
                  " far " + std::to_string(far) + " err " + std::to_string(err));
        // In place over x (and over the residual) gives the same bits.
        std::vector<float> xi = x, ri = r;
        kt.layer_norm_row(xi.data(), rp, sp, gp, bp, xi.data(), nullptr, n, 1e-5f);
        bool same = std::memcmp(xi.data(), y.data(), static_cast<std::size_t>(n) * 4) == 0;
        if (use_r) {
          kt.layer_norm_row(x.data(), ri.data(), sp, gp, bp, ri.data(), nullptr, n, 1e-5f);
          same = same && std::memcmp(ri.data(), y.data(), static_cast<std::size_t>(n) * 4) == 0;
        }
        check(same, std::string(kt.name) + " layer_norm in place n=" + std::to_string(n));
        // The sum output: z = (x + r) + shift in float32, here over the
        // residual (or x) in place; y unchanged.
        std::vector<float> zs = use_r ? r : x, y2(static_cast<std::size_t>(n));
        kt.layer_norm_row(use_r ? x.data() : zs.data(), use_r ? zs.data() : nullptr, sp, gp, bp, y2.data(), zs.data(), n,
                          1e-5f);
        bool sum_ok = std::memcmp(y2.data(), y.data(), static_cast<std::size_t>(n) * 4) == 0;
        for (long j = 0; j < n; ++j) {
          float z = x[static_cast<std::size_t>(j)];
          if (use_r) z = z + r[static_cast<std::size_t>(j)];
          if (use_sh) z = z + sh[static_cast<std::size_t>(j)];
          sum_ok = sum_ok && zs[static_cast<std::size_t>(j)] == z;
        }
        check(sum_ok, std::string(kt.name) + " layer_norm sum output n=" + std::to_string(n));
        // Streamed (a stage row, y past the caches) at three alignments of y:
        // the same bits, nothing written outside the row.
        std::vector<float> stage(static_cast<std::size_t>(n)), ybuf(static_cast<std::size_t>(n) + 40);
        bool streamed_same = true;
        for (long skew : {0L, 1L, 7L}) {
          std::fill(ybuf.begin(), ybuf.end(), 42.0f);
          float* ys = at_skew(ybuf, skew);
          kt.layer_norm_row_streamed(x.data(), rp, sp, gp, bp, ys, nullptr, n, 1e-5f, stage.data());
          kt.fence();
          long outside = 0;
          for (const float* q = ybuf.data(); q < ybuf.data() + ybuf.size(); ++q)
            if (q < ys || q >= ys + n) outside += *q != 42.0f;
          streamed_same = streamed_same && outside == 0 && std::memcmp(ys, y.data(), static_cast<std::size_t>(n) * 4) == 0;
        }
        check(streamed_same, std::string(kt.name) + " layer_norm streamed n=" + std::to_string(n) + " variant " +
                                 std::to_string(variant));
      }
    }
  std::printf("  %s layer_norm: max error %.2e (rows near 0), %.2e (rows with mean 1e4 or -3e5)\n", kt.name,
              worst_plain, worst_far);
  {  // A constant row with eps 1e-12: zeros (+ beta), not NaN.
    std::vector<float> x(50, 3.25f), b(50, 0.5f), y(50);
    kt.layer_norm_row(x.data(), nullptr, nullptr, nullptr, b.data(), y.data(), nullptr, 50, 1e-12f);
    bool ok = true;
    for (float v : y) ok = ok && v == 0.5f;
    check(ok, std::string(kt.name) + " layer_norm of a constant row is beta");
  }
  {  // The driver: strided rank-3 rows, a residual broadcast over the batch, in parallel = serially.
    const long B = 3, S = 37, E = 67;
    std::vector<float> x(static_cast<std::size_t>(B * S * (E + 5))), r(static_cast<std::size_t>(S * E)), g(E), bt(E),
        sh(E), y(static_cast<std::size_t>(B * S * E));
    Rng rng(99);
    rng.fill(x);
    rng.fill(r);
    rng.fill(g);
    rng.fill(bt);
    rng.fill(sh);
    LayerNormArgs a;
    a.rank = 3;
    a.shape[0] = B;
    a.shape[1] = S;
    a.shape[2] = E;
    a.x = x.data();
    a.x_strides[0] = S * (E + 5);
    a.x_strides[1] = E + 5;
    a.x_strides[2] = 1;
    a.residual = r.data();
    a.r_strides[0] = 0;
    a.r_strides[1] = E;
    a.r_strides[2] = 1;
    a.shift = sh.data();
    a.gamma = g.data();
    a.beta = bt.data();
    a.y = y.data();
    a.y_strides[0] = S * E;
    a.y_strides[1] = E;
    a.y_strides[2] = 1;
    a.eps = 1e-6f;
    on_threads(3, [&] { layer_norm(kt, a); });
    double err = 0;
    bool same = true;
    for (long bi = 0; bi < B; ++bi)
      for (long s = 0; s < S; ++s) {
        std::vector<double> ref(static_cast<std::size_t>(E));
        const float* xr = x.data() + bi * S * (E + 5) + s * (E + 5);
        layer_norm_ref(xr, r.data() + s * E, sh.data(), g.data(), bt.data(), E, 1e-6, ref.data());
        std::vector<float> row(static_cast<std::size_t>(E));
        kt.layer_norm_row(xr, r.data() + s * E, sh.data(), g.data(), bt.data(), row.data(), nullptr, E, 1e-6f);
        for (long j = 0; j < E; ++j) {
          const float got = y[static_cast<std::size_t>((bi * S + s) * E + j)];
          err = std::fmax(err, std::fabs(got - ref[static_cast<std::size_t>(j)]));
          same = same && got == row[static_cast<std::size_t>(j)];
        }
      }
    check(err < 2e-6 && same, std::string(kt.name) + " layer_norm driver (strided, broadcast residual, 3 threads) err " +
                                  std::to_string(err));
  }
  {  // The activation driver: a strided view, and a contiguous tensor split into chunks.
    const long R = 9, C = 45;
    std::vector<float> x(static_cast<std::size_t>(R * (C + 3))), y(static_cast<std::size_t>(R * C));
    Rng rng(5);
    for (float& v : x) v = 4.0f * rng.next();
    ActivationArgs a = activation_rows(kActGelu, R, C, x.data(), C + 3, y.data());
    activation(kt, a);
    double err = 0;
    for (long i = 0; i < R; ++i)
      for (long j = 0; j < C; ++j)
        err = std::fmax(err, std::fabs(y[static_cast<std::size_t>(i * C + j)] - gelu_ref(x[static_cast<std::size_t>(i * (C + 3) + j)])));
    std::vector<float> big(200003), out(200003);
    for (float& v : big) v = 6.0f * rng.next();
    ActivationArgs b;
    b.act = kActGeluTanh;
    b.rank = 1;
    b.shape[0] = static_cast<long>(big.size());
    b.x = big.data();
    b.x_strides[0] = 1;
    b.y = out.data();
    b.y_strides[0] = 1;
    on_threads(3, [&] { activation(kt, b); });
    for (std::size_t i = 0; i < big.size(); ++i) err = std::fmax(err, std::fabs(out[i] - gelu_tanh_ref(big[i])) / (1 + std::fabs(big[i])));
    check(err < 1e-6, std::string(kt.name) + " activation driver err " + std::to_string(err));
  }
  // Large new results (a thread's share past half of any L2: written past the
  // caches) on 1 and 3 threads equal the rows computed one by one: layerNorm
  // rows of 37 and 768 floats with a residual, ReLU as one contiguous run and
  // as strided rows.
  Rng rng(123);
  for (long cols : {37L, 768L}) {
    const long rows = (6L << 20) / (4 * cols);
    std::vector<float> x(static_cast<std::size_t>(rows * cols)), r(x.size()), g(static_cast<std::size_t>(cols)),
        bt(g.size()), want(x.size()), y1(x.size(), 5.0f), y3(x.size(), 6.0f);
    rng.fill(x);
    rng.fill(r);
    rng.fill(g);
    rng.fill(bt);
    for (long row = 0; row < rows; ++row)
      kt.layer_norm_row(x.data() + row * cols, r.data() + row * cols, nullptr, g.data(), bt.data(), want.data() + row * cols,
                        nullptr, cols, 1e-5f);
    LayerNormArgs a;
    a.rank = 2;
    a.shape[0] = rows;
    a.shape[1] = cols;
    a.x = x.data();
    a.x_strides[0] = a.r_strides[0] = a.y_strides[0] = cols;
    a.x_strides[1] = a.r_strides[1] = a.y_strides[1] = 1;
    a.residual = r.data();
    a.gamma = g.data();
    a.beta = bt.data();
    a.stream_out = true;
    a.y = y1.data();
    layer_norm(kt, a);
    a.y = y3.data();
    on_threads(3, [&] { layer_norm(kt, a); });
    check(std::memcmp(y1.data(), want.data(), want.size() * 4) == 0 && std::memcmp(y3.data(), want.data(), want.size() * 4) == 0,
          std::string(kt.name) + " layer_norm driver: a large new result equals the rows' on 1 and 3 threads, cols=" +
              std::to_string(cols));
  }
  {
    const long rows = 1531, cols = 1029;  // 6 MiB; rows 1032 apart in x
    std::vector<float> x(static_cast<std::size_t>(rows * (cols + 3))), want(static_cast<std::size_t>(rows * cols)),
        y1(want.size(), 5.0f), y3(want.size(), 6.0f), c1(want.size(), 7.0f);
    rng.fill(x);
    for (long row = 0; row < rows; ++row)
      kt.activation_array(kActRelu, x.data() + row * (cols + 3), want.data() + row * cols, cols);
    ActivationArgs a = activation_rows(kActRelu, rows, cols, x.data(), cols + 3, y1.data());
    a.stream_out = true;
    activation(kt, a);
    a.y = y3.data();
    on_threads(3, [&] { activation(kt, a); });
    // The same elements as one contiguous run (x's rows copied together).
    std::vector<float> xc(want.size());
    for (long row = 0; row < rows; ++row)
      std::memcpy(xc.data() + row * cols, x.data() + row * (cols + 3), static_cast<std::size_t>(cols) * 4);
    ActivationArgs c;
    c.act = kActRelu;
    c.rank = 1;
    c.shape[0] = rows * cols;
    c.x = xc.data();
    c.x_strides[0] = 1;
    c.y = c1.data();
    c.y_strides[0] = 1;
    c.stream_out = true;
    on_threads(3, [&] { activation(kt, c); });
    check(std::memcmp(y1.data(), want.data(), want.size() * 4) == 0 && std::memcmp(y3.data(), want.data(), want.size() * 4) == 0 &&
              std::memcmp(c1.data(), want.data(), want.size() * 4) == 0,
          std::string(kt.name) + " relu driver: a large new result equals the rows' on 1 and 3 threads, strided and contiguous");
  }
}

void test_tensor_ops() {
  // Permuted copy: [2, 3, 4] read as its [4, 3, 2] transpose.
  std::vector<float> src(24);
  for (int i = 0; i < 24; ++i) src[static_cast<std::size_t>(i)] = static_cast<float>(i);
  long shape[3] = {4, 3, 2}, strides[3] = {1, 4, 12}, contiguous[3] = {6, 2, 1};
  std::vector<float> dst(24);
  copy_strided_f32(3, shape, src.data(), strides, dst.data(), contiguous);
  bool ok = true;
  for (long a = 0; a < 4; ++a)
    for (long b = 0; b < 3; ++b)
      for (long c = 0; c < 2; ++c) ok = ok && dst[static_cast<std::size_t>(a * 6 + b * 2 + c)] == src[static_cast<std::size_t>(c * 12 + b * 4 + a)];
  check(ok, "copy_strided permute");

  // Permutes whose source runs along another axis than the destination's last
  // (the tiled copy), and identities (one run: the flat copy), uint8 too:
  // every element where a plain loop puts it, nothing written outside, on 1
  // and 3 threads, as a new result (large ones streamed) and not; into a
  // destination off the 16-byte alignment.
  {
    struct Perm {
      long s0, s1, s2;  // the source's contiguous shape
      int p0, p1, p2;   // the destination's axes, as axes of the source
      long skew;        // floats before the destination
    };
    const Perm perms[] = {{3, 37, 70, 0, 2, 1, 0}, {5, 130, 17, 2, 0, 1, 1}, {1, 1100, 1500, 0, 2, 1, 0},
                          {1, 1100, 1500, 0, 2, 1, 3}, {64, 65, 3, 1, 2, 0, 0}, {2, 200, 300, 2, 1, 0, 2},
                          {1, 1100, 1501, 0, 1, 2, 0}, {2, 700, 1003, 0, 1, 2, 3}, {3, 37, 70, 0, 1, 2, 1},
                          {1, 1, 13, 0, 1, 2, 2}};
    for (const Perm& q : perms) {
      const long sh[3] = {q.s0, q.s1, q.s2}, sst[3] = {q.s1 * q.s2, q.s2, 1};
      const int p[3] = {q.p0, q.p1, q.p2};
      const long shape3[3] = {sh[p[0]], sh[p[1]], sh[p[2]]}, src_st[3] = {sst[p[0]], sst[p[1]], sst[p[2]]};
      const long n = q.s0 * q.s1 * q.s2, dst_st[3] = {shape3[1] * shape3[2], shape3[2], 1};
      std::vector<float> sf(static_cast<std::size_t>(n));
      std::vector<std::uint8_t> su(static_cast<std::size_t>(n));
      for (long i = 0; i < n; ++i) {
        sf[static_cast<std::size_t>(i)] = static_cast<float>(i) * 0.5f;
        su[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i * 7);
      }
      for (int threads : {1, 3}) {
        for (bool fresh : {false, true}) {
          std::vector<float> df(static_cast<std::size_t>(n + 8), -1.0f);
          std::vector<std::uint8_t> du(static_cast<std::size_t>(n + 8), 9);
          on_threads(threads, [&] {
            copy_strided_f32(3, shape3, sf.data(), src_st, df.data() + q.skew, dst_st, fresh);
            copy_strided_u8(3, shape3, su.data(), src_st, du.data() + q.skew, dst_st, fresh);
          });
          bool same = true;
          long at = 0;
          for (long a = 0; a < shape3[0]; ++a)
            for (long b = 0; b < shape3[1]; ++b)
              for (long c = 0; c < shape3[2]; ++c, ++at) {
                const long from = a * src_st[0] + b * src_st[1] + c * src_st[2];
                same = same && df[static_cast<std::size_t>(q.skew + at)] == sf[static_cast<std::size_t>(from)] &&
                       du[static_cast<std::size_t>(q.skew + at)] == su[static_cast<std::size_t>(from)];
              }
          for (long i = 0; i < q.skew; ++i) same = same && df[static_cast<std::size_t>(i)] == -1.0f && du[static_cast<std::size_t>(i)] == 9;
          for (long i = q.skew + n; i < n + 8; ++i) same = same && df[static_cast<std::size_t>(i)] == -1.0f && du[static_cast<std::size_t>(i)] == 9;
          check(same, "copy_strided permute " + std::to_string(q.s0) + "x" + std::to_string(q.s1) + "x" +
                          std::to_string(q.s2) + " -> axes " + std::to_string(q.p0) + std::to_string(q.p1) +
                          std::to_string(q.p2) + " threads " + std::to_string(threads) + (fresh ? " new result" : ""));
        }
      }
    }
  }

  // Rows of a wider source (a narrowed view) into a contiguous destination,
  // both off the 16-byte alignment: a copy per row, streamed when a large new
  // result; every element in place and nothing outside, on 1 and 3 threads.
  {
    struct Rows {
      long rows, cols, ld, src_skew, dst_skew;
    };
    const Rows cases[] = {{900, 1001, 1024, 1, 3}, {700, 1100, 1103, 0, 0}, {5, 7, 9, 2, 1}, {3000, 64, 80, 3, 2}};
    for (const Rows& q : cases) {
      const long n = q.rows * q.cols, ext = q.src_skew + (q.rows - 1) * q.ld + q.cols;
      std::vector<float> sf(static_cast<std::size_t>(ext));
      std::vector<std::uint8_t> su(static_cast<std::size_t>(ext));
      for (long i = 0; i < ext; ++i) {
        sf[static_cast<std::size_t>(i)] = static_cast<float>(i) * 0.25f - 3.0f;
        su[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i * 13 + 1);
      }
      const long shape2[2] = {q.rows, q.cols}, src_st[2] = {q.ld, 1}, dst_st[2] = {q.cols, 1};
      for (int threads : {1, 3})
        for (bool fresh : {false, true}) {
          std::vector<float> df(static_cast<std::size_t>(n + 8), -1.0f);
          std::vector<std::uint8_t> du(static_cast<std::size_t>(n + 8), 9);
          on_threads(threads, [&] {
            copy_strided_f32(2, shape2, sf.data() + q.src_skew, src_st, df.data() + q.dst_skew, dst_st, fresh);
            copy_strided_u8(2, shape2, su.data() + q.src_skew, src_st, du.data() + q.dst_skew, dst_st, fresh);
          });
          bool same = true;
          for (long r = 0; r < q.rows; ++r)
            for (long c = 0; c < q.cols; ++c) {
              const std::size_t from = static_cast<std::size_t>(q.src_skew + r * q.ld + c);
              const std::size_t to = static_cast<std::size_t>(q.dst_skew + r * q.cols + c);
              same = same && df[to] == sf[from] && du[to] == su[from];
            }
          for (long i = 0; i < q.dst_skew; ++i)
            same = same && df[static_cast<std::size_t>(i)] == -1.0f && du[static_cast<std::size_t>(i)] == 9;
          for (long i = q.dst_skew + n; i < n + 8; ++i)
            same = same && df[static_cast<std::size_t>(i)] == -1.0f && du[static_cast<std::size_t>(i)] == 9;
          check(same, "copy_strided rows " + std::to_string(q.rows) + "x" + std::to_string(q.cols) + " ld " +
                          std::to_string(q.ld) + " threads " + std::to_string(threads) + (fresh ? " new result" : ""));
        }
    }
  }

  std::vector<float> n1(300001), n2(300001);
  on_threads(1, [&] { fill_normal(n1.data(), static_cast<long>(n1.size()), 42, 0.0, 1.0); });
  on_threads(3, [&] { fill_normal(n2.data(), static_cast<long>(n2.size()), 42, 0.0, 1.0); });
  check(std::memcmp(n1.data(), n2.data(), n1.size() * sizeof(float)) == 0, "fill_normal thread-independent");
  double mean = 0, var = 0;
  for (float v : n1) mean += v;
  mean /= static_cast<double>(n1.size());
  for (float v : n1) var += (v - mean) * (v - mean);
  var /= static_cast<double>(n1.size());
  check(std::fabs(mean) < 0.01 && std::fabs(var - 1.0) < 0.01,
        "fill_normal moments mean=" + std::to_string(mean) + " var=" + std::to_string(var));
  std::vector<float> u(100000);
  fill_uniform(u.data(), 100000, 7, -2.0, 3.0);
  double lo = 1e9, hi = -1e9;
  for (float v : u) {
    lo = std::fmin(lo, v);
    hi = std::fmax(hi, v);
  }
  check(lo >= -2.0 && hi < 3.0 && lo < -1.99 && hi > 2.99, "fill_uniform range");

  {  // L2 normalisation of strided rows.
    long shape[2] = {5, 7}, strides[2] = {9, 1};
    std::vector<float> src(45), dst(35);
    Rng rng(23);
    rng.fill(src);
    src[9 * 2 + 0] = src[9 * 2 + 1] = src[9 * 2 + 2] = src[9 * 2 + 3] = src[9 * 2 + 4] = src[9 * 2 + 5] = src[9 * 2 + 6] = 0;
    l2_normalize(2, shape, src.data(), strides, dst.data(), 1e-8f);
    bool ok = true;
    for (long r = 0; r < 5; ++r) {
      double n = 0;
      for (long c = 0; c < 7; ++c) n += static_cast<double>(dst[static_cast<std::size_t>(r * 7 + c)]) * dst[static_cast<std::size_t>(r * 7 + c)];
      ok = ok && (r == 2 ? n == 0 : std::fabs(n - 1) < 1e-6);
    }
    check(ok, "l2_normalize rows have unit norm (zero row stays zero)");
  }
}

}  // namespace

// A task that throws stops its job and the exception reaches the caller, from
// whichever thread ran the task; the pool keeps working.
void test_pool_exceptions() {
  ThreadPool& pool = ThreadPool::global();
  const int before = pool.size();
  pool.resize(3);
  for (long thrower : {0L, 1L, 37L, 999L}) {
    std::atomic<long> ran{0};
    std::string caught;
    try {
      parallel_for(1000, [&](long t) {
        ran.fetch_add(1, std::memory_order_relaxed);
        if (t == thrower) throw std::runtime_error("task " + std::to_string(t));
      });
    } catch (const std::runtime_error& e) {
      caught = e.what();
    }
    check(caught == "task " + std::to_string(thrower), "pool: the exception of task " + std::to_string(thrower) +
                                                            " reaches the caller (got '" + caught + "')");
    check(ran.load() >= 1 && ran.load() <= 1000, "pool: the job stopped");
  }
  bool oom = false;
  try {
    parallel_for(8, [&](long t) {
      if (t == 5) throw std::bad_alloc();
    });
  } catch (const std::bad_alloc&) {
    oom = true;
  }
  check(oom, "pool: std::bad_alloc from a task reaches the caller");
  std::atomic<long> sum{0};
  parallel_for(100, [&](long t) { sum.fetch_add(t, std::memory_order_relaxed); });
  check(sum.load() == 4950, "pool: works after exceptions");
  // Thread indices: 0 here, 0 .. size - 1 inside a job, each worker's its own.
  std::atomic<unsigned> seen{0};
  std::atomic<bool> in_range{true};
  parallel_for(3000, [&](long) {
    const int i = ThreadPool::thread_index();
    if (i < 0 || i >= pool.size()) in_range = false;
    else seen.fetch_or(1u << i, std::memory_order_relaxed);
  });
  check(ThreadPool::thread_index() == 0 && in_range.load() && (seen.load() & 1u),
        "pool: thread indices in [0, size), 0 on the calling thread");

  // Shares of units, each taken exactly once however many threads take part
  // and whichever share they start from.
  for (long units : {0L, 1L, 7L, 100L}) {
    for (long parts : {1L, 2L, 3L, 200L}) {
      ShareCursors shares(units, parts);
      std::vector<std::atomic<int>> taken(static_cast<std::size_t>(units));
      parallel_for(5, [&](long t) { shares.for_each(t, [&](long u) { taken[static_cast<std::size_t>(u)]++; }); });
      bool once = true;
      for (auto& x : taken) once = once && x.load() == 1;
      check(once, "shares: each of " + std::to_string(units) + " units taken once from " + std::to_string(parts) +
                      " shares by 5 tasks");
    }
  }
  pool.resize(before);
}

// The checked extents and counts: exact where they fit, refused where they overflow.
void test_bounds() {
  long e = -1;
  const long shape[3] = {3, 4, 5}, strides[3] = {20, 5, 1};
  check(strided_extent(3, shape, strides, &e) && e == 60, "bounds: contiguous extent");
  const long empty[3] = {3, 0, 5};
  check(strided_extent(3, empty, strides, &e) && e == 0, "bounds: an empty view spans nothing");
  const long huge[2] = {1L << 40, 1L << 30}, hs[2] = {1L << 30, 1L << 20};
  check(!strided_extent(2, huge, hs, &e), "bounds: an extent past a long is refused");
  long n = -1;
  const long zero_last[3] = {1L << 62, 1L << 62, 0};
  check(checked_count(3, zero_last, &n) && n == 0, "bounds: a count with a zero size is 0, whatever the others");
  const long fits[2] = {1L << 40, 1L << 20};
  check(checked_count(2, fits, &n) && n == 1L << 60, "bounds: a count");
  const long big3[3] = {1L << 30, 1L << 30, 1L << 30};
  check(!checked_count(3, big3, &n), "bounds: a count past a long is refused");
  check(distinct_elements(3, shape, strides), "bounds: contiguous elements are distinct");
  const long bcast[3] = {0, 5, 1};
  check(!distinct_elements(3, shape, bcast), "bounds: a stride of 0 over a size > 1 aliases");
  const long overlap[3] = {20, 4, 1};
  check(!distinct_elements(3, shape, overlap), "bounds: rows closer than their length alias");
  const long perm[3] = {1, 15, 3};
  check(distinct_elements(3, shape, perm), "bounds: a permuted layout is distinct");
  const long ones[3] = {1, 1, 7}, any[3] = {0, 0, 1};
  check(distinct_elements(3, ones, any), "bounds: strides of size-1 axes do not matter");
  const long wrap[2] = {1L << 62, 3}, ws[2] = {1L << 62, 1};
  check(!distinct_elements(2, wrap, ws), "bounds: a span past a long is refused, not wrapped");
  GemmArgs g;
  g.m = 1L << 40;
  g.k = 1L << 40;
  g.lda = 1L << 40;
  g.batch = 1;
  check(!gemm_extent_a(g, &e), "bounds: gemm_extent_a overflowing is refused");
  g.m = 0;
  check(gemm_extent_a(g, &e) && e == 0, "bounds: an empty gemm operand spans nothing");
  check(causal_keys(0, 6, 3, 2) == 2 && causal_keys(5, 6, 3, 2) == 3 && causal_keys(3, 6, 3, 0) == 1 &&
            causal_keys(0, 6, 3, 0) == 0 && causal_keys(0, 2, 5, 9) == 5,
        "causal_keys: the first keys always seen, the limit of the others unchanged");
}

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--quick") == 0) g_quick = true;
  const CpuInfo& ci = cpu_info();
  std::printf("cpu: %s %s, l1d %zu l2 %zu l3 %zu, %d cpus\n", ci.arch, ci.brand, ci.cache.l1d, ci.cache.l2,
              ci.cache.l3, ci.logical_cpus);
  int tables = 0;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAmx, Isa::kNeon}) {
    std::string why;
    const KernelTable* kt = kernels_for(isa, &why);
    if (!kt) {
      std::printf("skip %s: %s\n", isa_name(isa), why.c_str());
      continue;
    }
    ++tables;
    std::printf("isa %s (mr %d, nr %d, width %d)\n", kt->name, kt->mr, kt->nr, kt->vector_width);
    test_exp(*kt);
    test_softmax_rows(*kt);
    test_softmax_runs(*kt);
    test_softmax_driver(*kt);
    test_gemm(*kt);
    test_threads(*kt);
    test_gemm_stream(*kt);
    {
      // The other loop order and blocking (ATTN_GEMM_BLOCKING=mc,kc,nc,ncl2).
      const char* saved = std::getenv("ATTN_GEMM_BLOCKING");
      const std::string keep = saved ? saved : "";
      for (const char* blocking : {"84,1024,2272,0", "98,200,1000,96"}) {
        setenv("ATTN_GEMM_BLOCKING", blocking, 1);
        std::printf("  blocking %s\n", blocking);
        test_gemm(*kt);
        test_threads(*kt);
        test_gemm_stream(*kt);
      }
      if (saved) setenv("ATTN_GEMM_BLOCKING", keep.c_str(), 1); else unsetenv("ATTN_GEMM_BLOCKING");
    }
    test_micro_variants(*kt);
    test_tanh(*kt);
    test_attention(*kt);
    test_fused(*kt);
    test_fp_env(*kt);
    test_erf_gelu(*kt);
    test_gemm_activation(*kt);
    test_layer_norm(*kt);
    test_packed(*kt);
    test_packed_products(*kt);
    // The one entry the tests above do not reach (the benchmark's peak).
    const double flops = kt->fma_peak(1000);
    check(flops > 0 && flops == static_cast<double>(static_cast<long>(flops)) &&
              static_cast<long>(flops) % (2000L * kt->vector_width) == 0,
          std::string(kt->name) + " fma_peak counts 2 flops per lane, chain and iteration: " +
              std::to_string(flops));
  }
  test_tensor_ops();
  test_pool_exceptions();
  test_bounds();
  check(tables >= 2 || std::strcmp(ci.arch, "unknown") == 0, "at least one vector path ran");
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
