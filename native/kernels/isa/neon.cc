// AArch64 Advanced SIMD (NEON) kernels: baseline on arm64, so no extra flags.
// Internal linkage only.
#include <arm_neon.h>

#include <cstring>

#include "../kernel_table.h"

namespace attn {
namespace {

struct Ops {
  using V = float32x4_t;
  static constexpr int W = 4;
  static constexpr int kGemmMr = 8;
  static constexpr int kGemmNv = 3;
  static constexpr int kSmallRows = 4;
  static constexpr int kSmallVecs = 4;
  static constexpr int kPeakChains = 24;
  static constexpr long kAttnKeyBlock = 96;

  static V zero() { return vdupq_n_f32(0.0f); }
  static V set1(float x) { return vdupq_n_f32(x); }
  static V load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
  static V load_n(const float* p, long n) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    std::memcpy(t, p, static_cast<std::size_t>(n) * sizeof(float));
    return vld1q_f32(t);
  }
  static void store_n(float* p, V v, long n) {
    float t[4];
    vst1q_f32(t, v);
    std::memcpy(p, t, static_cast<std::size_t>(n) * sizeof(float));
  }
  // No store that bypasses the caches here: stream() is a plain store.
  static constexpr long kStreamAlign = static_cast<long>(sizeof(V));
  static void stream(float* p, V v) { store(p, v); }
  static void fence() {}
  static uint32x4_t first(long n) {
    const uint32_t idx[4] = {0, 1, 2, 3};
    return vcltq_u32(vld1q_u32(idx), vdupq_n_u32(static_cast<uint32_t>(n)));
  }
  static V keep_n(V v, long n, float f) { return vbslq_f32(first(n), v, vdupq_n_f32(f)); }
  static V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static float fma1(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
  static V add(V a, V b) { return vaddq_f32(a, b); }
  static V sub(V a, V b) { return vsubq_f32(a, b); }
  static V mul(V a, V b) { return vmulq_f32(a, b); }
  static V min(V a, V b) { return vminq_f32(a, b); }  // NaN-propagating
  static V max(V a, V b) { return vmaxq_f32(a, b); }
  static constexpr bool kHasReduce = false;  // no one-step x - round(x): see vexp2_nonpos
  // To the nearest integer, ties to even (|x| < 2^22 in every use).
  static V round_nearest(V x) { return vrndnq_f32(x); }
  static V abs(V x) { return vabsq_f32(x); }
  static V div(V a, V b) { return vdivq_f32(a, b); }
  // x where a < b, else y.
  static V select_lt(V a, V b, V x, V y) { return vbslq_f32(vcltq_f32(a, b), x, y); }
  static V copysign(V mag, V sgn) { return vbslq_f32(vdupq_n_u32(0x80000000u), sgn, mag); }
  static float hsum(V v) { return vaddvq_f32(v); }
  static float hmax(V v) { return vmaxvq_f32(v); }
  static V scale_pow2(V p, V n) {
    int32x4_t ni = vcvtq_s32_f32(n);
    int32x4_t n1 = vshrq_n_s32(ni, 1);
    int32x4_t n2 = vsubq_s32(ni, n1);
    const int32x4_t bias = vdupq_n_s32(127);
    V s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
    V s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
  }
  static void transpose(V* r) {
    V t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
    V t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
    r[0] = d_lo(t0, t2);
    r[1] = d_lo(t1, t3);
    r[2] = d_hi(t0, t2);
    r[3] = d_hi(t1, t3);
  }
  static V d_lo(V a, V b) {
    return vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b)));
  }
  static V d_hi(V a, V b) {
    return vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b)));
  }
  static V neg_inf_where(V z, const std::uint8_t* m, long n) {
    uint32_t w[4] = {0, 0, 0, 0};
    for (long i = 0; i < n; ++i) w[i] = m[i];
    uint32x4_t keep = vceqq_u32(vld1q_u32(w), vdupq_n_u32(0));
    return vbslq_f32(keep, z, vdupq_n_f32(-__builtin_inff()));
  }
};

#include "body.inc"

constexpr KernelTable kTable = make_table(Isa::kNeon, "neon");

}  // namespace

const KernelTable* neon_kernels() noexcept { return &kTable; }

}  // namespace attn
