#include "dispatch.h"

#include <cstdlib>
#include <cstring>

#include "cpu.h"

namespace attn {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kNeon: return "neon";
    case Isa::kAmx: return "amx";
  }
  return "unknown";
}

namespace {

std::string missing(const char* what, bool have) { return have ? "" : std::string(" ") + what; }

#if defined(__x86_64__)
// What the AVX-512 path (and so the amx path) needs that this CPU or OS lacks.
std::string avx512_lack(const CpuFeatures& f) {
  return missing("avx512f", f.avx512f) + missing("avx512bw", f.avx512bw) + missing("avx512dq", f.avx512dq) +
         missing("avx512vl", f.avx512vl) + missing("avx2", f.avx2) + missing("fma", f.fma) +
         missing("os-zmm-state", f.os_zmm);
}
#endif

}  // namespace

const KernelTable* kernels_for(Isa isa, std::string* why) {
  const CpuFeatures& f = cpu_info().features;
  std::string lack;
  const KernelTable* table = nullptr;
  switch (isa) {
    case Isa::kScalar:
      return scalar_kernels();
    case Isa::kAvx2:
#if defined(__x86_64__)
      lack = missing("avx2", f.avx2) + missing("fma", f.fma) + missing("os-ymm-state", f.os_ymm);
      table = avx2_kernels();
#else
      lack = " x86-64";
#endif
      break;
    case Isa::kAvx512:
#if defined(__x86_64__)
      lack = avx512_lack(f);
      table = avx512_kernels();
#else
      lack = " x86-64";
#endif
      break;
    case Isa::kAmx:
#if defined(__x86_64__)
      lack = avx512_lack(f) + missing("amx-tile", f.amx_tile) + missing("amx-bf16", f.amx_bf16) +
             missing("os-tile-state", f.os_amx);
      if (lack.empty() && !amx_permitted()) lack = " tile-data-permission";
      table = amx_kernels();
      if (!table) lack = " tile-unit-code (this binary was built by a compiler without it)";
#else
      lack = " x86-64";
#endif
      break;
    case Isa::kNeon:
#if defined(__aarch64__)
      lack = missing("neon", f.neon);
      table = neon_kernels();
#else
      lack = " arm64";
#endif
      break;
  }
  if (!lack.empty()) {
    if (why) *why = std::string("this CPU cannot run ") + isa_name(isa) + " (missing:" + lack + ")";
    return nullptr;
  }
  return table;
}

const KernelTable* select_kernels(const char* request, std::string* error) {
  if (request == nullptr || request[0] == 0 || std::strcmp(request, "auto") == 0) {
    for (Isa isa : {Isa::kAmx, Isa::kAvx512, Isa::kAvx2, Isa::kNeon}) {
      if (const KernelTable* t = kernels_for(isa, nullptr)) return t;
    }
    return scalar_kernels();
  }
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAmx, Isa::kNeon}) {
    if (std::strcmp(request, isa_name(isa)) == 0) {
      std::string why;
      const KernelTable* t = kernels_for(isa, &why);
      if (!t && error) *error = "ATTN_ISA=" + std::string(request) + ": " + why;
      return t;
    }
  }
  if (error) {
    *error = "ATTN_ISA=" + std::string(request) +
             " is not a known path; expected one of auto, scalar, avx2, avx512, amx, neon";
  }
  return nullptr;
}

const Dispatch& dispatch() {
  static const Dispatch d = [] {
    Dispatch r{nullptr, true, "", ""};
    const char* env = std::getenv("ATTN_ISA");
    r.requested = env ? env : "";
    r.active = select_kernels(env, &r.error);
    if (!r.active) {
      r.ok = false;
      r.active = select_kernels(nullptr, nullptr);
    }
    return r;
  }();
  return d;
}

}  // namespace attn
