// Chooses the kernel table for this process: the best ISA the CPU and OS
// support, or the one forced by ATTN_ISA=scalar|avx2|avx512|neon.
#pragma once

#include <string>

#include "../kernels/kernel_table.h"

namespace attn {

// Null with *why filled when `isa` is not compiled into this binary or this
// CPU/OS cannot run it.
const KernelTable* kernels_for(Isa isa, std::string* why);

// Best supported table, or the requested one ("" or null = automatic).
// Returns null and fills *error for an unknown or unsupported request.
const KernelTable* select_kernels(const char* request, std::string* error);

// The process-wide choice, made once from ATTN_ISA. ok() is false when
// ATTN_ISA asked for something this machine cannot do; error() says why and
// active() then falls back to the automatic choice so nothing is left null.
struct Dispatch {
  const KernelTable* active;
  bool ok;
  std::string error;
  std::string requested;
};
const Dispatch& dispatch();
inline const KernelTable& kernels() { return *dispatch().active; }

const char* isa_name(Isa isa);

}  // namespace attn
