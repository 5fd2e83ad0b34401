import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Tensor, cpuInfo, matmul } from '../src';
import { runChild } from './support/child';
import { expectClose, gemmTolerance, matmulRef } from './support/reference';

const root = path.resolve(__dirname, '..');

describe('addon loader', () => {
  test('reports the file it loaded', () => {
    const addon = cpuInfo().addon;
    expect(fs.existsSync(addon)).toBe(true);
    if (process.env.ATTN_ADDON) expect(addon).toBe(path.resolve(process.env.ATTN_ADDON));
  });

  test('a missing file: the error lists what was tried and how to build', () => {
    const r = runChild('ak.cpuInfo()', { ATTN_ADDON: '/nonexistent/attention_kernels.node' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('attention-kernels could not load its native addon. Tried:');
    expect(r.stderr).toContain('/nonexistent/attention_kernels.node: not found');
    expect(r.stderr).toContain('npm rebuild attention-kernels');
    expect(r.stderr).toMatch(/Node-API \d+/);
  });

  test('a file that is not an addon: the error carries the reason', () => {
    const r = runChild('ak.cpuInfo()', { ATTN_ADDON: path.join(root, 'package.json') });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`${path.join(root, 'package.json')}: `);
    expect(r.stderr).toMatch(/invalid ELF header|not a mach-o|not a valid Win32/i);
  });

  const builds = [
    ['node-gyp', path.join(root, 'build', 'Release', 'attention_kernels.node')],
    ['cmake-js', path.join(root, 'build-cmake', 'Release', 'attention_kernels.node')],
  ].filter(([, file]) => fs.existsSync(file));

  test.each(builds)('the %s binary can be chosen with ATTN_ADDON and computes correctly', (_, file) => {
    const r = runChild(
      `const a = ak.Tensor.randn([37, 41], { seed: 1 }), b = ak.Tensor.randn([41, 29], { seed: 2 });
       process.stdout.write(JSON.stringify({ addon: ak.cpuInfo().addon, c: Array.from(ak.matmul(a, b).data) }));`,
      { ATTN_ADDON: file },
    );
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.addon).toBe(file);
    const a = Tensor.randn([37, 41], { seed: 1 });
    const b = Tensor.randn([41, 29], { seed: 2 });
    const ref = matmulRef(a, b);
    expectClose(new Tensor(Float32Array.from(out.c), [37, 29]), ref.value, gemmTolerance(ref, 41), file);
    expect(matmul(a, b).shape).toEqual([37, 29]);
  });
});

describe('load errors name the commands of the package manager in use', () => {
  const cases: Array<[string, string[], string[]]> = [
    ['npm/12.2.0 node/v22.22.2 linux x64', ['npm install-scripts approve attention-kernels', 'npm rebuild attention-kernels'], ['npm 10 and older']],
    ['npm/10.8.2 node/v20.17.0 linux x64', ['npm rebuild attention-kernels'], ['install-scripts approve']],
    ['pnpm/10.34.9 npm/? node/v20.20.2 linux x64', ['pnpm approve-builds'], ['npm rebuild']],
    ['yarn/4.18.1 npm/? node/v20.20.2 linux x64', ['yarn rebuild attention-kernels'], ['npm rebuild']],
    ['bun/1.4.5 npm/? node/v24.3.0 linux x64', ['bun pm trust attention-kernels'], ['npm rebuild']],
  ];
  test.each(cases)('%s', (agent, present, absent) => {
    const r = runChild('ak.cpuInfo()', { ATTN_ADDON: '/nonexistent/attention_kernels.node', npm_config_user_agent: agent });
    expect(r.status).not.toBe(0);
    for (const s of present) expect(r.stderr).toContain(s);
    for (const s of absent) expect(r.stderr).not.toContain(s);
  });
});

// The install script and the loader as an installed copy of the package sees
// them: under node_modules/, with node-gyp-build beside it, on a PATH with no
// compiler. The built binary stands in for the prebuilt one.
describe('install script', () => {
  let dir = '';
  let pkg = '';
  let bin = '';
  const prebuilt = path.join('prebuilds', `${process.platform}-${process.arch}`, 'attention_kernels.napi.glibc.node');
  const built = path.join(root, 'build', 'Release', 'attention_kernels.node');

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'attention-kernels-install-'));
    pkg = path.join(dir, 'node_modules', 'attention-kernels');
    fs.mkdirSync(path.join(pkg, 'native'), { recursive: true });
    for (const f of ['install.js', 'build.js', 'load.js']) fs.copyFileSync(path.join(root, 'native', f), path.join(pkg, 'native', f));
    fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
    for (const dep of ['node-gyp-build', 'node-api-headers']) {
      fs.symlinkSync(path.join(root, 'node_modules', dep), path.join(dir, 'node_modules', dep), 'dir');
    }
    bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  });

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function install(env: NodeJS.ProcessEnv = {}) {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(ATTN_|CXX$|CC$|PYTHON$|npm_)/.test(k)));
    return spawnSync(path.join(bin, 'node'), [path.join(pkg, 'native', 'install.js')], {
      cwd: pkg,
      env: { ...clean, PATH: bin, ...env },
      encoding: 'utf8',
      timeout: 60_000,
    });
  }

  test('with no binary for the platform and no compiler: a short message saying what to install', () => {
    const r = install();
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('no prebuilt binary loads');
    expect(r.stderr).toContain('cannot build the native addon from source: no C++17 compiler');
    expect(r.stderr).toContain('apt-get install g++ make python3');
    expect(r.stderr.trim().split('\n').length).toBeLessThan(15);
    expect(r.stderr).not.toMatch(/gyp (ERR|info)|Traceback/);
  });

  test.runIf(process.platform === 'linux' && fs.existsSync(built))('with a prebuilt binary that loads: nothing to build, and the package loads it', () => {
    fs.mkdirSync(path.dirname(path.join(pkg, prebuilt)), { recursive: true });
    fs.copyFileSync(built, path.join(pkg, prebuilt));
    const r = install();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`using ${prebuilt}; no build needed`);
    const loaded = spawnSync(process.execPath, ['-e', `process.stdout.write(require(${JSON.stringify(path.join(pkg, 'native', 'load.js'))}).loadAddon().file)`], {
      env: { ...process.env, ATTN_ADDON: '' },
      encoding: 'utf8',
    });
    expect(loaded.stdout).toBe(path.join(pkg, prebuilt));
    // A machine the prebuilt binary is not for (node-gyp-build reads LIBC): build, and say what is missing.
    const musl = install({ LIBC: 'musl' });
    expect(musl.status).toBe(1);
    expect(musl.stderr).toContain('libc=musl');
    expect(musl.stderr).toContain('apt-get install g++ make python3');
  });
});
