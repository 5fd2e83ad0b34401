// Developer benchmark for the kernels, without Node: FMA peak and sgemm
// GFLOP/s per ISA. Usage: kernel_bench [isa] [threads] [n | MxNxK | MxNxKp ...]
// A shape ending in p multiplies by weights packed beforehand (pack_matrix),
// taking in turn copies enough to fill 32 MiB, so that each product streams
// its weights from beyond L2 as a model's layers do.
// With one thread, times are this thread's CPU time (CLOCK_THREAD_CPUTIME_ID):
// on a shared machine, time spent descheduled does not count.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <ctime>
#include <vector>

#include "../kernels/gemm.h"
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
  };
  std::vector<Shape> sizes;
  for (int i = 3; i < argc; ++i) {
    long m = 0, n = 0, k = 0;
    char p = 0;
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
