#include "cpu.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define ATTN_X86 1
#include <cpuid.h>
#endif

namespace attn {
namespace {

#if defined(ATTN_X86)
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}

unsigned long long xgetbv0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

bool bit(unsigned v, int n) { return (v >> n) & 1u; }

// Leaf 4 (Intel) and leaf 0x8000001D (AMD) share one layout.
void caches_from_leaf(unsigned leaf, CacheSizes* out) {
  for (unsigned i = 0; i < 16; ++i) {
    Regs r = cpuid(leaf, i);
    unsigned type = r.a & 0x1f;
    if (type == 0) break;
    unsigned level = (r.a >> 5) & 0x7;
    std::size_t ways = ((r.b >> 22) & 0x3ff) + 1;
    std::size_t parts = ((r.b >> 12) & 0x3ff) + 1;
    std::size_t line = (r.b & 0xfff) + 1;
    std::size_t sets = static_cast<std::size_t>(r.c) + 1;
    std::size_t size = ways * parts * line * sets;
    if (level == 1 && type == 1) out->l1d = size;
    if (level == 2 && (type == 3 || type == 1)) out->l2 = size;
    if (level == 3 && (type == 3 || type == 1)) out->l3 = size;
  }
}

// Intel family 6 models by microarchitecture (Intel's published model numbers).
CpuFamily intel_family(int family, int model, bool avx512) {
  if (family != 6) return CpuFamily::kGeneric;
  switch (model) {
    case 0x55: return CpuFamily::kIntelSkylakeServer;  // Skylake-SP, Cascade Lake, Cooper Lake
    case 0x6a:
    case 0x6c: return CpuFamily::kIntelIceLakeServer;
    case 0x8f:  // Sapphire Rapids
    case 0xcf:  // Emerald Rapids
    case 0xad:
    case 0xae: return CpuFamily::kIntelSapphireRapids;  // Granite Rapids
    case 0x7d:
    case 0x7e:
    case 0x8c:
    case 0x8d:
    case 0xa7: return CpuFamily::kIntelClientAvx512;  // Ice Lake, Tiger Lake, Rocket Lake
    default: return avx512 ? CpuFamily::kIntelSapphireRapids : CpuFamily::kIntelCore;
  }
}

// AMD families 17h (Zen to Zen 2), 19h (Zen 3 and, by model range, Zen 4),
// 1Ah (Zen 5).
CpuFamily amd_family(int family, int model) {
  if (family == 0x17) return CpuFamily::kAmdZen2;
  if (family == 0x19) {
    const bool zen4 = (model >= 0x10 && model <= 0x1f) || (model >= 0x60 && model <= 0x7f) ||
                      (model >= 0xa0 && model <= 0xaf);
    return zen4 ? CpuFamily::kAmdZen4 : CpuFamily::kAmdZen3;
  }
  if (family >= 0x1a) return CpuFamily::kAmdZen5;
  return CpuFamily::kGeneric;
}

void detect_x86(CpuInfo* info) {
  info->arch = "x64";
  Regs r0 = cpuid(0);
  unsigned max_leaf = r0.a;
  std::memcpy(info->vendor + 0, &r0.b, 4);
  std::memcpy(info->vendor + 4, &r0.d, 4);
  std::memcpy(info->vendor + 8, &r0.c, 4);
  info->vendor[12] = 0;

  CpuFeatures& f = info->features;
  Regs r1 = cpuid(1);
  // Display family and model: the extended fields count when the base
  // family is 15 (family) or 6 or 15 (model).
  const unsigned base_family = (r1.a >> 8) & 0xf, base_model = (r1.a >> 4) & 0xf;
  info->family = static_cast<int>(base_family == 15 ? base_family + ((r1.a >> 20) & 0xff) : base_family);
  info->model = static_cast<int>(base_family == 6 || base_family == 15 ? base_model | (((r1.a >> 16) & 0xf) << 4)
                                                                         : base_model);
  info->stepping = static_cast<int>(r1.a & 0xf);
  f.sse2 = bit(r1.d, 26);
  bool osxsave = bit(r1.c, 27);
  f.avx = bit(r1.c, 28);
  f.fma = bit(r1.c, 12);
  f.f16c = bit(r1.c, 29);
  if (osxsave) {
    unsigned long long xcr0 = xgetbv0();
    f.os_ymm = (xcr0 & 0x6) == 0x6;
    f.os_zmm = f.os_ymm && (xcr0 & 0xe0) == 0xe0;
    f.os_amx = f.os_zmm && (xcr0 & 0x60000) == 0x60000;
  }
  if (max_leaf >= 7) {
    Regs r7 = cpuid(7, 0);
    f.avx2 = bit(r7.b, 5);
    f.avx512f = bit(r7.b, 16);
    f.avx512dq = bit(r7.b, 17);
    f.avx512bw = bit(r7.b, 30);
    f.avx512vl = bit(r7.b, 31);
    f.amx_bf16 = bit(r7.d, 22);
    f.amx_tile = bit(r7.d, 24);
  }


  Regs e0 = cpuid(0x80000000u);
  unsigned max_ext = e0.a;
  if (max_ext >= 0x80000004u) {
    char brand[49] = {0};
    for (unsigned i = 0; i < 3; ++i) {
      Regs b = cpuid(0x80000002u + i);
      std::memcpy(brand + 16 * i + 0, &b.a, 4);
      std::memcpy(brand + 16 * i + 4, &b.b, 4);
      std::memcpy(brand + 16 * i + 8, &b.c, 4);
      std::memcpy(brand + 16 * i + 12, &b.d, 4);
    }
    const char* s = brand;
    while (*s == ' ') ++s;
    std::snprintf(info->brand, sizeof info->brand, "%s", s);
  }

  bool amd = std::strcmp(info->vendor, "AuthenticAMD") == 0 ||
             std::strcmp(info->vendor, "HygonGenuine") == 0;
  if (amd && max_ext >= 0x8000001Du && bit(cpuid(0x80000001u).c, 22)) {
    caches_from_leaf(0x8000001Du, &info->cache);
  } else if (max_leaf >= 4) {
    caches_from_leaf(4, &info->cache);
  }
  const bool intel = std::strcmp(info->vendor, "GenuineIntel") == 0;
  info->family_id = intel ? intel_family(info->family, info->model, f.avx512f)
                          : amd ? amd_family(info->family, info->model) : CpuFamily::kGeneric;
  // Hypervisors often report another model than the host's (a Sapphire
  // Rapids guest seen as model 0xa7, a client part): the tile unit only
  // exists on the server cores from Sapphire Rapids on.
  if (intel && f.avx512f && f.amx_tile) info->family_id = CpuFamily::kIntelSapphireRapids;
}
#endif

// Linux exposes cache sizes in sysfs on every architecture; used where cpuid
// gives nothing (arm64, or hypervisors that hide the cache leaves).
std::size_t read_sysfs_size(const char* path) {
  FILE* fp = std::fopen(path, "r");
  if (!fp) return 0;
  char buf[64] = {0};
  std::size_t got = std::fread(buf, 1, sizeof buf - 1, fp);
  std::fclose(fp);
  if (got == 0) return 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(buf, &end, 10);
  if (end && (*end == 'K' || *end == 'k')) v *= 1024;
  if (end && (*end == 'M' || *end == 'm')) v *= 1024 * 1024;
  return static_cast<std::size_t>(v);
}

void caches_from_sysfs(CacheSizes* out) {
  char path[128];
  for (int i = 0; i < 8; ++i) {
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
    std::size_t level = read_sysfs_size(path);
    if (level == 0) break;
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
    FILE* fp = std::fopen(path, "r");
    char type[32] = {0};
    if (fp) {
      if (!std::fgets(type, sizeof type, fp)) type[0] = 0;
      std::fclose(fp);
    }
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
    std::size_t size = read_sysfs_size(path);
    bool data = std::strncmp(type, "Data", 4) == 0 || std::strncmp(type, "Unified", 7) == 0;
    if (!data) continue;
    if (level == 1 && out->l1d == 0) out->l1d = size;
    if (level == 2 && out->l2 == 0) out->l2 = size;
    if (level == 3 && out->l3 == 0) out->l3 = size;
  }
}

int count_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

std::size_t clamp_size(std::size_t v, std::size_t lo, std::size_t hi, std::size_t fallback) {
  if (v == 0) return fallback;
  return v < lo ? lo : (v > hi ? hi : v);
}

CpuInfo detect() {
  CpuInfo info;
#if defined(ATTN_X86)
  detect_x86(&info);
#elif defined(__aarch64__)
  info.arch = "arm64";
  info.features.neon = true;
  info.family_id = CpuFamily::kArm64;
  std::snprintf(info.vendor, sizeof info.vendor, "arm");
#endif
  if (info.cache.l1d == 0 || info.cache.l2 == 0) caches_from_sysfs(&info.cache);
  // Planning values: detected sizes within sane bounds, else common defaults.
  info.cache_used.l1d = clamp_size(info.cache.l1d, 16u << 10, 128u << 10, 32u << 10);
  info.cache_used.l2 = clamp_size(info.cache.l2, 128u << 10, 4u << 20, 1u << 20);
  info.cache_used.l3 = clamp_size(info.cache.l3, 1u << 20, 256u << 20, 8u << 20);
  info.logical_cpus = count_cpus();
  return info;
}

}  // namespace

