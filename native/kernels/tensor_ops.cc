#include "tensor_ops.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../runtime/fp_env.h"
#include "../runtime/thread_pool.h"
#include "tuning.h"

namespace attn {
namespace {

constexpr long kCopyPerTask = 1L << 16;

// Stores of one row of a transposed tile: past the caches (x86-64: SSE2's
// streaming stores, 16 bytes at a time where aligned, else 4), or ordinary.
template <class T>
inline void put_row(T* dr, const T* tile, long stride, long w, bool stream) {
#if defined(__SSE2__)
  if constexpr (sizeof(T) == 4) {
    if (stream) {
      long j = 0;
      if (reinterpret_cast<std::uintptr_t>(dr) % 16 == 0) {
        for (; j + 4 <= w; j += 4) {
          _mm_stream_ps(reinterpret_cast<float*>(dr + j),
                        _mm_setr_ps(tile[j * stride], tile[(j + 1) * stride], tile[(j + 2) * stride], tile[(j + 3) * stride]));
        }
      }
      for (; j < w; ++j) {
        int v;
        std::memcpy(&v, &tile[j * stride], 4);
        _mm_stream_si32(reinterpret_cast<int*>(dr + j), v);
      }
      return;
    }
  }
#endif
  (void)stream;
  for (long j = 0; j < w; ++j) dr[j] = tile[j * stride];
}

// Orders a task's streamed stores (put_row, copy_run) before the task counts
// as done; nothing when it streamed none.
inline void fence_streamed(bool stream) {
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#endif
  (void)stream;
}

// A copy whose source runs along another axis `a` than the destination's
// last one (a transpose or a permute, made contiguous). Row by row, each
// element read would be a cache line of its own, and for a large source its
// lines, a power of two apart, fall into one cache set and are gone before
// the next row would reuse them. Here square tiles over the two axes go
// through a buffer in L1: each source line is read whole, the next tile's
// lines are fetched meanwhile, and the destination's rows are written from
// the buffer, past the caches when the copy is large, new result or not (its
// lines would otherwise each be read first: 64 rows a tile, pages apart,
// whose reads the prefetchers do not cover; ordinary stores took x.assign of
// a transposed 2048 x 2048 view from 2.3-3.6 to 7.1-7.2 ms on one Zen 4
// thread). Zen 4, x.transpose().contiguous() in turns of the event loop,
// interleaved: 2048 x 2048 25-26 -> 3.3-4.4 ms on one thread (a plain copy
// takes 1.2-1.8), 14.5-15.3 -> 3.6-3.8 on two; 512 x 768 0.40-0.52 ->
// 0.22-0.24; [8, 128, 8, 64] permuted to (0, 2, 3, 1) 0.78-0.91 -> 0.28-0.31.
template <class T>
void copy_tiled(int rank, const long* shape, const T* src, const long* ss, T* dst, const long* ds, int a) {
  constexpr long kTile = sizeof(T) == 1 ? 128 : 64;
  const int last = rank - 1;
  // The other axes, walked by an odometer.
  long oshape[kMaxRank], oss[kMaxRank], ods[kMaxRank];
  int orank = 0;
  long outer = 1;
  for (int d = 0; d < last; ++d) {
    if (d == a) continue;
    oshape[orank] = shape[d];
    oss[orank] = ss[d];
    ods[orank] = ds[d];
    outer *= shape[d];
    ++orank;
  }
  const long ni = shape[a], nj = shape[last];
  const long sj = ss[last], di = ds[a];  // src's stride along i is 1, dst's along j is 1
  const long bands = (ni + kTile - 1) / kTile;
  const long tasks = task_count(outer * bands, outer * ni * nj, kCopyPerTask);
  const long threads = threads_for_tasks(tasks);
  const bool stream = stream_new_result(static_cast<double>(sizeof(T)) * static_cast<double>(outer * ni * nj), threads);
  parallel_ranges(outer * bands, tasks, [&](long u0, long u1) {
    T tile[kTile * kTile];
    for (long u = u0; u < u1; ++u) {
      const long o = u / bands, i0 = u % bands * kTile;
      const long h = i0 + kTile < ni ? kTile : ni - i0;
      const long* st[2] = {oss, ods};
      const Odometer od(orank, oshape, 2, st, o);
      const T* s = src + od.off[0] + i0;
      T* d = dst + od.off[1] + i0 * di;
      for (long j0 = 0; j0 < nj; j0 += kTile) {
        const long w = j0 + kTile < nj ? kTile : nj - j0;
        for (long j = 0; j < w; ++j) {
          const T* sr = s + (j0 + j) * sj;
          if (j0 + kTile + j < nj) {
            const T* next = sr + kTile * sj;
            for (long l = 0; l < h; l += 64 / static_cast<long>(sizeof(T))) __builtin_prefetch(next + l, 0, 3);
          }
          for (long i = 0; i < h; ++i) tile[j * kTile + i] = sr[i];
        }
        for (long i = 0; i < h; ++i) put_row(d + i * di + j0, tile + i, kTile, w, stream);
      }
    }
    fence_streamed(stream);
  });
}

// The axis along which the source is contiguous when a tiled copy pays (see
// copy_tiled): the destination's last axis has unit stride and the source's
// is more than a cache line; -1 otherwise.
template <class T>
int tiled_axis(int rank, const long* shape, const long* ss, const long* ds) {
  const int last = rank - 1;
  const long line = 64 / static_cast<long>(sizeof(T));
  if (rank < 2 || ds[last] != 1 || shape[last] < 2 || (ss[last] < line && ss[last] > -line)) return -1;
  for (int d = last - 1; d >= 0; --d)
    if (ss[d] == 1 && shape[d] > 1) return d;
  return -1;
}

// n elements from s to d: past the caches when `stream` (x86-64: SSE2's
// streaming stores, 16 bytes at a time from the first 16-byte aligned
// address of d, the ends stored as usual; the caller fences), else memcpy.
template <class T>
void copy_run(T* d, const T* s, long n, bool stream) {
  std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
#if defined(__SSE2__)
  if (stream) {
    char* dc = reinterpret_cast<char*>(d);
    const char* sc = reinterpret_cast<const char*>(s);
    std::size_t head = (16 - reinterpret_cast<std::uintptr_t>(dc) % 16) % 16;
    if (head > bytes) head = bytes;
    std::memcpy(dc, sc, head);
    dc += head;
    sc += head;
    bytes -= head;
    for (; bytes >= 64; bytes -= 64, dc += 64, sc += 64) {
      const __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sc));
      const __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + 16));
      const __m128i v2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + 32));
      const __m128i v3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(dc), v0);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dc + 16), v1);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dc + 32), v2);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dc + 48), v3);
    }
    for (; bytes >= 16; bytes -= 16, dc += 16, sc += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(dc), _mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    std::memcpy(dc, sc, bytes);
    return;
  }
