# node-gyp's --nodedir for builds from source (native/build.js passes it).
#
# node-gyp normally compiles against Node's full header tarball, which it
# downloads from the Node.js website. The addon uses Node-API alone, whose
# headers come in the node-api-headers npm package (binding.gyp adds its
# include directory), so the only thing left to provide is this file, the
# build settings that tarball's common.gypi carries. Kept to what an addon
# needs, and matching Node's own on Linux: the same objects either way.
{
  'variables': {
    'standalone_static_library%': 0,
  },
  'target_defaults': {
    'default_configuration': 'Release',
    'configurations': {
      'Debug': {
        'defines': ['DEBUG', '_DEBUG'],
        'cflags': ['-g', '-O0'],
        'xcode_settings': {'GCC_OPTIMIZATION_LEVEL': '0'},
      },
      'Release': {
        'cflags': ['-O3'],
        'xcode_settings': {'GCC_OPTIMIZATION_LEVEL': '3'},
        'conditions': [
          ['OS!="mac" and OS!="win"', {'cflags': ['-fno-omit-frame-pointer']}],
        ],
      },
    },
    'conditions': [
      ['OS in "linux freebsd openbsd"', {
        'cflags': ['-pthread', '-Wall', '-Wextra', '-Wno-unused-parameter'],
        'cflags_cc': ['-fno-rtti', '-fno-exceptions', '-std=gnu++17'],
        'ldflags': ['-pthread', '-rdynamic'],
        'defines': ['__STDC_FORMAT_MACROS'],
        'conditions': [
          ['target_arch=="x64"', {'cflags': ['-m64'], 'ldflags': ['-m64']}],
        ],
      }],
      ['OS=="mac"', {
        'xcode_settings': {
          'MACOSX_DEPLOYMENT_TARGET': '11.0',
          'CLANG_CXX_LIBRARY': 'libc++',
          'GCC_ENABLE_CPP_RTTI': 'NO',
        },
        'conditions': [
          ['target_arch=="x64"', {'xcode_settings': {'ARCHS': ['x86_64']}}],
          ['target_arch=="arm64"', {'xcode_settings': {'ARCHS': ['arm64']}}],
        ],
      }],
    ],
  },
}
