#!/usr/bin/env bash
# The fuzz test against the addon built with AddressSanitizer and UBSan
# (cmake-js into build-asan/, -fsanitize=address,undefined, no recovery), with
# the sanitizer runtimes preloaded into Node (Node itself is not instrumented,
# so leak detection is off: V8's own allocations would all look leaked).
#
#   npm run fuzz:asan [-- --calls N --seed S ...]   (default: 6000 calls, seed 7)
#
# Any report (heap-buffer-overflow, use-after-free, "runtime error: ...")
# kills the child and becomes a finding attributed to the call that made it.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "building the sanitized addon (cmake-js, build-asan/)"
npx cmake-js compile --out build-asan --config RelWithDebInfo --CDATTN_SANITIZE=ON >build-asan.log 2>&1 || {
  tail -n 40 build-asan.log
  exit 1
}
addon=$(find "$PWD/build-asan" -name attention_kernels.node | head -n 1)
[ -n "$addon" ] || { echo "no sanitized addon was built"; exit 1; }

asan=$(g++ -print-file-name=libasan.so)
ubsan=$(g++ -print-file-name=libubsan.so)
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--calls 6000 --seed 7)

# Node installs its own SIGSEGV handler (WebAssembly bounds checks): let ASan
# leave it be, and report to stderr, where the harness looks. A refused
# allocation returns null (then std::bad_alloc, as without ASan) instead of
# aborting: the fuzz test asks for impossible amounts on purpose.
export ATTN_ADDON="$addon"
export ASAN_OPTIONS="detect_leaks=0:allow_user_segv_handler=1:allocator_may_return_null=1:abort_on_error=1:print_summary=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
sanitized() { LD_PRELOAD="$asan $ubsan" "$@"; }

# Every way of taking memory away from every async form (transfer, resize(0),
# postMessage to a worker; input and out; the library's memory and the
# caller's), then the fuzz test.
echo "detach scenarios against the sanitized addon"
sanitized node test/support/detach-scenarios.cjs "$PWD/dist" --check >build-asan-detach.log 2>&1 || {
  tail -n 60 build-asan-detach.log
  echo "detach scenarios: FAILED"
  exit 1
}
echo "detach scenarios: $(wc -l <build-asan-detach.log) cases, every one resolved right or rejected with a RangeError"
sanitized node test/fuzz/run.cjs --timeout 180 "${args[@]}"