#endif
  (void)stream;
  std::memcpy(d, s, bytes);
}

// Whether a view's elements are one run in memory: every axis of more than
// one element has the stride of the elements after it.
inline bool one_run(int rank, const long* shape, const long* st) {
  long expect = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (shape[d] != 1 && st[d] != expect) return false;
    expect *= shape[d];
  }
  return true;
}

// dst = src for views of any strides. Source and destination both one run (a
// clone of a contiguous tensor): one copy cut into line-aligned ranges, not
// one call per row. Rows with unit strides: a copy per row. A large new result
// (stream_out, stream_new_result) goes past the caches: its memory comes back
// cold, and ordinary stores would read each line first. An existing
// destination is written through the caches, where its reader finds it (into
// a warm 2 MiB one, streamed stores took 0.081 ms against 0.057). Zen 4, in
// turns of the event loop, interleaved processes: clone() of [2048, 2048]
// 1.73-1.78 -> 1.30-1.38 ms on one thread, 0.80 -> 0.65-0.71 on two;
// [4096, 768] 0.99-1.03 -> 0.64-0.77 and 0.55-0.60 -> 0.50-0.52; [8, 128,
// 512] 0.18-0.20 -> 0.095 and 0.105-0.121 -> 0.081-0.083; [512, 768]
// 0.108-0.146 -> 0.072-0.073 on one thread.
template <class T>
void copy_strided(int rank, const long* shape, const T* src, const long* ss, T* dst, const long* ds, bool stream_out) {
  if (rank == 0) {
    dst[0] = src[0];
    return;
  }
  const int a = tiled_axis<T>(rank, shape, ss, ds);
  if (a >= 0) {
    copy_tiled(rank, shape, src, ss, dst, ds, a);
    return;
  }
  long rows = 1;
  for (int d = 0; d < rank - 1; ++d) rows *= shape[d];
  const long cols = shape[rank - 1];
  const long scs = ss[rank - 1], dcs = ds[rank - 1];
  if (rows == 0 || cols == 0) return;
  const long n = rows * cols;
  constexpr long kLine = 64 / static_cast<long>(sizeof(T));
  const long lines = (n + kLine - 1) / kLine;
  const bool flat = one_run(rank, shape, ss) && one_run(rank, shape, ds);
  const long tasks = flat ? task_count(lines, n, kCopyPerTask) : task_count(rows, n, kCopyPerTask);
  const bool stream = stream_out && scs == 1 && dcs == 1 &&
                      stream_new_result(static_cast<double>(sizeof(T)) * static_cast<double>(n), threads_for_tasks(tasks));
  if (flat) {
    parallel_ranges(lines, tasks, [&](long l0, long l1) {
      const long e0 = l0 * kLine, e1 = l1 * kLine < n ? l1 * kLine : n;
      copy_run(dst + e0, src + e0, e1 - e0, stream);
      fence_streamed(stream);
    });
    return;
  }
  parallel_ranges(rows, tasks, [&](long r0, long r1) {
    const long* st[2] = {ss, ds};
    Odometer od(rank - 1, shape, 2, st, r0);
    for (long r = r0; r < r1; ++r, od.next()) {
      const T* s = src + od.off[0];
      T* d = dst + od.off[1];
      if (scs == 1 && dcs == 1) {
        copy_run(d, s, cols, stream);
      } else {
        for (long j = 0; j < cols; ++j) d[j * dcs] = s[j * scs];
      }
    }
    fence_streamed(stream);
  });
}

