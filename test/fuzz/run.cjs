#!/usr/bin/env node
// The fuzz test: seeded random calls into the public API and the raw addon
// functions, valid and invalid arguments mixed, each batch in a child process
// so that a crash is caught and named. Results of valid calls are checked
// against the float64 references of test/support/float64.ts; invalid calls must
// fail with a TypeError or RangeError; raw calls must leave every byte outside
// the elements they write untouched.
//
//   node test/fuzz/run.cjs [--calls 20000] [--seed 1] [--from 0] [--jobs 2] [--batch 400]
//                          [--timeout 60] [--report file.json] [--verbose]
//
// Case i of a seed is always the same call (its generator is seeded with
// (seed, i)): `--seed S --from i --calls 1` runs it again alone. Batches run
// under every kernel path this CPU has, in turn. A child logs each call before
// it starts; when a child dies or stops answering, the call it was in is the
// finding, and a new child carries on after it. The environment is passed on
// (ATTN_ADDON for another binary; LD_PRELOAD and ASAN_OPTIONS for a sanitized
// one: see test/fuzz/asan.sh).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const dist = path.join(root, 'dist');

function parseArgs(argv) {
  const opts = { calls: 20000, seed: 1, from: 0, jobs: 2, batch: 400, timeout: 60, report: null, verbose: false };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    const key = a.replace(/^--/, '');
    if (key === 'verbose') {
      opts.verbose = true;
    } else if (key in opts) {
      const v = argv[++i];
      opts[key] = key === 'report' ? v : Number(v);
      if (key !== 'report' && !Number.isSafeInteger(opts[key])) throw new Error(`--${key} needs an integer, got ${v}`);
    } else {
      throw new Error(`unknown option ${a}`);
    }
  }
  return opts;
}

/** test/support/float64.ts as CommonJS over the compiled package, for the children. */
function compileReferences(dir) {
  const ts = require('typescript');
  const src = fs.readFileSync(path.join(root, 'test', 'support', 'float64.ts'), 'utf8');
  const out = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } });
  const code = out.outputText.replace(/require\("\.\.\/\.\.\/src"\)/g, `require(${JSON.stringify(dist)})`);
  const file = path.join(dir, 'float64.cjs');
  fs.writeFileSync(file, code);
  return file;
}

function availableIsas() {
  const ak = require(dist);
  if (process.env.ATTN_ISA) return [process.env.ATTN_ISA];
  return ak.cpuInfo().availableIsas;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'attn-fuzz-'));
  const references = compileReferences(dir);
  const isas = availableIsas();
  const end = opts.from + opts.calls;
  const batches = [];
  for (let b = opts.from; b < end; b += opts.batch) batches.push([b, Math.min(end, b + opts.batch)]);

  const findings = [];
  let done = 0;
  let children = 0;
  let batchNo = 0;

  // Runs cases [from, to) in children until all are done, one child after another.
  async function runBatch(from, to, isa) {
    let next = from;
    while (next < to) {
      const r = await runChild(next, to, isa);
      done += r.completed;
      findings.push(...r.findings);
      next = r.resumeAt;
    }
  }

  function runChild(from, to, isa) {
    children++;
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [path.join(__dirname, 'child.cjs'), String(opts.seed), String(from), String(to)], {
        env: { ...process.env, ATTN_ISA: isa, FUZZ_REFERENCES: references, FUZZ_DIST: dist },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const result = { completed: 0, findings: [], resumeAt: to };
      let current = null; // { i, what } of the call in progress
      let finished = false;
      let stderr = '';
      let buffered = '';
      let timer = null;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          result.hang = true;
          child.kill('SIGKILL');
        }, opts.timeout * 1000);
      };
      arm();
      child.stdout.on('data', (chunk) => {
        buffered += chunk;
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          arm();
          const tag = line.slice(0, 2);
          if (tag === 'S ') {
            const sp = line.indexOf(' ', 2);
            current = { i: Number(line.slice(2, sp)), what: line.slice(sp + 1) };
          } else if (tag === 'D ') {
            result.completed++;
            current = null;
          } else if (tag === 'F ') {
            const f = JSON.parse(line.slice(2));
            result.findings.push({ ...f, isa, seed: opts.seed });
          } else if (tag === 'E ') {
            finished = true;
          } else if (opts.verbose) {
            process.stdout.write(`[child] ${line}\n`);
          }
        }
      });
      child.stderr.on('data', (chunk) => {
        stderr += chunk;
        if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const clean = finished && code === 0 && !sanitizerReport(stderr);
        if (!clean) {
          const i = current ? current.i : null;
          result.findings.push({
            i,
            seed: opts.seed,
            isa,
            kind: result.hang ? 'hang' : 'crash',
            call: current ? current.what : '(between calls)',
            detail: `exit ${code}${signal ? `, signal ${signal}` : ''}${result.hang ? `, no answer for ${opts.timeout} s` : ''}\n${tail(stderr)}`,
          });
          if (current) {
            result.completed++; // the call that crashed counts as run
            result.resumeAt = current.i + 1;
          } else {
            result.resumeAt = to; // nothing to attribute it to: do not loop
          }
        } else if (stderr.trim() && opts.verbose) {
          process.stderr.write(stderr);
        }
        resolve(result);
      });
    });
  }

  // `jobs` batches at a time; batch b runs under kernel path b mod the paths available.
  const queue = batches.slice();
  const workers = Array.from({ length: Math.max(1, opts.jobs) }, async () => {
    while (queue.length) {
      const [from, to] = queue.shift();
      await runBatch(from, to, isas[batchNo++ % isas.length]);
    }
  });
  await Promise.all(workers);
  fs.rmSync(dir, { recursive: true, force: true });

  const seconds = (Date.now() - started) / 1000;
  for (const f of findings) {
    process.stdout.write(
      `FINDING (${f.kind}) seed ${f.seed} call ${f.i} [${f.isa}]: ${f.call}\n  ${String(f.detail).replace(/\n/g, '\n  ')}\n` +
        `  again: node test/fuzz/run.cjs --seed ${f.seed} --from ${f.i} --calls 1\n`,
    );
  }
  const summary = { calls: done, findings: findings.length, seconds, seed: opts.seed, from: opts.from, children, isas };
  if (opts.report) fs.writeFileSync(opts.report, JSON.stringify({ ...summary, list: findings }, null, 2));
  process.stdout.write(`fuzz: ${done} calls, ${findings.length} findings, ${seconds.toFixed(1)} s (seed ${opts.seed}, ${children} children, paths ${isas.join(', ')})\n`);
  process.exitCode = findings.length === 0 && done >= opts.calls ? 0 : 1;
}

/** An AddressSanitizer or UBSan report in a child's stderr. */
function sanitizerReport(stderr) {
  return /ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|SUMMARY: UndefinedBehaviorSanitizer/.test(stderr);
}

function tail(s) {
  const lines = s.trim().split('\n');
  return lines.slice(-40).join('\n');
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 2;
});
