// What the kernels tune per CPU family, BLIS style: one row per family in
// tuning.cc, the sizes themselves derived from the caches detected at run
// time through the shares the row gives.
#pragma once

#include "../runtime/cpu.h"

namespace attn {

struct Tuning {
  CpuFamily family;
  // GEMM cache blocking, as shares of the detected caches (gemm_blocking()):
  // the packed B micro-panel (kc x nr) takes kc_l2 of L2 (kc is kept within
  // [kc_min, kc_max]), the packed A block (mc x kc) mc_l2 of L2, the packed B
  // panel (kc x nc) nc_l3 of L3.
  double kc_l2, mc_l2, nc_l3;
  long kc_min, kc_max;
  // > 0: the loop order that keeps an A micro-panel (mr x kc) in this share
  // of L1 (kc is cut to fit) while runs of B micro-panels, kc x nc_l2 floats
  // in b_run_l2 of L2, stream past it. 0: B micro-panels are reused across
  // the A block instead (both panels then stream from L2).
  double a_panel_l1, b_run_l2;
  // The micro-kernel prefetches its A and B panels into L1 a few steps ahead:
  // for cores whose own L1 prefetcher does not keep two streams from L2 fed.
  bool prefetch_panels;
  // Every product with B packed beforehand also fetches B a few KiB ahead
  // into L2 (the micro-kernel's streaming level), not only a product of one
  // A block (which does on every CPU): for weights that stream from L3 or
  // memory when the caches have gone to other work.
  bool stream_panels;
  // Work (flops) below which a GEMM stays on the calling thread; each further
  // thread must get at least half of it.
  double min_parallel_flops;
  // Where the row comes from: measured on this family, or carried over from
  // a measured one with the reason.
  const char* basis;
};

// Whether a new result (memory nobody has read since it was recycled, so
// cold) of `bytes` that `threads` threads write goes past the caches: when
// each thread's share is at least half its L2. Ordinary stores would first
// read every line of it from memory; a smaller result stays in cache for
// whoever reads it next.
bool stream_new_result(double bytes, long threads);

// The row for `family` (the generic row when the family has none).
const Tuning& tuning_for(CpuFamily family);
// The row for this CPU.
const Tuning& tuning();

}  // namespace attn
