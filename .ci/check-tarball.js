// Checks the tarball `npm pack` made: what a user needs is in it (the compiled
// TypeScript, the prebuilt binaries, the sources and scripts for a build from
// source, the README and what it shows, the license), nothing else is (tests,
// fixtures, build directories, CI), and every source map resolves inside it.
// Usage: node .ci/check-tarball.js <tarball>
'use strict';
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const tarball = process.argv[2];
const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' })
  .split('\n')
  .filter(Boolean)
  .map((f) => f.replace(/^package\//, ''));
const has = new Set(files);
const read = (f) => execFileSync('tar', ['-xzOf', tarball, `package/${f}`], { encoding: 'utf8', maxBuffer: 64 << 20 });
const problems = [];

const required = [
  'package.json', 'README.md', 'LICENSE', 'binding.gyp',
  'dist/index.js', 'dist/index.d.ts',
  'prebuilds/linux-x64/attention_kernels.napi.glibc.node',
  'prebuilds/linux-arm64/attention_kernels.napi.glibc.node',
  'native/load.js', 'native/install.js', 'native/build.js', 'native/sources.js', 'native/sources.json',
  'native/node-api/common.gypi',
];
for (const f of required) if (!has.has(f)) problems.push(`missing ${f}`);

const forbidden = /^(test|src|build|build-cmake|build-prebuild|\.ci|node_modules|native\/test)\/|^bench\/(run|onnx)\.js$|\.tgz$|^native\/prebuild/;
for (const f of files) if (forbidden.test(f)) problems.push(`should not be shipped: ${f}`);

// What the README shows (images, links to files) must be in the package.
const readme = read('README.md');
for (const m of readme.matchAll(/!\[[^\]]*\]\(([^)\s]+)\)/g)) {
  const target = m[1];
  if (!/^[a-z]+:/i.test(target) && !has.has(path.posix.normalize(target))) problems.push(`README image not shipped: ${target}`);
}

// Source maps: each source is shipped or carried inside the map.
for (const f of files.filter((f) => f.endsWith('.js.map'))) {
  const map = JSON.parse(read(f));
  map.sources.forEach((src, i) => {
    const shipped = has.has(path.posix.normalize(path.posix.join(path.posix.dirname(f), map.sourceRoot || '', src)));
    const inline = Array.isArray(map.sourcesContent) && typeof map.sourcesContent[i] === 'string';
    if (!shipped && !inline) problems.push(`${f}: source ${src} is neither shipped nor inlined`);
  });
}

if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`${files.length} files; required ones present, nothing unneeded, README images and source maps resolve`);
