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

}  // namespace attn
