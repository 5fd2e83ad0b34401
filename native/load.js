// Finds and loads the compiled addon, for the package (src/native.ts), its
// install script and the tests alike. Where it looks, in order:
//   - ATTN_ADDON, when set: that file and nothing else;
//   - what node-gyp-build picks for this package: a build from source
//     (build/Release, build/Debug), else the prebuilt binary for this platform
//     (prebuilds/<platform>-<arch>/, tagged napi and glibc or musl);
//   - a cmake-js build (build-cmake/Release).
// When none loads, one error says what was tried, why each failed, and what to
// run with the package manager in use.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const fileName = 'attention_kernels.node';

/** Candidates in order: `{ file }`, or `{ error }` when node-gyp-build found nothing. */
function addonCandidates(env = process.env) {
  if (env.ATTN_ADDON) return [{ file: path.resolve(env.ATTN_ADDON) }];
  const list = [];
  try {
    list.push({ file: require('node-gyp-build').resolve(root) });
  } catch (err) {
    const first = String(err.message).split('\n')[0].replace(/^No native build was found/, 'no build from source and no prebuilt binary');
    list.push({ error: `${root}: ${first}` });
  }
  list.push({ file: path.join(root, 'build-cmake', 'Release', fileName) });
  return list;
}

/** The prebuilt binaries in this package, e.g. ['linux-arm64 (glibc)', 'linux-x64 (glibc)']. */
function prebuiltPlatforms() {
  const dir = path.join(root, 'prebuilds');
  const list = (d) => {
    try {
      return fs.readdirSync(d).sort();
    } catch {
      return [];
    }
  };
  return list(dir).flatMap((platform) =>
    list(path.join(dir, platform))
      .filter((f) => f.endsWith('.node'))
      .map((f) => {
        const libc = f.split('.').find((t) => t === 'glibc' || t === 'musl');
        return libc ? `${platform} (${libc})` : platform;
      }),
  );
}

/** The package manager that installed this package, as far as can be told: { name, major? } or null. */
function packageManager(env = process.env) {
  const agent = /^(npm|pnpm|yarn|bun)\/(\d+)/.exec(env.npm_config_user_agent || '');
  if (agent) return { name: agent[1], major: Number(agent[2]) };
  if (root.split(path.sep).includes('.pnpm')) return { name: 'pnpm' };
  const lockfiles = [
    ['pnpm-lock.yaml', 'pnpm'],
    ['bun.lock', 'bun'],
    ['bun.lockb', 'bun'],
    ['yarn.lock', 'yarn'],
    ['package-lock.json', 'npm'],
    ['npm-shrinkwrap.json', 'npm'],
  ];
  for (let dir = root; ; dir = path.dirname(dir)) {
    const hit = lockfiles.find(([f]) => fs.existsSync(path.join(dir, f)));
    if (hit) return { name: hit[1] };
    if (dir === path.dirname(dir)) return null;
  }
}

/** What to run to build the addon from source with each package manager. */
const buildCommands = {
  npm: (major) =>
    major !== undefined && major <= 10
      ? ['npm rebuild attention-kernels']
      : [
          'npm install-scripts approve attention-kernels',
          'npm rebuild attention-kernels',
          ...(major === undefined ? ['(npm 10 and older: `npm rebuild attention-kernels` alone)'] : []),
        ],
  pnpm: () => ['pnpm approve-builds          (select attention-kernels: pnpm builds it once approved)'],
  yarn: () => [
    'add to package.json: "dependenciesMeta": { "attention-kernels": { "built": true } }',
    'yarn rebuild attention-kernels',
  ],
  bun: () => ['bun pm trust attention-kernels'],
};

function libcName() {
  if (process.platform !== 'linux') return '';
  const report = process.report && typeof process.report.getReport === 'function' ? process.report.getReport() : null;
  return report && report.header && report.header.glibcVersionRuntime ? ` (glibc ${report.header.glibcVersionRuntime})` : ' (musl or another libc)';
}

function loadErrorMessage(failures, env) {
  const pm = packageManager(env);
  const prebuilt = prebuiltPlatforms();
  const lines = [
    'attention-kernels could not load its native addon. Tried:',
    ...failures.map((f) => `  - ${f}`),
    `Platform: node ${process.version}, ${process.platform}-${process.arch}${libcName()}, Node-API ${process.versions.napi}.`,
  ];
  if (env.ATTN_ADDON) lines.push('ATTN_ADDON names the only file tried; unset it to use the package\'s own binary.');
  lines.push(
    prebuilt.length
      ? `The package ships prebuilt binaries for ${prebuilt.join(', ')}.`
      : 'This copy of the package has no prebuilt binaries.',
    'Where none fits, its install script builds the addon from source (with a C++17 compiler, make and Python 3),',
    'but package managers skip the install scripts of dependencies until they are approved. To build it now:',
  );
  const managers = pm ? [pm] : Object.keys(buildCommands).map((name) => ({ name }));
  for (const m of managers) {
    const cmds = buildCommands[m.name](m.major);
    lines.push(...cmds.map((c, i) => `  ${pm ? '' : (i === 0 ? m.name + ':' : '').padEnd(6)}${c}`));
  }
  if (!root.split(path.sep).includes('node_modules')) {
    lines.push('In a checkout of the package: `npm run build:native` (node-gyp) or `npm run build:cmake` (cmake-js).');
  }
  lines.push('Or point ATTN_ADDON at an attention_kernels.node file.');
  return lines.join('\n');
}

/** Loads the addon: `{ binding, file }`, or throws the error described above. */
function loadAddon(env = process.env) {
  const failures = [];
  for (const c of addonCandidates(env)) {
    if (!c.file) {
      failures.push(c.error);
      continue;
    }
    if (!fs.existsSync(c.file)) {
      failures.push(`${c.file}: not found`);
      continue;
    }
    const mod = { exports: {} };
    try {
      process.dlopen(mod, c.file);
      return { binding: mod.exports, file: c.file };
    } catch (err) {
      const message = String(err && err.message);
      // The binary loaded but refused the forced ISA: that is the answer.
      if (message.startsWith('ATTN_ISA=')) {
        throw new Error(`attention-kernels: ${message} (set by the ATTN_ISA environment variable; loaded ${c.file})`);
      }
      failures.push(`${c.file}: ${message}`);
    }
  }
  throw new Error(loadErrorMessage(failures, env));
}

module.exports = { root, addonCandidates, loadAddon, packageManager, prebuiltPlatforms };
