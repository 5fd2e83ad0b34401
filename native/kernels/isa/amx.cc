// AMX (tile) kernels for float32 products: B is packed into the tile layout
// once per weight (or per call for an unpacked product), A as it goes. Compiled
// with the AVX-512 flags plus -mamx-tile -mamx-bf16; everything here has
// internal linkage but the table accessor.
//
// A float32 x is exactly x0 + x1 + x2 with three bfloat16s: x0 is x with its
// low 16 bits cleared, x1 the same of the remainder x - x0 (exact in float32),
// x2 what is left (at most 8 significant bits: exact in bfloat16). A product
// a b is then the sum of the nine ai bj; the six with i + j <= 2 are kept
// (each dropped one is below 2^-24 |a b|), each exact in float32 and summed
// by the tile unit into float32 accumulators. So the result has float32's
// accuracy (bounded like a float32 dot product of 6k terms), from a unit that
// runs 16 times as many multiply-adds per cycle as two 512-bit FMA ports.
//
// Layouts (uint16 = one bfloat16; a "step" is 32 values of k):
//   A group: 32 rows of A for kc values of k, step t, part p (x0, x1, x2) at
//     ((t * 3 + p) * 32 + row) * 32, the row's 32 k values in order;
//   B panel: 32 columns for all of k, step t, part q, tile j (columns
//     16 j .. 16 j + 15) at ((t * 3 + q) * 2 + j) * 512, pair-row r holding
//     (B[32 t + 2 r][col], B[32 t + 2 r + 1][col]) for its 16 columns.
// Subnormal parts are read as zeros by the tile unit, which rounds to nearest
// and flushes subnormal results (the other kernels' mode as well).
//
// A compiler without the tile intrinsics (GCC before 11) builds this unit
// without its flags (native/sources.js, CMakeLists.txt): amx_kernels() is
// then null and the path absent.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "../kernel_table.h"

namespace attn {

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
namespace {

// Tile registers: C blocks 0-3 (rows 16 i, columns 16 j: tile 2 i + j), A 4-5, B 6-7.
struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

void amx_begin() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  // GCC 12 does not count ldtilecfg as a read of cfg and drops the stores
  // above as dead: the empty asm makes them visible.
  __asm__ __volatile__("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

void amx_end() { _tile_release(); }

// The three parts of 16 floats as bfloat16 bit patterns (the high halves of
// the float32 parts). NaN stays NaN in x0 (its quiet bit is set), and an
// infinity or NaN has no lower parts.
inline void split16(__m512 x, __m256i* p0, __m256i* p1, __m256i* p2) {
  const __m512i hi_mask = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  const __mmask16 nonfinite = _mm512_fpclass_ps_mask(x, 0x99);  // NaN or infinity
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  __m512i xi = _mm512_castps_si512(x);
  xi = _mm512_mask_or_epi32(xi, nan, xi, _mm512_set1_epi32(0x00400000));
  const __m512i h0 = _mm512_and_si512(xi, hi_mask);
  const __m512 r1 = _mm512_maskz_sub_ps(static_cast<__mmask16>(~nonfinite), x, _mm512_castsi512_ps(h0));
  const __m512i h1 = _mm512_and_si512(_mm512_castps_si512(r1), hi_mask);
  const __m512 r2 = _mm512_sub_ps(r1, _mm512_castsi512_ps(h1));
  *p0 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(h0, 16));
  *p1 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(h1, 16));
  *p2 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(r2), 16));
}

// Packs `rows` (<= 32) rows of A (row i at a + i * lda, k contiguous) for kc
// values of k into one A group; rows past `rows` and k past kc are zeros.
void amx_split_a(const float* a, long lda, long rows, long kc, std::uint16_t* dst) {
  const long steps = (kc + 31) / 32;
  for (long t = 0; t < steps; ++t) {
    const long left = kc - 32 * t;
    const __mmask16 m0 = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1u);
    const __mmask16 m1 = left >= 32 ? 0xffff : left <= 16 ? 0 : static_cast<__mmask16>((1u << (left - 16)) - 1u);
    std::uint16_t* out = dst + t * 3 * 1024;
    for (long r = 0; r < 32; ++r) {
      __m256i q[6];
      if (r < rows) {
        const float* src = a + r * lda + 32 * t;
        split16(_mm512_maskz_loadu_ps(m0, src), &q[0], &q[2], &q[4]);
        split16(_mm512_maskz_loadu_ps(m1, src + 16), &q[1], &q[3], &q[5]);
      } else {
        for (int i = 0; i < 6; ++i) q[i] = _mm256_setzero_si256();
      }
      for (int p = 0; p < 3; ++p) {
        const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(q[2 * p]), q[2 * p + 1], 1);
        _mm512_storeu_si512(out + (p * 32 + r) * 32, v);
      }
    }
  }
}

// The four tile products of a 32 x 32 block from the A tiles 4-5 and the B
// tiles 6-7 into C tiles 0-3 (tile 2 i + j: rows 16 i, columns 16 j).
inline __attribute__((always_inline)) void products() {
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(1, 4, 7);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}

