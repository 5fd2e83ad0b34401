// Reads one parameter block (a Float64Array laid out as native/params.json
// says) by slot name, and records which slots each block has had read, so a
// test can check that every slot the TypeScript side writes is used here.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "args.h"
#include "params.h"

namespace attn {
namespace addon {

// Per block (by kId), the slots read by any call so far, one bit per slot.
inline std::atomic<std::uint64_t> g_param_slots_read[params::kBlockCount];

template <class Block>
class ParamReader {
  static_assert(Block::kSize <= 64, "one bit per slot in a 64-bit mask");

 public:
  using Slot = typename Block::Slot;

  // Argument `arg` of the call must be a Float64Array of exactly Block::kSize.
  ParamReader(const Napi::CallbackInfo& info, std::size_t arg)
      : env_(info.Env()), p_(get_params(info, arg, Block::kSize, Block::kWhat)) {}

  ParamReader(const ParamReader&) = delete;
  ParamReader& operator=(const ParamReader&) = delete;

  // Publishes this call's reads: one shared write per call at most, none once
  // the process-wide mask already holds them.
  ~ParamReader() {
    std::atomic<std::uint64_t>& all = g_param_slots_read[Block::kId];
    if ((all.load(std::memory_order_relaxed) & read_) != read_) all.fetch_or(read_, std::memory_order_relaxed);
  }

  // The slot's value (entry i of an array slot), unchecked.
  double number(Slot s, int i = 0) { return at(s, i); }

  // The slot's value, which must be an integer in [lo, hi]; `what` names it in the error.
  long integer(Slot s, long lo, long hi, const char* what) { return get_int(env_, at(s, 0), lo, hi, what); }
  long integer(Slot s, int i, long lo, long hi, const char* what) { return get_int(env_, at(s, i), lo, hi, what); }

  // A 0/1 slot.
  bool flag(Slot s, const char* what) { return integer(s, 0, 1, what) != 0; }

 private:
  double at(Slot s, int i) {
    const params::SlotLayout& l = Block::kSlots[s];
    if (i < 0 || static_cast<std::size_t>(i) >= l.length) {
      throw_range(env_, std::string("entry ") + std::to_string(i) + " is outside a slot of " + Block::kWhat);
    }
    const std::size_t e = l.offset + static_cast<std::size_t>(i);
    read_ |= std::uint64_t{1} << e;
    return p_[e];
  }

  Napi::Env env_;
  const double* p_;
  std::uint64_t read_ = 0;
};

}  // namespace addon
}  // namespace attn
