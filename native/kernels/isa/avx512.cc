// AVX-512 (F, BW, DQ, VL) kernels. Compiled with -mavx512f -mavx512bw
// -mavx512dq -mavx512vl -mavx2 -mfma; everything here has internal linkage.
#include <immintrin.h>

#include "../kernel_table.h"

namespace attn {
namespace {

struct Ops {
  using V = __m512;
  static constexpr int W = 16;
  static constexpr int kGemmMr = 14;  // 28 accumulators + 2 B vectors + 1 broadcast
  static constexpr int kGemmNv = 2;
  static constexpr int kSmallRows = 4;
  static constexpr int kSmallVecs = 4;
  static constexpr int kPeakChains = 24;
  static constexpr long kAttnKeyBlock = 128;

  static __mmask16 first(long n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V load_n(const float* p, long n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store_n(float* p, V v, long n) { _mm512_mask_storeu_ps(p, first(n), v); }
  // A store that bypasses the caches, to a kStreamAlign-byte aligned p; fence()
  // orders such stores before what follows.
  static constexpr long kStreamAlign = 64;
  static void stream(float* p, V v) { _mm512_stream_ps(p, v); }
  static void fence() { _mm_sfence(); }
  static V keep_n(V v, long n, float f) { return _mm512_mask_blend_ps(first(n), _mm512_set1_ps(f), v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float fma1(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  // x - round(x) (to nearest, ties to even) in one instruction, exact; 0
  // for infinities, NaN for NaN. vexp2_nonpos takes n = x - r from it.
  static constexpr bool kHasReduce = true;
  static V reduce_nearest(V x) { return _mm512_reduce_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // To the nearest integer, ties to even (|x| < 2^22 in every use).
  static V round_nearest(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V abs(V x) { return _mm512_abs_ps(x); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  // x where a < b, else y.
  static V select_lt(V a, V b, V x, V y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
  }
  static V copysign(V mag, V sgn) {
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(sign, _mm512_castps_si512(sgn),
                                                         _mm512_castps_si512(mag), 0xca));  // sign ? sgn : mag
  }
  static float hsum(V v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static float hmax(V v) {
    __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  // vscalefps: p * 2^floor(n), with exact gradual underflow and overflow.
  static V scale_pow2(V p, V n) { return _mm512_scalef_ps(p, n); }
  // 16 x 16: 4 x 4 transposes inside each 128-bit lane, then a 4 x 4
  // transpose of the lanes themselves.
  static void transpose(V* r) {
    V v[16];
    for (int a = 0; a < 4; ++a) {
      V u0 = _mm512_unpacklo_ps(r[4 * a + 0], r[4 * a + 1]);
      V u1 = _mm512_unpackhi_ps(r[4 * a + 0], r[4 * a + 1]);
      V u2 = _mm512_unpacklo_ps(r[4 * a + 2], r[4 * a + 3]);
      V u3 = _mm512_unpackhi_ps(r[4 * a + 2], r[4 * a + 3]);
      v[4 * a + 0] = pd_lo(u0, u2);
      v[4 * a + 1] = pd_hi(u0, u2);
      v[4 * a + 2] = pd_lo(u1, u3);
      v[4 * a + 3] = pd_hi(u1, u3);
    }
    // v[4a + c] holds column c + 4q of rows 4a..4a+3 in 128-bit lane q.
    for (int c = 0; c < 4; ++c) {
      V w0 = _mm512_shuffle_f32x4(v[c], v[4 + c], 0x44);
      V w1 = _mm512_shuffle_f32x4(v[c], v[4 + c], 0xee);
      V w2 = _mm512_shuffle_f32x4(v[8 + c], v[12 + c], 0x44);
      V w3 = _mm512_shuffle_f32x4(v[8 + c], v[12 + c], 0xee);
      r[c + 0] = _mm512_shuffle_f32x4(w0, w2, 0x88);
      r[c + 4] = _mm512_shuffle_f32x4(w0, w2, 0xdd);
      r[c + 8] = _mm512_shuffle_f32x4(w1, w3, 0x88);
      r[c + 12] = _mm512_shuffle_f32x4(w1, w3, 0xdd);
    }
  }
  static V pd_lo(V a, V b) {
    return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  }
  static V pd_hi(V a, V b) {
    return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  }
  static V neg_inf_where(V z, const std::uint8_t* m, long n) {
    __m128i bytes = n == W ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(m))
                           : _mm_maskz_loadu_epi8(first(n), m);
    __mmask16 masked = _mm_test_epi8_mask(bytes, bytes);
    return _mm512_mask_blend_ps(masked, z, _mm512_set1_ps(-__builtin_inff()));
  }
};

#include "body.inc"

constexpr KernelTable kTable = make_table(Isa::kAvx512, "avx512");

}  // namespace

const KernelTable* avx512_kernels() noexcept { return &kTable; }

}  // namespace attn
