// The per-ISA kernel table. Each ISA's translation unit fills one of these with
// internal-linkage functions (isa/body.inc, field by field: each field is named
// after the function it holds); the dispatcher picks one table per process.
// Pure C++17: no Node headers, testable on its own.
#pragma once

#include <cstddef>
#include <cstdint>

namespace attn {

// kAmx: the AVX-512 table, with float32 products against packed weights on
// the tile unit (see AmxKernels).
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3, kAmx = 4 };

// Elementwise activations, as the GEMM epilogue and activation_array take
// them (plain ints in the table's signatures).
enum Activation : int {
  kActNone = 0,
  kActRelu = 1,      // max(x, 0)
  kActGelu = 2,      // x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
  kActGeluTanh = 3,  // x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2
};
constexpr int kActivationCount = 4;
// Added to the micro-kernels' act: a tile's full-width rows go past the
// caches (C is a new result nobody has read: ordinary stores would read each
// line first) and C is not prefetched. Only with beta == 0, no activation,
// and C's rows kStreamAlign-aligned at every tile (the caller checks); the
// caller then orders the stores with fence().
constexpr int kStoreStream = 1 << 4;


// Unpacked GEMM on a sub-range of C: C[i0:i1, j0:j1] = alpha * A B + beta * C.
// Element (i, k) of A is a[i * rsa + k * csa]; element (k, j) of B is
// b[k * rsb + j * csb]; C is row-major with leading dimension ldc.
// Row form (dot == false) needs csb == 1: broadcast A, stream rows of B.
// Dot form (dot == true) needs csa == 1 and rsb == 1: dot products along k.
struct SmallGemm {
  bool dot;
  long m, n, k;
  const float* a;
  long rsa, csa;
  const float* b;
  long rsb, csb;
  float* c;
  long ldc;
  float alpha, beta;
  const float* bias;  // per column of C, or null
  int act;            // Activation applied last: C = act(alpha A B + beta C + bias)
};

// Tile-unit pieces of the products with packed weights (isa/amx.cc has the
// layouts and the arithmetic). begin() configures this thread's tiles and
// end() releases them: a thread calls split_a and block only between the two.
// split_a packs rows (<= 32) x kc of A (rows lda floats apart) into an A
// group; block runs C (+)= A B on a 32 x 32 block of C for `steps` steps of
// 32 values of k, from zero (init 0), C (1) or bias rows (2, 32 floats).
struct AmxKernels {
  void (*begin)();
  void (*end)();
  void (*split_a)(const float* a, long lda, long rows, long kc, std::uint16_t* dst);
  // Packs kc rows of a float32 panel of 32 columns (rows ld floats apart)
  // into a B panel.
  void (*split_b)(const float* src, long ld, long kc, std::uint16_t* dst);
  void (*block)(long steps, const std::uint16_t* a, const std::uint16_t* b, float* c, long ldc, int init,
                const float* bias);
  // Whether rows x cols of a matrix (rows ld floats apart) hold an infinity
  // (such products stay on the FMA path).
  bool (*has_infinity)(const float* a, long ld, long rows, long cols);
};

struct KernelTable {
  Isa isa;
  const char* name;
  int vector_width;  // float lanes per register