// Packs kc rows of a float32 B panel (32 columns, rows ld floats apart) into
// one B panel of the layout above; k past kc is zeros.
void amx_split_b(const float* src, long ld, long kc, std::uint16_t* dst) {
  // Lane 2 c of a tile row takes column c of row 2 r, lane 2 c + 1 the same of row 2 r + 1.
  alignas(64) static constexpr std::uint16_t kPairs[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                           8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i pairs = _mm512_load_si512(kPairs);
  const long steps = (kc + 31) / 32;
  for (long t = 0; t < steps; ++t)
    for (long r = 0; r < 16; ++r) {
      const long k0 = 32 * t + 2 * r;
      __m256i q[2][2][3];  // [row of the pair][16-column half][part]
      for (int e = 0; e < 2; ++e)
        for (int j = 0; j < 2; ++j) {
          const __m512 x = k0 + e < kc ? _mm512_loadu_ps(src + (k0 + e) * ld + 16 * j) : _mm512_setzero_ps();
          split16(x, &q[e][j][0], &q[e][j][1], &q[e][j][2]);
        }
      for (int j = 0; j < 2; ++j)
        for (int part = 0; part < 3; ++part) {
          const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(q[0][j][part]), q[1][j][part], 1);
          _mm512_storeu_si512(dst + ((t * 3 + part) * 2 + j) * 512 + r * 32, _mm512_permutexvar_epi16(pairs, both));
        }
    }
}

// Whether rows x cols of a matrix (rows lda floats apart) hold an infinity:
// an infinite part times a zero part of the other operand is NaN, so such a
// product is left to the FMA path.
bool amx_has_infinity(const float* a, long lda, long rows, long cols) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  __mmask16 any = 0;
  for (long i = 0; i < rows; ++i) {
    const float* row = a + i * lda;
    long j = 0;
    for (; j + 16 <= cols; j += 16) any |= _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(row + j)), inf, _CMP_EQ_OQ);
    if (j < cols) {
      const __mmask16 m = static_cast<__mmask16>((1u << (cols - j)) - 1u);
      any |= _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, row + j)), inf, _CMP_EQ_OQ);
    }
    if (any) return true;
  }
  return false;
}

// C (+)= A B for one 32 x 32 block over `steps` steps of k: the accumulators
// start from zero (init 0), from C (1) or from the 32 floats at `bias` in
// every row (2), and are stored back into C (ldc floats apart).
void amx_block(long steps, const std::uint16_t* a, const std::uint16_t* b, float* c, long ldc, int init,
               const float* bias) {
  const long cs = ldc * static_cast<long>(sizeof(float));
  if (init == 1) {
    _tile_loadd(0, c, cs);
    _tile_loadd(1, c + 16, cs);
    _tile_loadd(2, c + 16 * ldc, cs);
    _tile_loadd(3, c + 16 * ldc + 16, cs);
  } else if (init == 2) {
    const long zero = 0;
    _tile_loadd(0, bias, zero);
    _tile_loadd(1, bias + 16, zero);
    _tile_loadd(2, bias, zero);
    _tile_loadd(3, bias + 16, zero);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  constexpr long kRow = 64;  // bytes per tile row
  // a0 b0, a0 b1, a0 b2, a1 b1, a1 b0, a2 b0: each load feeds two tile
  // products; the hardware's own prefetch brings the A and B streams from
  // L2. This plain order measured faster than loads moved ahead of their
  // use or software prefetches into L1 (which take the load ports the tiles
  // need); fetching the next B panel into L2 meanwhile gained nothing.
  for (long t = 0; t < steps; ++t) {
    const std::uint16_t* at = a + t * 3 * 1024;
    const std::uint16_t* bt = b + t * 3 * 1024;
    _tile_loadd(4, at, kRow);
    _tile_loadd(5, at + 512, kRow);
    _tile_loadd(6, bt, kRow);
    _tile_loadd(7, bt + 512, kRow);
    products();
    _tile_loadd(6, bt + 1024, kRow);
    _tile_loadd(7, bt + 1536, kRow);
    products();
    _tile_loadd(6, bt + 2048, kRow);
    _tile_loadd(7, bt + 2560, kRow);
    products();
    _tile_loadd(4, at + 1024, kRow);
    _tile_loadd(5, at + 1536, kRow);
    _tile_loadd(6, bt + 1024, kRow);
    _tile_loadd(7, bt + 1536, kRow);
    products();
    _tile_loadd(6, bt, kRow);
    _tile_loadd(7, bt + 512, kRow);
    products();
    _tile_loadd(4, at + 2048, kRow);
    _tile_loadd(5, at + 2560, kRow);
    products();
  }
  _tile_stored(0, c, cs);
  _tile_stored(1, c + 16, cs);
  _tile_stored(2, c + 16 * ldc, cs);
  _tile_stored(3, c + 16 * ldc + 16, cs);
}

constexpr AmxKernels kAmx = {&amx_begin, &amx_end, &amx_split_a, &amx_split_b, &amx_block, &amx_has_infinity};

}  // namespace

const KernelTable* amx_kernels() noexcept {
  static const KernelTable table = [] {
    KernelTable t = *avx512_kernels();
    t.isa = Isa::kAmx;
    t.name = "amx";
    t.amx = &kAmx;
    return t;
  }();
  return &table;
}
#else
const KernelTable* amx_kernels() noexcept { return nullptr; }
#endif

}  // namespace attn
