// Data movement, L2 row normalisation and deterministic random fills for
// tensors.
#pragma once

#include <cstdint>

#include "strided.h"

namespace attn {

// dst = src, each read or written through its own strides (float32 or uint8).
// stream_out: dst is a new result nobody has read yet; a large one is then
// written past the caches (stream_new_result). Same values either way.
void copy_strided_f32(int rank, const long* shape, const float* src, const long* src_strides,
                      float* dst, const long* dst_strides, bool stream_out = false);
void copy_strided_u8(int rank, const long* shape, const std::uint8_t* src, const long* src_strides,
                     std::uint8_t* dst, const long* dst_strides, bool stream_out = false);

// Little-endian F16 (kind 0), BF16 (1) or F64 (2) values to float32; src may
// have any alignment.
void convert_to_f32(int kind, const std::uint8_t* src, long n, float* dst);

// dst (contiguous) = src (strided, last axis contiguous) with every vector of
// the last axis scaled to unit L2 norm: x / max(|x|, eps).
void l2_normalize(int rank, const long* shape, const float* src, const long* strides, float* dst,
                  float eps);

// Counter-based generators: element i depends only on (seed, i), so the
// result is the same for any thread count and any chunking.
void fill_normal(float* out, long n, std::uint64_t seed, double mean, double stddev);
void fill_uniform(float* out, long n, std::uint64_t seed, double lo, double hi);

}  // namespace attn
