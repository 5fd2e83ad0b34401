#!/usr/bin/env node
'use strict';
// The embedding service of serve.js on several processes sharing one port
// (node:cluster hands the connections out among them). The model keeps no
// state between requests, so any process can answer any request: one process
// per group of cores here, and as many machines as needed behind any HTTP
// load balancer.
//
//   node examples/cluster.js --workers 2 --threads 1     2 processes of 1 kernel thread
//   node examples/cluster.js --threads 2                 CPUs / 2 processes of 2 threads
//   (also --port, --host, --no-batch as for serve.js)

const cluster = require('node:cluster');
const os = require('node:os');
const serve = require('./serve');

const argv = process.argv.slice(2);
const value = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? Number(argv[i + 1]) : fallback;
};
const threads = value('--threads', 1);
const workers = value('--workers', Math.max(1, Math.floor(os.availableParallelism() / threads)));

if (cluster.isPrimary) {
  console.log(`attention-kernels: ${workers} worker processes of ${threads} kernel thread${threads === 1 ? '' : 's'}`);
  for (let i = 0; i < workers; ++i) cluster.fork();
  let stopping = false;
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) console.error(`worker ${worker.process.pid} exited (${signal || code})`);
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  // Each worker sizes its own kernel thread pool; listen() is shared through the primary.
  serve.start({ ...serve.options(argv), threads });
}
