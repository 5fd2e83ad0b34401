// Loads the addon the same way src/native.ts does, without TypeScript, for
// the test config and for worker-thread tests.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const candidates = process.env.ATTN_ADDON
  ? [path.resolve(process.env.ATTN_ADDON)]
  : ['build/Release', 'build-cmake/Release', 'build/Debug'].map((d) => path.join(root, d, 'attention_kernels.node'));
const file = candidates.find((f) => fs.existsSync(f));
if (!file) throw new Error(`no addon built; looked for ${candidates.join(', ')}`);
const mod = { exports: {} };
process.dlopen(mod, file);
module.exports = mod.exports;
