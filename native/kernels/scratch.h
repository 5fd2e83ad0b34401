// Per-thread scratch memory for kernel drivers: 64-byte aligned, grown on
// demand, reused across calls, freed when the thread exits.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace attn {

class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(data_); }

  // At least `floats` floats; contents are unspecified.
  float* get(std::size_t floats) {
    if (floats > cap_) {
      if (floats > (std::size_t{1} << 60) / sizeof(float)) throw std::bad_alloc();
      std::free(data_);
      data_ = nullptr;
      cap_ = 0;
      std::size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!data_) throw std::bad_alloc();
      cap_ = floats;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  std::size_t cap_ = 0;
};

// A heap array of n floats for one call, from the C allocator: a refused
// (or impossibly large) allocation is std::bad_alloc, also under
// AddressSanitizer, which aborts instead where operator new is refused.
class HeapFloats {
 public:
  explicit HeapFloats(std::size_t n) {
    if (n > (std::size_t{1} << 60) / sizeof(float)) throw std::bad_alloc();
    data_ = static_cast<float*>(std::malloc((n > 0 ? n : 1) * sizeof(float)));
    if (!data_) throw std::bad_alloc();
  }
  ~HeapFloats() { std::free(data_); }
  HeapFloats(const HeapFloats&) = delete;
  HeapFloats& operator=(const HeapFloats&) = delete;

  float* data() { return data_; }

 private:
  float* data_;
};

}  // namespace attn
