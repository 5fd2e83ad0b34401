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
  bool amx_tile = false;
  bool amx_bf16 = false;
  bool os_amx = false;      // XCR0 says the OS saves tile state (XTILECFG, XTILEDATA)
  bool neon = false;
};

struct CacheSizes {
  std::size_t l1d = 0;  // bytes, per core
  std::size_t l2 = 0;   // bytes, per core (or per cluster)
  std::size_t l3 = 0;   // bytes, as reported (usually shared)
};

// CPU families, as far as the kernels' tuning tells them apart (see
// kernels/tuning.cc).
enum class CpuFamily : int {
  kGeneric = 0,
  kIntelCore,           // Intel cores without AVX-512 (Haswell to Raptor Lake, hybrids)
  kIntelClientAvx512,   // Ice Lake, Tiger Lake, Rocket Lake client parts
  kIntelSkylakeServer,  // Skylake-SP, Cascade Lake, Cooper Lake
  kIntelIceLakeServer,  // Ice Lake-SP
  kIntelSapphireRapids, // Sapphire, Emerald and Granite Rapids
  kAmdZen2,             // Zen, Zen+, Zen 2
  kAmdZen3,
  kAmdZen4,             // AVX-512 on 256-bit units (each 512-bit op issued twice)
  kAmdZen5,             // AVX-512 on 512-bit units
  kArm64,
};
const char* cpu_family_name(CpuFamily f);

struct CpuInfo {
  const char* arch = "unknown";
  char vendor[16] = {0};
  char brand[64] = {0};
  // x86 display family, model and stepping (0 elsewhere), and the family
  // they map to.
  int family = 0, model = 0, stepping = 0;
  CpuFamily family_id = CpuFamily::kGeneric;
  CpuFeatures features;
  CacheSizes cache;       // detected, or 0 where unknown
  CacheSizes cache_used;  // what the kernels plan with (detected, or defaults)
  int logical_cpus = 1;   // CPUs this process may run on
};

const CpuInfo& cpu_info();

// Whether this process may use the tile unit: the CPU and OS support it and
// the kernel granted the tile data state (asked once per process, on the
// first call; Linux only).
bool amx_permitted();

}  // namespace attn
