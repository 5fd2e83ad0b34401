// Module entry point. Node-API modules are context-aware: this runs once per
// environment (main thread and each worker thread) and keeps no per-
// environment state; the kernels and the thread pool are process-wide and
// thread-safe.
#include <napi.h>

#include "../runtime/dispatch.h"
#include "ops.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  const attn::Dispatch& d = attn::dispatch();
  if (!d.ok) {
    // ATTN_ISA asked for a path this machine cannot run: refuse to load
    // rather than silently run something else.
    throw Napi::Error::New(env, d.error);
  }
  attn::addon::register_ops(env, exports);
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

}  // namespace

NODE_API_MODULE(attention_kernels, init)
