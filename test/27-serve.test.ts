import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

// The HTTP example (examples/serve.js) as a client sees it: started as its
// own process, answering concurrent requests with the mean-pooled encoding of
// each, which must equal the model run on that request alone.
const root = path.resolve(__dirname, '..');
const load = createRequire(__filename);
// The example uses the built package (dist/), so the expected values do too.
const serve = load(path.join(root, 'examples', 'serve.js'));
const ak = load(path.join(root, 'dist'));

let child: ChildProcess;
let url = '';

beforeAll(async () => {
  child = spawn(process.execPath, [path.join(root, 'examples', 'serve.js'), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /serving on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`serve.js exited with ${code}: ${out}${err}`)));
  });
});

afterAll(() => {
  child?.kill('SIGTERM');
});

/** [S, E] float32 little-endian, from a seed. */
function sequence(S: number, seed: number): { body: Buffer; x: unknown } {
  const x = ak.Tensor.randn([S, serve.EMBED_DIM], { seed });
  const body = Buffer.alloc(4 * x.size);
  for (let i = 0; i < x.size; ++i) body.writeFloatLE(x.data[i], 4 * i);
  return { body, x };
}

async function post(body: Buffer): Promise<{ status: number; bytes: Buffer }> {
  const r = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
  return { status: r.status, bytes: Buffer.from(await r.arrayBuffer()) };
}

describe('examples/serve.js', () => {
  test('concurrent requests each get the mean-pooled encoding of their own sequence', async () => {
    const model = serve.createModel();
    const lengths = [8, 1, 128, 33, 57, 100, 9, 64];
    const inputs = lengths.map((S, i) => sequence(S, 40 + i));
    const answers = await Promise.all(inputs.map((s) => post(s.body)));
    answers.forEach((a, i) => {
      expect(a.status).toBe(200);
      expect(a.bytes.length).toBe(4 * serve.EMBED_DIM);
      const y = model.forward(inputs[i].x);
      const want = serve.meanPooled(y) as Buffer;
      let worst = 0;
      for (let j = 0; j < serve.EMBED_DIM; ++j) worst = Math.max(worst, Math.abs(a.bytes.readFloatLE(4 * j) - want.readFloatLE(4 * j)));
      expect(worst, `request of ${lengths[i]} tokens`).toBeLessThanOrEqual(1e-5);
    });
    const stats = JSON.parse(Buffer.from(await (await fetch(url.replace(/\/embed$/, '/stats'))).arrayBuffer()).toString());
    expect(stats.requests).toBe(lengths.length);
    expect(stats.batches).toBeLessThan(lengths.length); // they were packed together
  });

  test('bad bodies get 400 or 413 with a message; the service goes on', async () => {
    const odd = await post(Buffer.alloc(4 * serve.EMBED_DIM + 2));
    expect(odd.status).toBe(400);
    expect(odd.bytes.toString()).toContain('expected a body of S x 768 float32 values (a multiple of 3072 bytes), received 3074 bytes');
    expect((await post(Buffer.alloc(0))).status).toBe(400);
    const long = await post(Buffer.alloc(4 * serve.EMBED_DIM * 513));
    expect(long.status).toBe(413);
    expect(long.bytes.toString()).toContain('at most 512 tokens');
    expect((await fetch(url.replace(/\/embed$/, '/nowhere'))).status).toBe(404);
    expect((await post(sequence(3, 1).body)).status).toBe(200);
  });

  test('--weights: the encoder from a PyTorch state dict in a safetensors file', () => {
    const enc = new ak.TransformerEncoder({ dModel: 48, numHeads: 12, dimFeedforward: 64, numLayers: 2, activation: 'gelu', layerNormEps: 1e-12, seed: 3 });
    const file = path.join(os.tmpdir(), `serve-weights-${process.pid}.safetensors`);
    ak.saveSafetensors(file, enc.stateDict());
    try {
      const loaded = serve.createModel({ weights: file });
      expect(loaded.layers.length).toBe(2);
      const x = ak.Tensor.randn([9, 48], { seed: 4 });
      expect(Array.from(loaded.forward(x).data)).toEqual(Array.from(enc.forward(x).data));
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});
