// Data movement and deterministic random fills for tensors.
#pragma once

#include <cstdint>

#include "strided.h"

namespace attn {

// dst (contiguous, row-major) = src read through `strides`. T is float or uint8.
void copy_strided_f32(int rank, const long* shape, const float* src, const long* strides,
                      float* dst);
void copy_strided_u8(int rank, const long* shape, const std::uint8_t* src, const long* strides,
                     std::uint8_t* dst);

// Counter-based generators: element i depends only on (seed, i), so the
// result is the same for any thread count and any chunking.
void fill_normal(float* out, long n, std::uint64_t seed, double mean, double stddev);
void fill_uniform(float* out, long n, std::uint64_t seed, double lo, double hi);

}  // namespace attn
