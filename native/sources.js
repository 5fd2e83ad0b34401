// Prints parts of native/sources.json for binding.gyp (which cannot read JSON
// itself). Usage: node native/sources.js <group...> | isa <arch> <name> <sources|flags> | flags
'use strict';
const spec = require('./sources.json');

const [cmd, ...rest] = process.argv.slice(2);
let out;
if (cmd === 'isa') {
  const [arch, name, field] = rest;
  out = spec.isa[arch][name][field];
} else if (cmd === 'flags') {
  out = spec.flags;
} else {
  out = [cmd, ...rest].flatMap((group) => spec[group]);
}
// Paths are relative to the package root, where binding.gyp sits.
process.stdout.write(out.join(' '));
