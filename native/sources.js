// Prints parts of native/sources.json for binding.gyp (which cannot read JSON
// itself). Usage: node native/sources.js <group...> | isa <arch> <name> <sources|flags> | flags
// An ISA's optional_flags join its flags when the C++ compiler (CXX, else
// g++ or c++) takes them: a compiler too old for the tile unit's intrinsics
// builds that unit without them, and the path is then absent at run time.
'use strict';
const { spawnSync } = require('node:child_process');
const spec = require('./sources.json');

/** Whether the C++ compiler accepts `flags` for a file that includes immintrin.h. */
function compilerTakes(flags) {
  const probe = '#include <immintrin.h>\nint main() { _tile_release(); return 0; }\n';
  const candidates = process.env.CXX ? [process.env.CXX] : ['g++', 'c++', 'clang++'];
  for (const cxx of candidates) {
    const [cmd, ...pre] = cxx.split(/\s+/);
    const r = spawnSync(cmd, [...pre, ...flags, '-x', 'c++', '-fsyntax-only', '-'], { input: probe, encoding: 'utf8' });
    if (r.error) continue; // not installed: try the next
    return r.status === 0;
  }
  return false;
}

const [cmd, ...rest] = process.argv.slice(2);
let out;
if (cmd === 'isa') {
  const [arch, name, field] = rest;
  const isa = spec.isa[arch][name];
  out = isa[field];
  if (field === 'flags' && isa.optional_flags && compilerTakes(isa.optional_flags)) out = [...out, ...isa.optional_flags];
} else if (cmd === 'flags') {
  out = spec.flags;
} else {
  out = [cmd, ...rest].flatMap((group) => spec[group]);
}
// Paths are relative to the package root, where binding.gyp sits.
process.stdout.write(out.join(' '));
