// Argument conversion for the binding: typed arrays without copying, packed
// Float64Array parameter blocks, and errors that name what was wrong.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace attn {
namespace addon {

struct F32Arg {
  float* data = nullptr;
  std::size_t length = 0;
};

struct U8Arg {
  std::uint8_t* data = nullptr;
  std::size_t length = 0;
};

struct I32Arg {
  std::int32_t* data = nullptr;
  std::size_t length = 0;
};

// "Float32Array", "a number", "undefined"... for error messages.
std::string describe(const Napi::Value& v);

[[noreturn]] void throw_type(Napi::Env env, const std::string& msg);
[[noreturn]] void throw_range(Napi::Env env, const std::string& msg);

F32Arg get_f32(const Napi::CallbackInfo& info, std::size_t i, const char* what);
U8Arg get_u8(const Napi::CallbackInfo& info, std::size_t i, const char* what);
I32Arg get_i32(const Napi::CallbackInfo& info, std::size_t i, const char* what);
bool is_f32(const Napi::Value& v);
// An optional argument that was not given: null or undefined.
bool is_absent(const Napi::Value& v);
bool is_u8(const Napi::Value& v);

// A Float64Array of exactly `count` parameters.
const double* get_params(const Napi::CallbackInfo& info, std::size_t i, std::size_t count,
                         const char* what);

// A double that must hold an integer in [lo, hi].
long get_int(Napi::Env env, double v, long lo, long hi, const char* what);

// Every count, stride, offset and extent the addon accepts stays below 2^53,
// so it is exact in a double (the parameter blocks) and sums of two never
// overflow a long.
constexpr long kMaxIndex = (1L << 53) - 1;

// Checks that `offset + extent` elements fit in an array of `length`.
void check_fits(Napi::Env env, const char* what, long offset, long extent, std::size_t length);

// Elements a strided view spans (bounds.h's strided_extent); a RangeError
// naming `what` when that is more than kMaxIndex.
long view_extent(Napi::Env env, const char* what, int rank, const long* shape, const long* strides);

// Elements of a shape; a RangeError naming `what` above kMaxIndex.
long element_count(Napi::Env env, const char* what, int rank, const long* shape);

// A view written to must not have two elements at one memory location: a
// RangeError naming `what`, with PyTorch's wording, when it does.
void check_distinct(Napi::Env env, const char* what, int rank, const long* shape, const long* strides);

// The wording of that error, after the argument's name.
extern const char* const kOverlapMessage;

// True when [a, a + an) and [b, b + bn) share a byte.
bool overlaps(const void* a, std::size_t an, const void* b, std::size_t bn);

}  // namespace addon
}  // namespace attn
