#!/usr/bin/env node
'use strict';
// An embedding service on node:http. POST a sequence of token vectors as the
// body: float32 little-endian [S, E], S read from the body's length. The
// answer is its mean-pooled encoding: E float32 values, little-endian.
// Concurrent requests go through one Batcher, which packs them into batches.
//
//   npm run serve                          http://127.0.0.1:8080 (PORT or --port; --host)
//   npm run serve -- --no-batch            one request at a time, for comparison
//   npm run serve -- --threads 1           kernel threads of this process (default: all CPUs)
//   curl --data-binary @seq.f32 http://127.0.0.1:8080/embed -o embedding.f32
//   curl http://127.0.0.1:8080/stats       the batcher's counters, as JSON
//
//   npm run serve -- --weights enc.safetensors   a PyTorch nn.TransformerEncoder's
//                                          state dict (BERT-base shapes, GELU, post-norm)
//
// The model is a TransformerEncoder of BERT-base layers (d_model 768, 12
// heads, feed-forward 3072, exact GELU, post-norm, eps 1e-12): two layers of
// seeded weights unless --weights gives a state dict. It runs packed batches,
// so any module with forwardAsync(x, { sequenceLengths }) fits in
// createModel().

const http = require('node:http');
const os = require('node:os');
const ak = require('..'); // in an application: require('attention-kernels')

const EMBED_DIM = 768;
const MAX_TOKENS = 512; // per request
const LAYER = { dModel: EMBED_DIM, numHeads: 12, dimFeedforward: 3072, activation: 'gelu', layerNormEps: 1e-12 };

/** The encoder: from a safetensors state dict when `weights` names one, else two seeded layers. */
function createModel({ weights, numLayers = 2 } = {}) {
  if (weights) {
    const { tensors } = ak.loadSafetensors(weights);
    return ak.TransformerEncoder.fromStateDict(tensors, { numHeads: LAYER.numHeads, activation: LAYER.activation, layerNormEps: LAYER.layerNormEps });
  }
  return new ak.TransformerEncoder({ ...LAYER, numLayers, seed: 1 });
}

const LITTLE_ENDIAN = os.endianness() === 'LE';

/** The body as a float32 tensor [S, E], or a message saying why not. */
function decode(body, E) {
  const rowBytes = 4 * E;
  if (body.length === 0 || body.length % rowBytes !== 0) {
    return { error: `expected a body of S x ${E} float32 values (a multiple of ${rowBytes} bytes), received ${body.length} bytes` };
  }
  const values = new Float32Array(body.length / 4);
  if (LITTLE_ENDIAN) {
    new Uint8Array(values.buffer).set(body);
  } else {
    for (let i = 0; i < values.length; ++i) values[i] = body.readFloatLE(4 * i);
  }
  return { x: new ak.Tensor(values, [values.length / E, E]) };
}

/** The mean of the rows of y [S, E], as little-endian bytes. */
function meanPooled(y) {
  const S = y.shape[0];
  const mean = ak.matmul(ak.Tensor.full([1, S], 1 / S), y); // [1, E]
  const out = Buffer.alloc(4 * mean.size);
  for (let i = 0; i < mean.size; ++i) out.writeFloatLE(mean.data[i], 4 * i);
  return out;
}

/** Reads a request's body, up to `limit` bytes (then null). */
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size <= limit) chunks.push(c);
    });
    req.on('end', () => resolve(size <= limit ? Buffer.concat(chunks, size) : null));
    req.on('error', reject);
  });
}

function reply(res, status, body, headers = {}) {
  const text = typeof body === 'string';
  res.writeHead(status, {
    'content-type': text ? 'text/plain; charset=utf-8' : 'application/octet-stream',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

/**
 * The service: an http.Server (not yet listening) and its batcher. With
 * batch false, requests run one at a time (a batch holds one request).
 */
function createService({ model = createModel(), batch = true, maxQueue = 1024, maxTokens = MAX_TOKENS } = {}) {
  const batcher = new ak.Batcher(model, batch ? { maxBatchTokens: 8192, maxDelayMs: 1, maxQueue } : { maxBatchTokens: 1, maxDelayMs: 0, maxQueue });
  const E = batcher.embedDim;
  const server = http.createServer(async (req, res) => {
    try {
      if (req.method === 'GET' && req.url === '/stats') return reply(res, 200, JSON.stringify(batcher.stats()), { 'content-type': 'application/json' });
      if (req.method !== 'POST' || (req.url !== '/embed' && req.url !== '/')) return reply(res, 404, 'POST a float32 sequence to /embed, or GET /stats\n');
      const body = await readBody(req, maxTokens * 4 * E);
      if (body === null) return reply(res, 413, `at most ${maxTokens} tokens of ${E} float32 values per request\n`);
      const { x, error } = decode(body, E);
      if (error) return reply(res, 400, error + '\n');
      // A client that goes away takes its request out of the queue.
      const abort = new AbortController();
      const onClose = () => res.writableFinished || abort.abort();
      res.on('close', onClose);
      let y;
      try {
        y = await batcher.run(x, { signal: abort.signal });
      } finally {
        res.off('close', onClose);
      }
      reply(res, 200, meanPooled(y));
    } catch (err) {
      if (res.headersSent || res.destroyed) return;
      if (err instanceof ak.BatcherError) return reply(res, 503, err.message + '\n', { 'retry-after': '1' });
      if (err instanceof RangeError || err instanceof TypeError) return reply(res, 400, err.message + '\n');
      reply(res, 500, 'internal error\n');
      console.error(err);
    }
  });
  server.keepAliveTimeout = 30_000;
  return { server, batcher };
}

/** Parses the command line: --port, --host, --threads, --no-batch, --weights. */
function options(argv = process.argv.slice(2)) {
  const value = (name, fallback) => {
    const i = argv.indexOf(name);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
  };
  const threads = value('--threads', undefined);
  return {
    port: Number(value('--port', process.env.PORT ?? 8080)),
    host: value('--host', '127.0.0.1'),
    threads: threads === undefined ? undefined : Number(threads),
    batch: !argv.includes('--no-batch'),
    weights: value('--weights', undefined),
  };
}

/** Starts the service; prints where it listens. Stops on SIGINT/SIGTERM, answering what runs. */
function start(opts = options()) {
  if (opts.threads !== undefined) ak.setNumThreads(opts.threads);
  const { server, batcher } = createService({ model: createModel({ weights: opts.weights }), batch: opts.batch });
  server.listen(opts.port, opts.host, () => {
    const { address, port } = server.address();
    const info = ak.cpuInfo();
    console.log(
      `attention-kernels: serving on http://${address}:${port}/embed (${opts.batch ? 'batched' : 'one request at a time'}, ` +
        `${ak.getNumThreads()} threads, ${info.isa}, pid ${process.pid})`,
    );
  });
  const stop = () => {
    server.close();
    batcher.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return { server, batcher };
}

module.exports = { createModel, createService, decode, meanPooled, options, start, EMBED_DIM };

if (require.main === module) start();
