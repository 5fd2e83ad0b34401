// Builds the addon from source with node-gyp, against the Node-API headers of
// the node-api-headers package (native/node-api stands in for Node's header
// tarball), so nothing is downloaded. Runs the compiles in parallel (JOBS, or
// one per CPU) and says up front what is missing when there is no compiler.
//
//   node native/build.js [--debug] [--arch=<x64|arm64>]
//
// Used by the install script (native/install.js), `npm run build:native` and
// `npm run prebuild` (native/prebuild.js).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const nodeApiDir = path.join(__dirname, 'node-api');
const tag = 'attention-kernels:';

/** The executable `cmd` resolves to on PATH, or null. */
function which(cmd, env = process.env) {
  const exts = process.platform === 'win32' ? (env.PATHEXT || '.EXE;.CMD;.BAT').split(';') : [''];
  const dirs = cmd.includes('/') || cmd.includes(path.sep) ? [''] : (env.PATH || '').split(path.delimiter).filter(Boolean);
  for (const dir of dirs) {
    for (const ext of exts) {
      const file = path.join(dir, cmd + ext);
      try {
        fs.accessSync(file, fs.constants.X_OK);
        if (fs.statSync(file).isFile()) return file;
      } catch {
        // not here
      }
    }
  }
  return null;
}

/** The tools node-gyp needs that this machine lacks (empty on Windows: node-gyp finds Visual Studio). */
function missingTools(env = process.env) {
  if (process.platform === 'win32') return [];
  const first = (s) => (s || '').trim().split(/\s+/)[0];
  const missing = [];
  const cxx = env.CXX ? [first(env.CXX)] : ['c++', 'g++', 'clang++'];
  if (!cxx.some((c) => which(c, env))) missing.push(`C++17 compiler (${cxx.join(', ')})`);
  const make = /bsd$/.test(process.platform) ? 'gmake' : 'make';
  if (!which(make, env)) missing.push(make);
  const python = [env.PYTHON, env.npm_config_python].filter(Boolean).map(first);
  if (!(python.length ? python : ['python3', 'python']).some((p) => which(p, env))) missing.push('Python 3');
  return missing;
}

function missingToolsMessage(missing) {
  return [
    `${tag} cannot build the native addon from source: no ${missing.join(', no ')} found on PATH.`,
    'Install them, then install again:',
    '  Debian/Ubuntu:  apt-get install g++ make python3',
    '  Alpine:         apk add g++ make python3',
    '  Fedora/RHEL:    dnf install gcc-c++ make python3',
    '  macOS:          xcode-select --install',
  ].join('\n');
}

/** How to run node-gyp: the package manager's own copy, a local one, npm's, or one on PATH. */
function findNodeGyp(env = process.env) {
  const script = (file) => file && file.endsWith('.js') && fs.existsSync(file) && [process.execPath, file];
  const candidates = [env.npm_config_node_gyp];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [process.cwd(), root] }));
  } catch {
    // no local node-gyp
  }
  const prefix = path.dirname(process.execPath);
  candidates.push(
    process.platform === 'win32'
      ? path.join(prefix, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')
      : path.join(prefix, '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  );
  for (const c of candidates) {
    const found = script(c);
    if (found) return found;
  }
  const onPath = which('node-gyp', env);
  return onPath ? [onPath] : null;
}

/**
 * Runs `node-gyp rebuild` in `cwd` (a directory holding binding.gyp). Returns
 * the built file, or throws with a short message when tools are missing or the
 * build fails (the compiler's own output has then been printed).
 */
function buildAddon({ cwd = root, arch, debug = false, env = process.env, log = console.error } = {}) {
  const missing = missingTools(env);
  if (missing.length) {
    const err = new Error(missingToolsMessage(missing));
    err.code = 'ATTN_NO_TOOLCHAIN';
    throw err;
  }
  const nodeGyp = findNodeGyp(env);
  if (!nodeGyp) throw new Error(`${tag} node-gyp not found; install it with \`npm install -g node-gyp\`.`);

  const childEnv = { ...env, JOBS: env.JOBS || 'max' };
  // node-gyp takes npm_config_* from the environment over its command line.
  // Windows needs node.lib from Node's own tarball: node-gyp fetches it there.
  if (process.platform !== 'win32') childEnv.npm_config_nodedir = nodeApiDir;
  if (arch) childEnv.npm_config_arch = arch;
  // The running Node's own build settings, as node-gyp uses without --nodedir.
  const args = ['rebuild', debug ? '--debug' : '--release', '--force-process-config'];
  if (!env.npm_config_loglevel) args.push('--loglevel=warn');

  const headers = require('node-api-headers/package.json').version;
  const jobs = childEnv.JOBS === 'max' ? require('node:os').cpus().length : childEnv.JOBS;
  log(`${tag} building the native addon from source with node-gyp (${jobs} parallel jobs${arch ? `, ${arch}` : ''}, node-api-headers ${headers})`);
  const t0 = Date.now();
  const r = spawnSync(nodeGyp[0], [...nodeGyp.slice(1), ...args], { cwd, env: childEnv, stdio: 'inherit' });
  const file = path.join(cwd, 'build', debug ? 'Debug' : 'Release', 'attention_kernels.node');
  if (r.status !== 0 || !fs.existsSync(file)) {
    throw new Error(`${tag} the build from source failed (${r.error ? r.error.message : `node-gyp exit ${r.status}`}); the compiler's output is above.`);
  }
  log(`${tag} built ${path.relative(process.cwd(), file) || file} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return file;
}

module.exports = { buildAddon, missingTools, missingToolsMessage, findNodeGyp, which };

if (require.main === module) {
  const argv = process.argv.slice(2);
  const arch = (argv.find((a) => a.startsWith('--arch=')) || '').slice('--arch='.length) || undefined;
  try {
    buildAddon({ debug: argv.includes('--debug'), arch });
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
