// Developer benchmark for the kernels, without Node: FMA peak and sgemm
// GFLOP/s per ISA. Usage: kernel_bench [isa] [threads] [n...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../kernels/gemm.h"
#include "../runtime/dispatch.h"
#include "../runtime/thread_pool.h"

using namespace attn;

static double now() {
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
  std::vector<long> sizes;
  for (int i = 3; i < argc; ++i) sizes.push_back(std::atol(argv[i]));
  if (sizes.empty()) sizes = {256, 512, 1024, 2048};

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
  for (long n : sizes) {
    std::vector<float> A(n * n), B(n * n), C(n * n);
    for (long i = 0; i < n * n; ++i) {
      A[i] = static_cast<float>((i * 7 % 13) - 6) * 0.1f;
      B[i] = static_cast<float>((i * 5 % 11) - 5) * 0.1f;
    }
    GemmArgs g;
    g.m = g.n = g.k = n;
    g.a = A.data();
    g.b = B.data();
    g.c = C.data();
    g.lda = g.ldb = g.ldc = n;
    double flops = 2.0 * n * n * n;
    int reps = static_cast<int>(2e9 / flops) + 3;
    std::vector<double> ts;
    for (int r = 0; r < reps; ++r) {
      double t0 = now();
      sgemm(*kt, g);
      ts.push_back(now() - t0);
    }
    std::sort(ts.begin(), ts.end());
    double med = ts[ts.size() / 2], best = ts[0];
    std::printf("n %5ld  median %8.3f ms  %7.1f GFLOP/s (%5.1f%% of %d-thread peak)  best %7.1f\n", n,
                med * 1e3, flops / med / 1e9, 100.0 * flops / med / (best_peak * threads), threads,
                flops / best / 1e9);
  }
  return 0;
}
