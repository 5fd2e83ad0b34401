# node-gyp build of the addon. The source lists and per-ISA flags come from
# native/sources.json, which CMakeLists.txt reads too. Node-API's headers come
# from the node-api-headers package: run through native/build.js (npm install,
# npm run build:native), node-gyp downloads nothing.
{
  "variables": {
    "common_flags": ["<!@(node native/sources.js flags)"]
  },
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20", "-std=c++20"],
    "cflags_cc": ["<@(common_flags)"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "OTHER_CPLUSPLUSFLAGS": ["<@(common_flags)"]
    },
    "msvs_settings": {"VCCLCompilerTool": {"ExceptionHandling": 1}},
    # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: see CMakeLists.txt.
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"]
  },
  "targets": [
    {
      "target_name": "isa_scalar",
      "type": "static_library",
      "conditions": [
        ["target_arch=='x64'", {
          "sources": ["<!@(node native/sources.js isa x64 scalar sources)"],
          "cflags_cc": ["<!@(node native/sources.js isa x64 scalar flags)"]
        }],
        ["target_arch=='arm64'", {
          "sources": ["<!@(node native/sources.js isa arm64 scalar sources)"],
          "cflags_cc": ["<!@(node native/sources.js isa arm64 scalar flags)"]
        }]
      ]
    },
    {
      "target_name": "isa_neon",
      "type": "static_library",
      "conditions": [
        ["target_arch=='arm64'", {
          "sources": ["<!@(node native/sources.js isa arm64 neon sources)"],
          "cflags_cc": ["<!@(node native/sources.js isa arm64 neon flags)"]
        }]
      ]
    },
    {
      "target_name": "isa_avx2",
      "type": "static_library",
      "conditions": [
        ["target_arch=='x64'", {
          "sources": ["<!@(node native/sources.js isa x64 avx2 sources)"],
          "cflags_cc": ["<!@(node native/sources.js isa x64 avx2 flags)"]
        }]
      ]
    },
    {
      "target_name": "isa_avx512",
      "type": "static_library",
      "conditions": [
        ["target_arch=='x64'", {
          "sources": ["<!@(node native/sources.js isa x64 avx512 sources)"],
          "cflags_cc": ["<!@(node native/sources.js isa x64 avx512 flags)"]
        }]
      ]
    },
    {
      "target_name": "isa_amx",
      "type": "static_library",
      "conditions": [
        ["target_arch=='x64'", {
          "sources": ["<!@(node native/sources.js isa x64 amx sources)"],
          "cflags_cc": ["<!@(node native/sources.js isa x64 amx flags)"]
        }]
      ]
    },
    {
      "target_name": "attention_kernels",
      "dependencies": ["isa_scalar", "isa_neon", "isa_avx2", "isa_avx512", "isa_amx"],
      "sources": ["<!@(node native/sources.js runtime kernels addon)"],
      "actions": [{
        "action_name": "param_blocks",
        "inputs": ["native/params.json", "native/params.js"],
        "outputs": ["<(SHARED_INTERMEDIATE_DIR)/attention_kernels/params.h"],
        "action": ["node", "native/params.js", "cpp", "<@(_outputs)"]
      }],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<(SHARED_INTERMEDIATE_DIR)/attention_kernels",
        "<!(node -p \"require('node-api-headers').include_dir\")"
      ],
      "cflags_cc": ["-ffp-contract=off"],
      "ldflags": ["-pthread"],
      "cflags": ["-pthread"]
    }
  ]
}
