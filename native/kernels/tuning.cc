#include "tuning.h"

namespace attn {
namespace {

// GEMM blocking: the micro-panel of B streams from L2 with the panel of A
// (kc long, so C is read and written few times), the A block fills a third of
// L2, the B panel a quarter of L3. Measured on Zen 5 (86-88% of the FMA peak
// without software prefetch), on Zen 4 (one thread, packed weights in L3:
// 94% from 3 row tiles up, 97-99% for one or two; kc 128-384, the A-in-L1
// order and software prefetch all measured slower) and on Cascade Lake
// (76-79% for n = 512-2048 on one thread, where the panels must be prefetched
// into L1: 50-66% without). The streaming prefetch (B a few KiB ahead into L2
// as well), interleaved on Zen 4 with the weights from memory: 256 x 1536 x
// 512 82% -> 86%, 1024 x 1536 x 512 87% -> 89%, 768 x 2304 x 768 89% -> 90%
// on one thread, 1-2 points on two; with the weights in L2 within half a
// point either way. Unmeasured on Intel, where B runs from L2 past an A
// panel in L1 and the extra prefetches would take load slots: not set there.
constexpr double kKcL2 = 1.0 / 8, kMcL2 = 1.0 / 3, kNcL3 = 1.0 / 4;
constexpr double kParallelFlops = 1 << 22;
// Intel: the A micro-panel in 7/8 of L1 (kc = 512 for 14 rows and 32 KiB),
// B runs in half of L2. Two panels streaming from L2 held the micro-kernel at
// about 70% of the peak on Cascade Lake; this order measured 6-8% faster on
// the K = 512 projections than the B-reusing one.
constexpr double kAL1 = 7.0 / 8, kBL2 = 1.0 / 2;

// clang-format off
constexpr Tuning kTable[] = {
  // family                          kc_l2  mc_l2  nc_l3  kc_min kc_max a_l1   b_l2   prefetch  stream  parallel        basis
  {CpuFamily::kGeneric,              kKcL2, kMcL2, kNcL3, 128,   1024,  kAL1,  kBL2,  true,     false,  kParallelFlops, "the Intel row: prefetching costs little where it is not needed"},
  {CpuFamily::kIntelCore,            kKcL2, kMcL2, kNcL3, 128,   1024,  kAL1,  kBL2,  true,     false,  kParallelFlops, "as Skylake server: the same L1/L2 design"},
  {CpuFamily::kIntelClientAvx512,    kKcL2, kMcL2, kNcL3, 128,   1024,  kAL1,  kBL2,  true,     false,  kParallelFlops, "as Skylake server: the same L1/L2 design, 48 KiB L1"},
  {CpuFamily::kIntelSkylakeServer,   kKcL2, kMcL2, kNcL3, 128,   1024,  kAL1,  kBL2,  true,     false,  kParallelFlops, "measured (Cascade Lake, 1 MiB L2)"},
  {CpuFamily::kIntelIceLakeServer,   kKcL2, kMcL2, kNcL3, 128,   1024,  kAL1,  kBL2,  true,     false,  kParallelFlops, "as Skylake server: 48 KiB L1, 1.25 MiB L2"},
  {CpuFamily::kIntelSapphireRapids,  kKcL2, kMcL2, kNcL3, 128,   1024,  kAL1,  kBL2,  true,     false,  kParallelFlops, "as Skylake server: 48 KiB L1, 2 MiB L2"},
  {CpuFamily::kAmdZen2,              kKcL2, kMcL2, kNcL3, 128,   1024,  0,     0,     false,    true,   kParallelFlops, "as Zen 5: 512 KiB L2, AVX2 path"},
  {CpuFamily::kAmdZen3,              kKcL2, kMcL2, kNcL3, 128,   1024,  0,     0,     false,    true,   kParallelFlops, "as Zen 5: 512 KiB L2, AVX2 path"},
  {CpuFamily::kAmdZen4,              kKcL2, kMcL2, kNcL3, 128,   1024,  0,     0,     false,    true,   kParallelFlops, "measured (Zen 4, 1 MiB L2): the Zen 5 shares; shorter kc, the A-in-L1 order and the near prefetch were no faster, the streaming one faster from L3 or memory"},
  {CpuFamily::kAmdZen5,              kKcL2, kMcL2, kNcL3, 128,   1024,  0,     0,     false,    true,   kParallelFlops, "measured (Zen 5, 1 MiB L2); the streaming prefetch as on Zen 4"},
  {CpuFamily::kArm64,                kKcL2, kMcL2, kNcL3, 128,   1024,  kAL1,  kBL2,  true,     false,  kParallelFlops, "generic"},
};
// clang-format on

}  // namespace

const Tuning& tuning_for(CpuFamily family) {
  for (const Tuning& t : kTable)
    if (t.family == family) return t;
  return kTable[0];
}

const Tuning& tuning() {
  static const Tuning& t = tuning_for(cpu_info().family_id);
  return t;
}

bool stream_new_result(double bytes, long threads) {
  return 2.0 * bytes / static_cast<double>(threads > 1 ? threads : 1) >= static_cast<double>(cpu_info().cache_used.l2);
}

}  // namespace attn
