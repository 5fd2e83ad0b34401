#include "cpu.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#if defined(__linux__)
#include <sched.h>
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
  f.sse2 = bit(r1.d, 26);
  bool osxsave = bit(r1.c, 27);
  f.avx = bit(r1.c, 28);
  f.fma = bit(r1.c, 12);
  f.f16c = bit(r1.c, 29);
  if (osxsave) {
    unsigned long long xcr0 = xgetbv0();
    f.os_ymm = (xcr0 & 0x6) == 0x6;
    f.os_zmm = f.os_ymm && (xcr0 & 0xe0) == 0xe0;
  }
  if (max_leaf >= 7) {
    Regs r7 = cpuid(7, 0);
    f.avx2 = bit(r7.b, 5);
    f.avx512f = bit(r7.b, 16);
    f.avx512dq = bit(r7.b, 17);
    f.avx512bw = bit(r7.b, 30);
    f.avx512vl = bit(r7.b, 31);
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

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

}  // namespace attn
