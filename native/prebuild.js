// Builds the prebuilt binaries that ship in the package:
//   prebuilds/<platform>-<arch>/attention_kernels.napi.glibc.node
// one Node-API binary per platform, for every Node version, found at run time
// by node-gyp-build (native/load.js). Each is built by node-gyp (native/build.js)
// in its own directory under build-prebuild/ (build/ is left alone), the other
// architecture with Debian's cross compiler; libstdc++ is linked in statically
// and the result stripped. Each is checked to need nothing but the C runtime
// (libc, libm, libgcc_s) of glibc 2.34 or later.
//
//   node native/prebuild.js [linux-x64] [linux-arm64]     (default: both)
//   node native/prebuild.js --check    (before publishing: each is there, and
//                                        newer than the sources it is built from)
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { buildAddon, which } = require('./build.js');

const root = path.resolve(__dirname, '..');
const targets = {
  'linux-x64': { arch: 'x64', triplet: 'x86_64-linux-gnu', machine: 'Advanced Micro Devices X86-64', debianCross: 'g++-x86-64-linux-gnu' },
  'linux-arm64': { arch: 'arm64', triplet: 'aarch64-linux-gnu', machine: 'AArch64', debianCross: 'g++-aarch64-linux-gnu' },
};
const outName = 'attention_kernels.napi.glibc.node';
const maxGlibc = 2034; // glibc 2.34, as major * 1000 + minor
// What binding.gyp reads besides itself (linked into each target's directory).
const staged = ['native'];

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.error}`);
  return r.stdout;
}

/** The toolchain for a target: the host's own for the host architecture, else `<triplet>-g++` and friends. */
function toolchain(t) {
  const native = process.platform === 'linux' && process.arch === t.arch;
  const prefix = native ? '' : `${t.triplet}-`;
  if (!native && !which(`${prefix}g++`)) {
    throw new Error(`no cross compiler ${prefix}g++ for ${t.arch} (Debian/Ubuntu: apt-get install ${t.debianCross})`);
  }
  const cc = native ? process.env.CC || 'cc' : `${prefix}gcc`;
  const env = { ...process.env };
  if (!native) Object.assign(env, { CC: cc, CXX: `${prefix}g++`, LINK: `${prefix}g++`, AR: `${prefix}ar` });
  return { env, cc, strip: which(`${prefix}strip`) ? `${prefix}strip` : 'strip' };
}

/** What the stripped binary needs at run time, checked against what it must be. */
function describe(file, t) {
  const header = run('readelf', ['-h', file]);
  if (!header.includes(t.machine)) throw new Error(`${file} is not a ${t.machine} binary`);
  const needed = [...run('readelf', ['-d', file]).matchAll(/\(NEEDED\).*\[(.+)\]/g)].map((m) => m[1]);
  const unexpected = needed.filter((lib) => !/^(libc|libm|libgcc_s|ld-linux[-\w]*)\.so/.test(lib));
  if (unexpected.length) throw new Error(`${file} needs ${unexpected.join(', ')}; only the C runtime is expected`);
  const glibc = [...run('readelf', ['-V', '-W', file]).matchAll(/Name: GLIBC_(\d+)\.(\d+)/g)]
    .map((m) => Number(m[1]) * 1000 + Number(m[2]))
    .reduce((a, b) => Math.max(a, b), 0);
  const floor = `${Math.floor(glibc / 1000)}.${glibc % 1000}`;
  if (glibc > maxGlibc) throw new Error(`${file} needs glibc ${floor}; the prebuilt binaries must load on glibc 2.34`);
  const size = fs.statSync(file).size;
  return `${(size / 1024).toFixed(0)} KiB, needs ${needed.join(' ')} (glibc >= ${floor})`;
}

function prebuild(name) {
  const t = targets[name];
  if (!t) throw new Error(`unknown target ${name}; expected one of ${Object.keys(targets).join(', ')}`);
  const { env, cc, strip } = toolchain(t);
  // A directory of its own holding binding.gyp and the sources, so that
  // node-gyp's build/ there is separate from the checkout's.
  const dir = path.join(root, 'build-prebuild', name);
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(dir, 'binding.gyp'));
  for (const entry of staged) {
    const link = path.join(dir, entry);
    if (!fs.existsSync(link)) fs.symlinkSync(path.relative(dir, path.join(root, entry)), link);
  }
  const compat = path.join(dir, 'prebuild-glibc.o');
  run(cc, ['-O2', '-fPIC', '-c', path.join(__dirname, 'prebuild-glibc.c'), '-o', compat]);
  env.LDFLAGS = `${env.LDFLAGS || ''} -static-libstdc++ ${compat}`.trim();

  const built = buildAddon({ cwd: dir, arch: t.arch, env });
  const outDir = path.join(root, 'prebuilds', name);
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  const out = path.join(outDir, outName);
  run(strip, ['--strip-unneeded', '-o', out, built]);
  console.log(`${path.relative(root, out)}: ${describe(out, t)}`);
}

/** Throws unless every target's binary exists and is newer than what it is compiled from. */
function check() {
  const compiled = /\.(cc|c|h|inc|gyp|gypi|json)$/;
  const newest = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) return p.endsWith(`${path.sep}test`) ? 0 : Math.max(0, ...fs.readdirSync(p).map((f) => newest(path.join(p, f))));
    return compiled.test(p) ? st.mtimeMs : 0;
  };
  const sources = Math.max(newest(path.join(root, 'binding.gyp')), newest(path.join(root, 'native')));
  for (const name of Object.keys(targets)) {
    const file = path.join(root, 'prebuilds', name, outName);
    if (!fs.existsSync(file)) throw new Error(`${path.relative(root, file)} is missing: run \`npm run prebuild\``);
    if (fs.statSync(file).mtimeMs < sources) throw new Error(`${path.relative(root, file)} is older than the sources: run \`npm run prebuild\``);
  }
}

if (require.main === module) {
  const names = process.argv.slice(2);
  try {
    if (names[0] === '--check') check();
    else for (const name of names.length ? names : Object.keys(targets)) prebuild(name);
  } catch (err) {
    console.error(`prebuild: ${err.message}`);
    process.exit(1);
  }
}
