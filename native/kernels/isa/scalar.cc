// Portable scalar kernels: one float per "register". The reference path, and
// the fallback on CPUs without a vector path here. Baseline flags, internal
// linkage only; compiled with -ffp-contract=off so a * b + c stays two
// roundings on every compiler.
#include <cstring>

#include "../kernel_table.h"

namespace attn {
namespace {

struct Ops {
  using V = float;
  static constexpr int W = 1;
  static constexpr int kGemmMr = 4;
  static constexpr int kGemmNv = 4;
  static constexpr int kSmallRows = 4;
  static constexpr int kSmallVecs = 4;
  static constexpr int kPeakChains = 8;
  static constexpr long kAttnKeyBlock = 128;

  static V zero() { return 0.0f; }
  static V set1(float x) { return x; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V load_n(const float* p, long n) { return n > 0 ? *p : 0.0f; }
  static void store_n(float* p, V v, long n) {
    if (n > 0) *p = v;
  }
  // No store that bypasses the caches here: stream() is a plain store.
  static constexpr long kStreamAlign = static_cast<long>(sizeof(V));
  static void stream(float* p, V v) { store(p, v); }
  static void fence() {}
  static V keep_n(V v, long n, float f) { return n > 0 ? v : f; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static float fma1(float a, float b, float c) { return a * b + c; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V min(V a, V b) { return a < b ? a : b; }  // b when unordered
  static V max(V a, V b) { return a > b ? a : b; }
  static constexpr bool kHasReduce = false;  // no one-step x - round(x): see vexp2_nonpos
  // To the nearest integer, ties to even, for |x| < 2^22: adding 1.5 * 2^23
  // leaves no fraction bits.
  static V round_nearest(V x) { return (x + 12582912.0f) - 12582912.0f; }
  static V abs(V x) { return __builtin_fabsf(x); }
  static V div(V a, V b) { return a / b; }
  // x where a < b, else y.
  static V select_lt(V a, V b, V x, V y) { return a < b ? x : y; }
  static V copysign(V mag, V sgn) { return __builtin_copysignf(mag, sgn); }
  static float hsum(V v) { return v; }
  static float hmax(V v) { return v; }
  static float pow2i(int e) {
    unsigned bits = static_cast<unsigned>(e + 127) << 23;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  static V scale_pow2(V p, V n) {
    int ni = static_cast<int>(n);
    int n1 = ni >> 1;
    return p * pow2i(n1) * pow2i(ni - n1);
  }
  static void transpose(V*) {}
  static V neg_inf_where(V z, const std::uint8_t* m, long n) {
    return (n > 0 && *m != 0) ? -__builtin_inff() : z;
  }
};

#include "body.inc"

constexpr KernelTable kTable = make_table(Isa::kScalar, "scalar");

}  // namespace

const KernelTable* scalar_kernels() noexcept { return &kTable; }

}  // namespace attn
