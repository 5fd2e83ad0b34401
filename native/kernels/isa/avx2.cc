// AVX2 + FMA kernels. Compiled with -mavx2 -mfma; internal linkage only.
#include <immintrin.h>

#include <cstring>

#include "../kernel_table.h"

namespace attn {
namespace {

struct Ops {
  using V = __m256;
  static constexpr int W = 8;
  static constexpr int kGemmMr = 6;
  static constexpr int kGemmNv = 2;
  static constexpr int kSmallRows = 4;
  static constexpr int kSmallVecs = 2;
  static constexpr int kPeakChains = 12;
  static constexpr long kAttnKeyBlock = 128;

  static __m256i first(long n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V load_n(const float* p, long n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_n(float* p, V v, long n) { _mm256_maskstore_ps(p, first(n), v); }
  // A store that bypasses the caches, to a kStreamAlign-byte aligned p; fence()
  // orders such stores before what follows.
  static constexpr long kStreamAlign = 32;
  static void stream(float* p, V v) { _mm256_stream_ps(p, v); }
  static void fence() { _mm_sfence(); }
  static V keep_n(V v, long n, float f) {
    return _mm256_blendv_ps(_mm256_set1_ps(f), v, _mm256_castsi256_ps(first(n)));
  }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float fma1(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static constexpr bool kHasReduce = false;  // no one-step x - round(x): see vexp2_nonpos
  // To the nearest integer, ties to even (|x| < 2^22 in every use).
  static V round_nearest(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V abs(V x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  // x where a < b, else y.
  static V select_lt(V a, V b, V x, V y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
  static V copysign(V mag, V sgn) {
    const V sign = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(sign, mag), _mm256_and_ps(sign, sgn));
  }
  static float hsum(V v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static float hmax(V v) {
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  // p * 2^n as two exact power-of-two factors, so n down to -150 underflows
  // gradually and n = 128 overflows to inf.
  static V scale_pow2(V p, V n) {
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    V s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    V s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  }
  // 8 x 8: 4 x 4 transposes inside each 128-bit half, then swap halves.
  static void transpose(V* r) {
    V v[8];
    for (int a = 0; a < 2; ++a) {
      V u0 = _mm256_unpacklo_ps(r[4 * a + 0], r[4 * a + 1]);
      V u1 = _mm256_unpackhi_ps(r[4 * a + 0], r[4 * a + 1]);
      V u2 = _mm256_unpacklo_ps(r[4 * a + 2], r[4 * a + 3]);
      V u3 = _mm256_unpackhi_ps(r[4 * a + 2], r[4 * a + 3]);
      v[4 * a + 0] = _mm256_shuffle_ps(u0, u2, 0x44);
      v[4 * a + 1] = _mm256_shuffle_ps(u0, u2, 0xee);
      v[4 * a + 2] = _mm256_shuffle_ps(u1, u3, 0x44);
      v[4 * a + 3] = _mm256_shuffle_ps(u1, u3, 0xee);
    }
    for (int c = 0; c < 4; ++c) {
      r[c] = _mm256_permute2f128_ps(v[c], v[4 + c], 0x20);
      r[c + 4] = _mm256_permute2f128_ps(v[c], v[4 + c], 0x31);
    }
  }
  static V neg_inf_where(V z, const std::uint8_t* m, long n) {
    long long raw = 0;
    std::memcpy(&raw, m, static_cast<std::size_t>(n));
    __m256i w = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(raw));
    __m256i zero_lanes = _mm256_cmpeq_epi32(w, _mm256_setzero_si256());
    return _mm256_blendv_ps(_mm256_set1_ps(-__builtin_inff()), z, _mm256_castsi256_ps(zero_lanes));
  }
};

#include "body.inc"

constexpr KernelTable kTable = make_table(Isa::kAvx2, "avx2");

}  // namespace

const KernelTable* avx2_kernels() noexcept { return &kTable; }

}  // namespace attn
