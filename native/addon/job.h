// How a kernel call runs: now, on the calling thread (the sync forms), or
// behind a Promise on the addon's own async thread, or on libuv's thread pool
// when that one is busy (the async forms; see job.cc).
//
// An async job must never touch memory that JavaScript may free, move or
// shrink while it runs (a typed array's buffer can be transferred, detached or
// resized at any time; Node-API cannot pin it). So every array an async call
// reads or writes is registered before the job is queued:
//  - memory the addon owns (the storage of the library's tensors) is held by
//    reference count until the job ends;
//  - any other memory is copied into a private owned block first, and the
//    kernel's pointer redirected there; an output is copied back, element by
//    element, when the job has finished, after checking that its typed array
//    still holds those elements (else the Promise rejects with a RangeError).
// The sync form registers nothing: no JavaScript runs while it computes.
//
// The job settles through the Node-API C functions, checking every status:
// when its environment is being torn down (a worker terminated with the job in
// flight) settling fails quietly, and the job still releases everything it held.
// Exceptions from the kernel (std::bad_alloc included, from any pool thread)
// reject the Promise: RangeError for out of memory, Error otherwise.
//
// Usage in a binding, after every argument is checked:
//
//   KernelCall call(info, async, "gemmAsync");
//   call.read(0, g.a, extent_a);                          // pointers into info[0]'s array
//   call.write(2, g.c, extent_c, Layout::strided(...), "out", g.beta != 0);
//   return call.run([kt, g] { sgemm(*kt, g); });          // capture the pointers after registering
//
// A chain (the addon's `chain(callback)`) runs the async kernel calls made
// while its callback runs as one piece of work off the main thread, in the order
// they were made: one round trip through the pool for several kernels, where
// each on its own pays for a worker's wake and the main thread's. Each call
// still returns its own Promise, settled when the chain has run (in order);
// a call whose kernel fails rejects, and the calls after it in the chain
// reject without running. Registration is as for any async call (memory held
// until the chain settles), so a later call in the chain may read what an
// earlier one writes only in the addon's memory: an output staged in a
// private copy is copied back after the whole chain, and an input copied as
// the call is made. chain() refuses (TypeError) an output outside the addon's
// memory, so a chain cannot read such stale data.
#pragma once

#include <napi.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "../kernels/strided.h"

namespace attn {
namespace addon {

struct Job;

// The elements of an output, as offsets in elements from its first element.
struct Layout {
  int rank = 1;
  long shape[kMaxRank] = {0};
  long strides[kMaxRank] = {0};

  static Layout contiguous(long n);
  static Layout strided(int rank, const long* shape, const long* strides);
};

class KernelCall {
 public:
  // `fn` names the call in errors.
  KernelCall(const Napi::CallbackInfo& info, bool async, const char* fn);
  ~KernelCall();
  KernelCall(const KernelCall&) = delete;
  KernelCall& operator=(const KernelCall&) = delete;

  // The kernel reads `extent` elements from p, which points into the typed
  // array at argument `arg` (bounds already checked). Async: p may be
  // redirected to a private copy.
  template <class T>
  void read(std::size_t arg, T*& p, long extent) {
    void* q = const_cast<void*>(static_cast<const void*>(p));
    stage(arg, q, extent, sizeof(T), nullptr, nullptr, true);
    p = static_cast<T*>(q);
  }

  // The kernel writes the elements `view` describes (within `extent` elements
  // from p, in the typed array at argument `arg`), and reads them first when
  // `reads`. `what` names the argument in errors.
  template <class T>
  void write(std::size_t arg, T*& p, long extent, const Layout& view, const char* what, bool reads = false) {
    void* q = static_cast<void*>(p);
    stage(arg, q, extent, sizeof(T), &view, what, reads);
    p = static_cast<T*>(q);
  }

  // Keeps `object` alive until the job ends (a packed matrix, say).
  void hold(std::shared_ptr<const void> object);

  // Async: the Promise resolves with make(env) (called on the main thread
  // after the kernel; null rejects it) instead of undefined. make must not throw.
  void result(std::function<napi_value(napi_env)> make);

  // Runs `kernel` now and returns undefined (sync), or queues it and returns a
  // Promise (async). `kernel` must capture the registered pointers by value.
  Napi::Value run(std::function<void()> kernel);

  bool async() const { return job_ != nullptr; }

 private:
  void stage(std::size_t arg, void*& p, long extent, std::size_t elem, const Layout* view, const char* what,
             bool copy_in);

  const Napi::CallbackInfo& info_;
  std::unique_ptr<Job> job_;  // async only
};

// chain(callback): calls callback() now; the async kernel calls it makes run
// as one job (above). Returns the number of calls queued; callback's
// exception, if any, after queuing the calls made before it. Called inside
// another chain's callback, its calls join that chain (and it returns 0).
Napi::Value chain_impl(const Napi::CallbackInfo& info);

}  // namespace addon
}  // namespace attn
