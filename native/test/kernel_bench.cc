// Developer benchmark for the kernels, without Node: FMA peak and sgemm
// GFLOP/s per ISA. Usage: kernel_bench [isa] [threads] [n | MxNxK | MxNxKp ...]
// A shape ending in p multiplies by weights packed beforehand (pack_matrix),
// taking in turn copies enough to fill 32 MiB, so that each product streams
// its weights from beyond L2 as a model's layers do. sRxC times softmax over
// the rows of an R x C matrix (logits of std 1) into a result kept from call
// to call. aBxHxSxD times fused attention on [B, H, S, D] heads, Q, K and V
// views of one [B, S, 3 H D] projection output.
// With one thread, times are this thread's CPU time (CLOCK_THREAD_CPUTIME_ID):
// on a shared machine, time spent descheduled does not count.
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <ctime>
#include <vector>

#include "../kernels/gemm.h"
#include "../kernels/attention.h"
#include "../kernels/softmax.h"
#include "../runtime/dispatch.h"
#include "../runtime/thread_pool.h"

using namespace attn;

static bool g_cpu_time = false;

static double now() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  std::string err;
  const KernelTable* kt = select_kernels(argc > 1 ? argv[1] : nullptr, &err);
  if (!kt) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 2;
  }
  int threads = argc > 2 ? std::atoi(argv[2]) : 1;
  ThreadPool::global().resize(threads);
  g_cpu_time = threads == 1;
  struct Shape {
    long m, n, k;
    bool packed;
    bool softmax = false;
    long heads = 0, dim = 0;  // attention when heads > 0
  };
  std::vector<Shape> sizes;
  for (int i = 3; i < argc; ++i) {
    long m = 0, n = 0, k = 0;
    char p = 0;
    long h = 0, d = 0;
    if (std::sscanf(argv[i], "a%ldx%ldx%ldx%ld", &m, &h, &n, &d) == 4) {
      Shape sh{m, n, 0, false, false};
      sh.heads = h;
      sh.dim = d;
      sizes.push_back(sh);
      continue;
    }
    if (std::sscanf(argv[i], "s%ldx%ld", &m, &n) == 2) {
      sizes.push_back({m, n, 0, false, true});
      continue;
    }
    const int got = std::sscanf(argv[i], "%ldx%ldx%ld%c", &m, &n, &k, &p);
    if (got >= 3) {
      sizes.push_back({m, n, k, got == 4 && p == 'p'});
    } else {
      m = std::atol(argv[i]);
      sizes.push_back({m, m, m, false});
    }
  }
  if (sizes.empty()) sizes = {{256, 256, 256, false}, {512, 512, 512, false}, {1024, 1024, 1024, false}, {2048, 2048, 2048, false}};

  double best_peak = 0;
  for (int r = 0; r < 5; ++r) {
    double t0 = now();
    double flops = kt->fma_peak(20000000);
    double t = now() - t0;
    if (flops / t > best_peak) best_peak = flops / t;
  }
  GemmBlocking b = gemm_blocking(*kt);
  std::printf("isa %s  mr %d nr %d  mc %ld kc %ld nc %ld  threads %d  peak %.1f GFLOP/s/core\n",
              kt->name, kt->mr, kt->nr, b.mc, b.kc, b.nc, threads, best_peak / 1e9);
  for (const Shape& sh : sizes) {
    const long m = sh.m, n = sh.n, k = sh.k;
    if (sh.heads > 0) {
      const long B = m, H = sh.heads, S = n, D = sh.dim, E = H * D;
      // Q, K and V as views of one [B, S, 3E] projection output, as
      // MultiHeadAttention passes them; the output [B, S, E].
      std::vector<float> qkv(3 * B * S * E), o(B * S * E);
      for (long i = 0; i < 3 * B * S * E; ++i) qkv[i] = static_cast<float>((i * 7 % 13) - 6) * 0.1f;
      AttentionArgs a;
      a.batch = B;
      a.heads = H;
      a.sq = a.sk = S;
      a.dk = a.dv = D;
      a.q = qkv.data();
      a.k = qkv.data() + E;
      a.v = qkv.data() + 2 * E;
      a.out = o.data();
      for (long* st : {a.q_strides, a.k_strides, a.v_strides}) {
        st[0] = 3 * S * E;
        st[1] = D;
        st[2] = 3 * E;
      }
      a.out_strides[0] = S * E;
      a.out_strides[1] = D;
      a.out_strides[2] = E;
      a.scale = 1.0f / std::sqrt(static_cast<float>(D));
      const double flops = 4.0 * B * H * S * S * D;
      const int reps = static_cast<int>(std::max(20.0, 2e9 / flops));
      std::vector<double> ts;
      for (int r = 0; r < reps; ++r) {
        double t0 = now();
        attention_fused(*kt, a);
        ts.push_back(now() - t0);
      }
      std::sort(ts.begin(), ts.end());
      const double med = ts[ts.size() / 2];
      std::printf("attention [%ld, %ld, %ld, %ld]  median %8.3f ms  %7.1f GFLOP/s (%5.1f%% of %d-thread peak)  best %7.1f\n", B, H,
                  S, D, med * 1e3, flops / med / 1e9, 100.0 * flops / med / (best_peak * threads), threads,
                  flops / ts[0] / 1e9);
      continue;
    }
    if (sh.softmax) {
      std::vector<float> x(m * n), y(m * n);
      std::uint32_t seed = 1;
      for (float& v : x) {  // sums of uniforms: about normal, std 1
        float s = 0;
        for (int u = 0; u < 4; ++u) {
          seed = seed * 1664525u + 1013904223u;
          s += static_cast<float>(seed >> 8) / 16777216.0f - 0.5f;
        }
        v = s * 1.732f;
      }
      // KB_COLD: results in turn in buffers filling 64 MiB, so each comes from
      // memory as a fresh result recycled long ago would; KB_STREAM: written
      // as a new result is (past the caches, where the rows allow).
      const long outs = std::getenv("KB_COLD") ? std::max(1L, (64L << 20) / (4 * m * n)) : 1;
      std::vector<std::vector<float>> ys(static_cast<std::size_t>(outs), std::vector<float>(static_cast<std::size_t>(m * n), 0.0f));
      SoftmaxArgs sa;
      sa.rank = 2;
      sa.shape[0] = m;
      sa.shape[1] = n;
      sa.x = x.data();
      sa.y = y.data();
      sa.x_strides[0] = sa.y_strides[0] = n;
      sa.x_strides[1] = sa.y_strides[1] = 1;
      sa.stream_out = std::getenv("KB_STREAM") != nullptr;  // as for a new result
      const int reps = static_cast<int>(std::max(20.0, 2e8 / static_cast<double>(m * n)));
      std::vector<double> ts;
      for (int r = 0; r < reps; ++r) {
        sa.y = ys[static_cast<std::size_t>(r) % ys.size()].data();
        double t0 = now();
        softmax(*kt, sa, threads > 1);
        ts.push_back(now() - t0);
      }
      std::sort(ts.begin(), ts.end());
      const double med = ts[ts.size() / 2];
      std::printf("softmax %5ldx%5ld  median %8.3f ms  %6.2f Gelem/s  %5.2f ns per %d floats  best %8.3f ms\n", m, n,
                  med * 1e3, static_cast<double>(m * n) / med / 1e9, med * 1e9 * kt->vector_width / static_cast<double>(m * n),
                  kt->vector_width, ts[0] * 1e3);
      continue;
    }
    std::vector<float> A(m * k), B(k * n), C(m * n);
    for (long i = 0; i < m * k; ++i) A[i] = static_cast<float>((i * 7 % 13) - 6) * 0.1f;
    for (long i = 0; i < k * n; ++i) B[i] = static_cast<float>((i * 5 % 11) - 5) * 0.1f;
    GemmArgs g;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = A.data();
    g.b = B.data();
    g.c = C.data();
    g.lda = k;
    g.ldb = n;
    g.ldc = n;
    double flops = 2.0 * m * n * k;
    int reps = static_cast<int>(2e9 / flops) + 3;
    std::vector<std::unique_ptr<PackedMatrix>> weights;
    if (sh.packed) {
      const char* env_copies = std::getenv("KB_COPIES");
      const long copies = env_copies ? std::max(1L, std::atol(env_copies)) : std::max(1L, (32L << 20) / (4 * k * n));
      for (long w = 0; w < copies; ++w) weights.push_back(pack_matrix(*kt, B.data(), n, false, k, n));
      reps = std::max(reps, 200);
    }
    std::vector<double> ts;
    for (int r = 0; r < reps; ++r) {
      double t0 = now();
      if (sh.packed) {
        sgemm_with_packed(g, *weights[static_cast<std::size_t>(r) % weights.size()]);
      } else {
        sgemm(*kt, g);
      }
      ts.push_back(now() - t0);
    }
    std::sort(ts.begin(), ts.end());
    double med = ts[ts.size() / 2], best = ts[0];
    std::printf("%5ldx%5ldx%5ld%s  median %8.3f ms  %7.1f GFLOP/s (%5.1f%% of %d-thread peak)  best %7.1f\n", m, n, k, sh.packed ? "p" : " ",
                med * 1e3, flops / med / 1e9, 100.0 * flops / med / (best_peak * threads), threads,
                flops / best / 1e9);
  }
  return 0;
}
