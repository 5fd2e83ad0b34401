#include "tensor_ops.h"

#include <cmath>
#include <cstring>

#include "../runtime/fp_env.h"
#include "../runtime/thread_pool.h"

namespace attn {
namespace {

constexpr long kCopyPerTask = 1L << 16;

template <class T>
void copy_strided(int rank, const long* shape, const T* src, const long* ss, T* dst, const long* ds) {
  if (rank == 0) {
    dst[0] = src[0];
    return;
  }
  long rows = 1;
  for (int d = 0; d < rank - 1; ++d) rows *= shape[d];
  const long cols = shape[rank - 1];
  const long scs = ss[rank - 1], dcs = ds[rank - 1];
  if (rows == 0 || cols == 0) return;
  parallel_ranges(rows, task_count(rows, rows * cols, kCopyPerTask), [&](long r0, long r1) {
    const long* st[2] = {ss, ds};
    Odometer od(rank - 1, shape, 2, st, r0);
    for (long r = r0; r < r1; ++r, od.next()) {
      const T* s = src + od.off[0];
      T* d = dst + od.off[1];
      if (scs == 1 && dcs == 1) {
        std::memcpy(d, s, static_cast<std::size_t>(cols) * sizeof(T));
      } else {
        for (long j = 0; j < cols; ++j) d[j * dcs] = s[j * scs];
      }
    }
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
                      float* dst, const long* dst_strides) {
  copy_strided<float>(rank, shape, src, src_strides, dst, dst_strides);
}

void copy_strided_u8(int rank, const long* shape, const std::uint8_t* src, const long* src_strides,
                     std::uint8_t* dst, const long* dst_strides) {
  copy_strided<std::uint8_t>(rank, shape, src, src_strides, dst, dst_strides);
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