  // Packed GEMM micro-kernel: an m x n tile of C (m <= mr, n <= nr) from kc
  // steps of packed A (mr floats per step, the first m used) and packed B (nr
  // floats per step): C = act(alpha * acc + beta * C (+ bias[0:n] when bias
  // is not null)), act an Activation (kActNone: none; or kStoreStream); C is
  // not read when beta == 0. A row's result does not depend on m.
  int mr, nr;
  // Keys per block of the fused attention kernel (a multiple of nr): the row
  // stride of its score tile.
  long attn_key_block;
  void (*gemm_micro)(long kc, const float* a, const float* b, float* c, long ldc,
                     float alpha, float beta, int m, int n, const float* bias, int act);
  // The same, prefetching the panels into L1 ahead of use (for cores whose L1
  // prefetcher does not keep up; see tuning.h). Bitwise the same results.
  void (*gemm_micro_prefetch)(long kc, const float* a, const float* b, float* c, long ldc,
                              float alpha, float beta, int m, int n, const float* bias, int act);
  // The same, also fetching B a few KiB ahead into L2: for weights that
  // stream from L3 or memory (a short request's). Bitwise the same results.
  void (*gemm_micro_stream)(long kc, const float* a, const float* b, float* c, long ldc,
                            float alpha, float beta, int m, int n, const float* bias, int act);
  // A tile of m <= narrow_rows rows from a compact A panel m floats wide
  // (a[p * m + r]; one row: the row itself, contiguous), without software
  // prefetch: for products of a few rows against packed weights. Bitwise the
  // same as gemm_micro on the same rows.
  int narrow_rows;
  void (*gemm_micro_narrow)(long kc, const float* a, const float* b, float* c, long ldc,
                            float alpha, float beta, int m, int n, const float* bias, int act);
  // Two tiles of C from one B micro-panel, m0 and m1 rows (<= mr; packed A
  // panels a0 and a1, C at c0 and c1), a chunk of k at a time, so that the
  // panel is streamed once. Bitwise the same as gemm_micro on each tile. The
  // first tile prefetches as gemm_micro (prefetch 0), gemm_micro_prefetch (1)
  // or gemm_micro_stream (2) does.
  void (*gemm_micro_pair)(long kc, const float* a0, int m0, const float* a1, int m1, const float* b, float* c0,
                          float* c1, long ldc, float alpha, float beta, int n, const float* bias, int act,
                          int prefetch);
  // Packs a panel for the micro-kernel: dst[k * w + l] = src[l * ls + k * ks]
  // for l < lanes (zero up to w), k < kc. w is mr (A) or nr (B). The lanes
  // [lanes, lanes + ahead) of src are the next panel's, fetched meanwhile.
  void (*pack_panel)(const float* src, long ls, long ks, long lanes, long kc, int w, long ahead, float* dst);
  void (*gemm_small)(const SmallGemm& g, long i0, long i1, long j0, long j1);

  // One softmax row of n entries: z = scale * x (+ fmask) (uint8 mask: nonzero
  // -> -inf); entries at or after `valid` are excluded and written as 0.
  // y may alias x. fmask and umask may be null; they hold n entries.
  // next_x / next_y (may be null): the row that follows, prefetched meanwhile.
  void (*softmax_row)(const float* x, float* y, long n, long valid, float scale,
                      const float* fmask, const std::uint8_t* umask, const float* next_x,
                      float* next_y);
  // softmax_row with the exponentials staged in `stage` (n floats) and y
  // written past the caches (next_y is not fetched); the caller then orders
  // the stores with fence().
  void (*softmax_row_streamed)(const float* x, float* y, long n, long valid, float scale,
                               const float* fmask, const std::uint8_t* umask, const float* next_x,
                               float* stage);
  void (*fence)();
  // `rows` rows of n entries, no mask, every entry live, scale >= 0 (x rows
  // ldx apart, y rows ldy apart; a y row may be its own x row, no other
  // overlap): three rows at a time in a pipeline of softmax_row's passes,
  // each row's result softmax_row's bit for bit; prefetch: fetch the next
  // rows meanwhile (for rows that come from beyond L2); stage (2 n floats,
  // or null): write y past the caches, the rows staged there first (then
  // fence(), as for softmax_row_streamed).
  void (*softmax_rows)(const float* x, long ldx, float* y, long ldy, long rows, long n, float scale,
                       bool prefetch, float* stage);

  // y[i] = exp(x[i]), tanh(x[i]) and erf(x[i]); exposed for accuracy tests.
  void (*exp_array)(const float* x, float* y, long n);
  void (*tanh_array)(const float* x, float* y, long n);
  void (*erf_array)(const float* x, float* y, long n);
  // y[i] = act(x[i]) for an Activation act; y may be x.
  void (*activation_array)(int act, const float* x, float* y, long n);
  // activation_array with y written past the caches where it is aligned (a
  // new result: see softmax_row_streamed); then fence(). The same values.
  void (*activation_array_streamed)(int act, const float* x, float* y, long n);

