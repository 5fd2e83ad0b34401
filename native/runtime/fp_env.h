// Subnormal floats as zeros while a kernel runs. Many x86 cores take a
// microcode assist of a hundred cycles or more for every subnormal result or
// operand (exp of a large negative difference in softmax and attention gives
// them in bulk), so the speed of a kernel would depend on the data. Inside a
// kernel, results that would be subnormal are produced as zeros and subnormal
// operands read as zeros: flush-to-zero and denormals-are-zero (MXCSR bits 15
// and 6) on x86-64, flush-to-zero (FPCR.FZ, bit 24) on AArch64.
//
// FlushDenormals sets the mode for its scope on the thread that creates it and
// puts the previous control word back when it ends, so a caller's
// floating-point environment is the same before and after a kernel. Every
// kernel entry point (sgemm, softmax, attention, ...) holds one, and the pool's
// workers hold one while they run a job. Nothing here depends on ISA flags.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace attn {

#if defined(__x86_64__) || defined(_M_X64)
constexpr std::uint64_t kFlushBits = (1u << 15) | (1u << 6);  // FTZ | DAZ
inline std::uint64_t fp_control() { return _mm_getcsr(); }
inline void set_fp_control(std::uint64_t v) { _mm_setcsr(static_cast<unsigned>(v)); }
#elif defined(__aarch64__)
constexpr std::uint64_t kFlushBits = std::uint64_t{1} << 24;  // FZ
inline std::uint64_t fp_control() {
  std::uint64_t v;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
  return v;
}
inline void set_fp_control(std::uint64_t v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }
#else
constexpr std::uint64_t kFlushBits = 0;  // no control here: results keep their subnormals
inline std::uint64_t fp_control() { return 0; }
inline void set_fp_control(std::uint64_t) {}
#endif

// True when this thread flushes subnormals (for tests).
inline bool flushing_denormals() { return kFlushBits != 0 && (fp_control() & kFlushBits) == kFlushBits; }

class FlushDenormals {
 public:
  FlushDenormals() : saved_(fp_control()) {
    // Writing the control register costs a few cycles and orders the
    // floating-point pipeline: only when something changes.
    if ((saved_ & kFlushBits) != kFlushBits) set_fp_control(saved_ | kFlushBits);
  }
  ~FlushDenormals() {
    if ((saved_ & kFlushBits) != kFlushBits) set_fp_control(saved_);
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  std::uint64_t saved_;
};

}  // namespace attn
