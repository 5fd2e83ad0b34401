// CPU feature and cache detection. Read once per process; safe from any thread.
#pragma once

#include <cstddef>

namespace attn {

struct CpuFeatures {
  bool sse2 = false;
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool os_ymm = false;  // XCR0 says the OS saves YMM state
  bool os_zmm = false;  // XCR0 says the OS saves opmask + ZMM state
  bool neon = false;
};

struct CacheSizes {
  std::size_t l1d = 0;  // bytes, per core
  std::size_t l2 = 0;   // bytes, per core (or per cluster)
  std::size_t l3 = 0;   // bytes, as reported (usually shared)
};

struct CpuInfo {
  const char* arch = "unknown";
  char vendor[16] = {0};
  char brand[64] = {0};
  CpuFeatures features;
  CacheSizes cache;       // detected, or 0 where unknown
  CacheSizes cache_used;  // what the kernels plan with (detected, or defaults)
  int logical_cpus = 1;   // CPUs this process may run on
};

const CpuInfo& cpu_info();

}  // namespace attn