  // One LayerNorm row of n entries: z = x (+ r) (+ shift), then
  // y = (z - mean(z)) / sqrt(var(z) + eps) (* gamma) (+ beta), and z itself
  // into sum when it is not null (a pre-norm layer's residual stream). r,
  // shift, gamma, beta and sum may be null; y and sum may each be x or r,
  // not each other. The statistics are taken in float32 from z minus the
  // row's first entry (exact for rows far from 0), so a large mean costs no
  // accuracy.
  void (*layer_norm_row)(const float* x, const float* r, const float* shift, const float* gamma,
                         const float* beta, float* y, float* sum, long n, float eps);
  // layer_norm_row with its intermediate row in `stage` (n floats) and y
  // written past the caches; then fence(). The same bits.
  void (*layer_norm_row_streamed)(const float* x, const float* r, const float* shift, const float* gamma,
                                  const float* beta, float* y, float* sum, long n, float eps, float* stage);

  // Additive attention scores for one query row:
  // out[j] = sum_h w[h] * tanh(qb[h] + pk[j * pk_stride + h]), j < sk, h < hd.
  void (*additive_row)(const float* qb, const float* pk, long sk, long pk_stride, long hd,
                       const float* w, float* out);

  // Fused attention pieces (see attention.cc), in base 2 (log2 e folded into
  // the packed queries). attn_scores: the score tile of a block (rows x bk,
  // rows attn_key_block apart) from Q packed in mr-row panels (ldq 0) or in
  // rows ldq floats apart (ldq 64 or 128, dk <= ldq) and K^T in nr-wide
  // panels, with each row's maximum. attn_pv_block: O = O * rescale[r]
  // + P V for the block, V in nr-wide panels vstride floats apart, ldv
  // floats from one key to the next (packed: nr; in place: the row stride)
  // (direct: O = P V * rescale[r], O not read; with `out`, the rows' last
  // block: out row r = (O * rescale[r] + P V) * inv[r], O left as it was).
  // attn_online_softmax: one key block of the online softmax (block_max, when
  // given, is each row's maximum and every entry is live); l holds
  // vector_width partial sums per row. attn_mask_row: add fscale * a float
  // mask, or apply a uint8 mask.
  void (*attn_scores)(long dk, const float* qp, long ldq, const float* ktp, long rows, long bk, float* tile,
                      float* rowmax);
  void (*attn_pv_block)(long bk, const float* tile, const float* vpk, long vstride, long ldv, long rows, long dv,
                        float* o, long ldo, const float* rescale, bool direct, float* out, long out_stride,
                        const float* inv);
  void (*attn_online_softmax)(float* s, long lds, long rows, long cols, const long* valid,
                              const float* block_max, float* m, float* l, float* rescale);
  void (*attn_mask_row)(float* s, long n, const float* fmask, long fstride, float fscale,
                        const std::uint8_t* umask, long ustride);
  // x[0:n] *= s.
  void (*scale)(float* x, long n, float s);

  // Runs `iterations` rounds of independent FMAs and returns the flop count;
  // the benchmark divides by the elapsed time to get this core's FMA peak.
  double (*fma_peak)(long iterations);

  // The tile unit's pieces, or null where the table has none.
  const AmxKernels* amx;
};

// The tables compiled into this binary: scalar everywhere, avx2, avx512 and
// amx on x86-64, neon on arm64. Each is declared only where it is built, so
// naming one on another architecture fails to compile. They do not check the
// CPU (see dispatch.h) and never return null, but amx_kernels() does when the
// compiler had no tile intrinsics.
const KernelTable* scalar_kernels() noexcept;
#if defined(__x86_64__)
const KernelTable* avx2_kernels() noexcept;
const KernelTable* avx512_kernels() noexcept;
const KernelTable* amx_kernels() noexcept;
#endif
#if defined(__aarch64__)
const KernelTable* neon_kernels() noexcept;
#endif

}  // namespace attn
