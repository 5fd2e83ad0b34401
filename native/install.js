// The package's install script. Nothing is needed from it where a prebuilt
// binary fits: the package loads that one whether or not this script runs. It
// builds the addon from source (native/build.js) where none loads, in a
// checkout of the package itself, or when ATTN_BUILD_FROM_SOURCE=1.
'use strict';
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { buildAddon } = require('./build.js');

const tag = 'attention-kernels:';
const root = path.resolve(__dirname, '..');
const checkout = !root.split(path.sep).includes('node_modules');
const forced = /^(1|true|yes)$/i.test(process.env.ATTN_BUILD_FROM_SOURCE || '');

/** Loads the addon in a child process (a binary that crashes must not take the install down). */
function tryLoad() {
  const env = { ...process.env };
  delete env.ATTN_ADDON;
  delete env.ATTN_ISA;
  const r = spawnSync(
    process.execPath,
    ['-e', 'process.stdout.write(require(process.argv[1]).loadAddon().file)', path.join(__dirname, 'load.js')],
    { env, encoding: 'utf8' },
  );
  if (r.status === 0) return { file: r.stdout };
  const tried = (r.stderr || '').split('\n').filter((l) => l.startsWith('  - '));
  return { tried: tried.length ? tried : [(r.stderr || String(r.error)).trim()] };
}

function main() {
  if (!checkout && !forced) {
    const r = tryLoad();
    if (r.file) {
      console.log(`${tag} using ${path.relative(root, r.file)}; no build needed`);
      return;
    }
    console.error(`${tag} no prebuilt binary loads on ${process.platform}-${process.arch}:\n${r.tried.join('\n')}`);
  }
  try {
    buildAddon();
  } catch (err) {
    console.error(err.message);
    process.exitCode = 1;
  }
}

main();