const char* cpu_family_name(CpuFamily f) {
  switch (f) {
    case CpuFamily::kGeneric: return "generic";
    case CpuFamily::kIntelCore: return "intel-core";
    case CpuFamily::kIntelClientAvx512: return "intel-client-avx512";
    case CpuFamily::kIntelSkylakeServer: return "intel-skylake-server";
    case CpuFamily::kIntelIceLakeServer: return "intel-icelake-server";
    case CpuFamily::kIntelSapphireRapids: return "intel-sapphire-rapids";
    case CpuFamily::kAmdZen2: return "amd-zen2";
    case CpuFamily::kAmdZen3: return "amd-zen3";
    case CpuFamily::kAmdZen4: return "amd-zen4";
    case CpuFamily::kAmdZen5: return "amd-zen5";
    case CpuFamily::kArm64: return "arm64";
  }
  return "generic";
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

// Linux hands out the tile data state (8 KiB per thread) only to processes
// that ask for it (arch_prctl ARCH_REQ_XCOMP_PERM with XFEATURE_XTILEDATA,
// 18), for the whole process; without it a tile instruction faults.
bool amx_permitted() {
  static const bool granted = [] {
    const CpuFeatures& f = cpu_info().features;
    if (!(f.amx_tile && f.amx_bf16 && f.os_amx && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl)) return false;
#if defined(__linux__) && defined(ATTN_X86)
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
    return false;
#endif
  }();
  return granted;
}

}  // namespace attn
