#include "args.h"

#include <cmath>

#include "../kernels/bounds.h"

namespace attn {
namespace addon {

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_float32_array: return "a Float32Array";
      case napi_float64_array: return "a Float64Array";
      case napi_uint8_array: return "a Uint8Array";
      case napi_int32_array: return "an Int32Array";
      default: return "a typed array";
    }
  }
  if (v.IsNumber()) return std::to_string(v.As<Napi::Number>().DoubleValue()) + " of type number";
  if (v.IsString()) return "a string";
  if (v.IsBoolean()) return "a boolean";
  if (v.IsArray()) return "an Array";
  if (v.IsFunction()) return "a function";
  return "an object";
}

void throw_type(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

void throw_range(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

bool is_f32(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
}

bool is_absent(const Napi::Value& v) { return v.IsNull() || v.IsUndefined(); }

bool is_u8(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
}

namespace {

// An empty typed array whose ArrayBuffer was detached gets an error that says so.
void check_attached(const Napi::CallbackInfo& info, napi_value v, std::size_t length, const char* what) {
  if (length != 0) return;
  napi_value ab;
  bool detached = false;
  if (napi_get_typedarray_info(info.Env(), v, nullptr, nullptr, nullptr, &ab, nullptr) == napi_ok &&
      napi_is_detached_arraybuffer(info.Env(), ab, &detached) == napi_ok && detached) {
    throw_range(info.Env(), std::string(what) + ": its ArrayBuffer is detached (transferred to another owner)");
  }
}

}  // namespace

F32Arg get_f32(const Napi::CallbackInfo& info, std::size_t i, const char* what) {
  Napi::Value v = info[i];
  if (!is_f32(v)) {
    throw_type(info.Env(), std::string("Expected Float32Array for ") + what + " but received " + describe(v));
  }
  auto arr = v.As<Napi::Float32Array>();
  check_attached(info, v, arr.ElementLength(), what);
  return F32Arg{arr.Data(), arr.ElementLength()};
}

U8Arg get_u8(const Napi::CallbackInfo& info, std::size_t i, const char* what) {
  Napi::Value v = info[i];
  if (!is_u8(v)) {
    throw_type(info.Env(), std::string("Expected Uint8Array for ") + what + " but received " + describe(v));
  }
  auto arr = v.As<Napi::Uint8Array>();
  check_attached(info, v, arr.ElementLength(), what);
  return U8Arg{arr.Data(), arr.ElementLength()};
}

I32Arg get_i32(const Napi::CallbackInfo& info, std::size_t i, const char* what) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw_type(info.Env(), std::string("Expected Int32Array for ") + what + " but received " + describe(v));
  }
  auto arr = v.As<Napi::Int32Array>();
  return I32Arg{arr.Data(), arr.ElementLength()};
}

const double* get_params(const Napi::CallbackInfo& info, std::size_t i, std::size_t count,
                         const char* what) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw_type(info.Env(), std::string("Expected Float64Array for ") + what + " but received " + describe(v));
  }
  auto arr = v.As<Napi::Float64Array>();
  if (arr.ElementLength() != count) {
    throw_range(info.Env(), std::string("Expected ") + std::to_string(count) + " entries in " + what +
                                " but received " + std::to_string(arr.ElementLength()));
  }
  return arr.Data();
}

long get_int(Napi::Env env, double v, long lo, long hi, const char* what) {
  if (!(v == std::floor(v)) || v < static_cast<double>(lo) || v > static_cast<double>(hi)) {
    throw_range(env, std::string("Expected integer in [") + std::to_string(lo) + ", " + std::to_string(hi) +
                         "] for " + what + " but received " + std::to_string(v));
  }
  return static_cast<long>(v);
}

void check_fits(Napi::Env env, const char* what, long offset, long extent, std::size_t length) {
  long end;
  if (extent > 0 && (!checked_add(offset, extent, &end) || static_cast<unsigned long long>(end) >
                                                               static_cast<unsigned long long>(length))) {
    throw_range(env, std::string(what) + " is too short: the view needs " + std::to_string(extent) +
                         " elements from offset " + std::to_string(offset) + " but its array has " +
                         std::to_string(length));
  }
}

long view_extent(Napi::Env env, const char* what, int rank, const long* shape, const long* strides) {
  long e;
  if (!strided_extent(rank, shape, strides, &e) || e > kMaxIndex) {
    throw_range(env, std::string(what) + ": its shape and strides span more than 2^53 elements");
  }
  return e;
}

long element_count(Napi::Env env, const char* what, int rank, const long* shape) {
  long n;
  if (!checked_count(rank, shape, &n) || n > kMaxIndex) {
    throw_range(env, std::string(what) + ": its shape has more than 2^53 elements");
  }
  return n;
}

const char* const kOverlapMessage =
    "unsupported operation: more than one element of the written-to tensor refers to a single memory location. "
    "Please clone() the tensor before performing the operation.";

void check_distinct(Napi::Env env, const char* what, int rank, const long* shape, const long* strides) {
  if (!distinct_elements(rank, shape, strides)) throw_range(env, std::string(what) + ": " + kOverlapMessage);
}

bool overlaps(const void* a, std::size_t an, const void* b, std::size_t bn) {
  if (an == 0 || bn == 0) return false;
  auto pa = reinterpret_cast<std::uintptr_t>(a), pb = reinterpret_cast<std::uintptr_t>(b);
  return pa < pb + bn && pb < pa + an;
}

}  // namespace addon
}  // namespace attn
