#pragma once

#include <napi.h>

namespace attn {
namespace addon {

// Adds the kernel operations and runtime controls to `exports`.
void register_ops(Napi::Env env, Napi::Object exports);

}  // namespace addon
}  // namespace attn