// SplitMix64's finaliser applied to a counter: a well-mixed 64-bit value per
// (seed, index) pair.
inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline std::uint64_t draw(std::uint64_t key, std::uint64_t i) {
  return mix64(key + (i + 1) * 0x9e3779b97f4a7c15ULL);
}

// Uniform in (0, 1]: 53 random bits, never 0 (safe for log).
inline double unit_open0(std::uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

template <class F>
void fill_chunks(long n, F&& f) {
  parallel_ranges(n, task_count(n, n, kCopyPerTask), f);
}

}  // namespace

void copy_strided_f32(int rank, const long* shape, const float* src, const long* src_strides,
                      float* dst, const long* dst_strides, bool stream_out) {
  copy_strided<float>(rank, shape, src, src_strides, dst, dst_strides, stream_out);
}

void copy_strided_u8(int rank, const long* shape, const std::uint8_t* src, const long* src_strides,
                     std::uint8_t* dst, const long* dst_strides, bool stream_out) {
  copy_strided<std::uint8_t>(rank, shape, src, src_strides, dst, dst_strides, stream_out);
}

namespace {

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: normalise.
    std::uint32_t e = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

void convert_to_f32(int kind, const std::uint8_t* src, long n, float* dst) {
  fill_chunks(n, [&](long i0, long i1) {
    for (long i = i0; i < i1; ++i) {
      if (kind == 0) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = half_to_float(h);
      } else if (kind == 1) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
        std::memcpy(dst + i, &bits, 4);
      } else {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
    }
  });
}

void l2_normalize(int rank, const long* shape, const float* src, const long* strides, float* dst,
                  float eps) {
  if (rank <= 0) return;
  const FlushDenormals fp;
  const long dim = shape[rank - 1];
  long rows = 1;
  for (int d = 0; d < rank - 1; ++d) rows *= shape[d];
  if (rows == 0 || dim == 0) return;
  parallel_ranges(rows, task_count(rows, rows * dim, 1L << 15), [&](long r0, long r1) {
    const long* st[1] = {strides};
    Odometer od(rank - 1, shape, 1, st, r0);
    for (long r = r0; r < r1; ++r, od.next()) {
      const float* x = src + od.off[0];
      double ss = 0;
      for (long j = 0; j < dim; ++j) ss += static_cast<double>(x[j]) * x[j];
      const double norm = std::sqrt(ss);
      const float inv = static_cast<float>(1.0 / (norm > eps ? norm : eps));
      float* y = dst + r * dim;
      for (long j = 0; j < dim; ++j) y[j] = x[j] * inv;
    }
  });
}

void fill_normal(float* out, long n, std::uint64_t seed, double mean, double stddev) {
  const std::uint64_t key = mix64(seed ^ 0x6a09e667f3bcc909ULL);
  // Box-Muller on pairs: pair q gives elements 2q and 2q + 1.
  fill_chunks(n, [&](long i0, long i1) {
    for (long i = i0; i < i1; ++i) {
      const std::uint64_t q = static_cast<std::uint64_t>(i / 2);
      const double u1 = unit_open0(draw(key, 2 * q));
      const double u2 = unit_open0(draw(key, 2 * q + 1));
      const double r = std::sqrt(-2.0 * std::log(u1));
      const double theta = 6.283185307179586 * u2;
      const double z = (i % 2 == 0) ? r * std::cos(theta) : r * std::sin(theta);
      out[i] = static_cast<float>(mean + stddev * z);
    }
  });
}

void fill_uniform(float* out, long n, std::uint64_t seed, double lo, double hi) {
  const std::uint64_t key = mix64(seed ^ 0xbb67ae8584caa73bULL);
  fill_chunks(n, [&](long i0, long i1) {
    for (long i = i0; i < i1; ++i) {
      const double u = static_cast<double>(draw(key, static_cast<std::uint64_t>(i)) >> 11) *
                       (1.0 / 9007199254740992.0);
      out[i] = static_cast<float>(lo + (hi - lo) * u);
    }
  });
}

}  // namespace attn
