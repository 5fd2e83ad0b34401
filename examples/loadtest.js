#!/usr/bin/env node
'use strict';
// Drives the embedding service of serve.js over loopback with autocannon:
// each mode starts the service in child processes, warms it up, then keeps
// `connections` clients in closed loops (each sends its next request when the
// answer arrives) for `duration` seconds, with sequences of 8 to 128 tokens.
// The modes take turns in `rounds` rounds (so that all see the same machine
// noise). Prints requests/s and tokens/s over all rounds, and the median over
// the rounds of each round's p50 and p99 latency, per mode, as a table.
//
//   npm run loadtest
//   npm run loadtest -- --duration 5 --rounds 1 --connections 32 --modes batched,one-at-a-time
//
// Modes: batched (one process, every CPU's thread), one-at-a-time (the same,
// one request per batch), cluster-batched and cluster-one-at-a-time (one
// process per CPU of one kernel thread each, examples/cluster.js).

const { spawn } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');
const { table } = require('./table');

let autocannon;
try {
  autocannon = require('autocannon');
} catch {
  console.error('The load test needs autocannon: npm install --save-dev autocannon');
  process.exit(1);
}

const argv = process.argv.slice(2);
const value = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
};
const DURATION = Number(value('--duration', 10));
const WARMUP = Number(value('--warmup', Math.min(2, DURATION)));
const CONNECTIONS = Number(value('--connections', 32));
const ROUNDS = Number(value('--rounds', 3));
const MODES = value('--modes', 'batched,one-at-a-time,cluster-batched,cluster-one-at-a-time').split(',');
const EMBED_DIM = 768;
const CPUS = os.availableParallelism();

const SERVERS = {
  batched: { script: 'serve.js', args: [], layout: `1 x ${CPUS}` },
  'one-at-a-time': { script: 'serve.js', args: ['--no-batch'], layout: `1 x ${CPUS}` },
  'cluster-batched': { script: 'cluster.js', args: ['--threads', '1'], layout: `${CPUS} x 1` },
  'cluster-one-at-a-time': { script: 'cluster.js', args: ['--threads', '1', '--no-batch'], layout: `${CPUS} x 1` },
};
for (const m of MODES) {
  if (!SERVERS[m]) {
    console.error(`unknown mode '${m}'; expected some of ${Object.keys(SERVERS).join(', ')}`);
    process.exit(1);
  }
}

/** Request bodies: [S, E] float32 little-endian, S uniform in 8..128, from a fixed seed. */
function bodies(count) {
  let state = 12345;
  const next = () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  return Array.from({ length: count }, () => {
    const S = 8 + Math.floor(next() * 121);
    const buf = Buffer.alloc(4 * S * EMBED_DIM);
    for (let i = 0; i < S * EMBED_DIM; ++i) buf.writeFloatLE(2 * next() - 1, 4 * i);
    return { S, buf };
  });
}

/** Starts a mode's service on a free port; resolves with its URL and the child process. */
function startServer(mode) {
  const { script, args } = SERVERS[mode];
  const child = spawn(process.execPath, [path.join(__dirname, script), '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const processes = script === 'cluster.js' ? CPUS : 1;
    child.stdout.on('data', (d) => {
      out += d;
      // Every process prints where it listens (the cluster's all on one port).
      const listening = [...out.matchAll(/serving on (http:\/\/\S+)/g)];
      if (listening.length >= processes) resolve({ url: listening[0][1], child });
    });
    child.on('exit', (code) => reject(new Error(`${script} exited with ${code} before listening:\n${out}`)));
  });
}

function stopServer(child) {
  return new Promise((resolve) => {
    child.removeAllListeners('exit');
    child.on('exit', resolve);
    child.kill('SIGTERM');
  });
}

/** One autocannon run; counts the tokens of the answered requests. */
async function drive(url, pool, seconds) {
  let tokens = 0;
  let sent = 0;
  const result = await autocannon({
    url,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        method: 'POST',
        setupRequest: (req, context) => {
          const b = pool[sent++ % pool.length];
          context.tokens = b.S;
          return { ...req, body: b.buf, headers: { 'content-type': 'application/octet-stream' } };
        },
        onResponse: (status, body, context) => {
          if (status === 200) tokens += context.tokens;
        },
      },
    ],
  });
  return { result, tokens };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];

async function main() {
  const pool = bodies(256);
  console.log(
    `load test: ${CONNECTIONS} connections in closed loops, ${DURATION} s per mode in ${ROUNDS} round(s), after ${WARMUP} s of warm-up each, ` +
      `sequences of 8-128 tokens, d_model ${EMBED_DIM}, ${CPUS} CPUs`,
  );
  const totals = Object.fromEntries(MODES.map((m) => [m, { seconds: 0, requests: 0, tokens: 0, p50: [], p99: [], failed: 0 }]));
  for (let round = 0; round < ROUNDS; ++round) {
    for (const mode of MODES) {
      const { url, child } = await startServer(mode);
      try {
        if (WARMUP > 0) await drive(url, pool, WARMUP);
        const { result, tokens } = await drive(url, pool, DURATION / ROUNDS);
        const t = totals[mode];
        t.seconds += result.duration;
        t.requests += result.requests.total;
        t.tokens += tokens;
        t.p50.push(result.latency.p50);
        t.p99.push(result.latency.p99);
        t.failed += result.errors + result.timeouts + result.non2xx;
      } finally {
        await stopServer(child);
      }
    }
  }
  const rows = MODES.map((mode) => {
    const t = totals[mode];
    return [mode, SERVERS[mode].layout, CONNECTIONS, (t.requests / t.seconds).toFixed(1), Math.round(t.tokens / t.seconds), median(t.p50).toFixed(1), median(t.p99).toFixed(1), t.failed];
  });
  console.log();
  table(['mode', 'processes x threads', 'connections', 'requests/s', 'tokens/s', 'p50 ms', 'p99 ms', 'failed'], rows);
  if (rows.some((r) => r[7] !== 0)) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
