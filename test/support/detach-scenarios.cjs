// Every async form, with each way JavaScript can take memory away (a
// structured-clone transfer, resize(0) of a resizable buffer, a transfer to a
// worker by postMessage), applied to an input or to out, on the library's
// memory and on the caller's (large: copied in chunks; small: copied by the
// addon). Prints one line per case: op | memory | size | how | which | note |
// outcome, the outcome being "resolved right", "resolved WRONG" or the error.
//
//   node test/support/detach-scenarios.cjs <package dir> [--check]
//
// With --check, exits 1 unless every outcome is "resolved right" or a
// RangeError (test/fuzz/asan.sh runs it so against the sanitized addon).
'use strict';
const ak = require(process.argv[2]);
const check = process.argv.includes('--check');
const { Worker } = require('node:worker_threads');
const T = ak.Tensor;
const worker = new Worker("require('node:worker_threads').parentPort.on('message', (m) => { new Uint8Array(m).fill(7); });", { eval: true });
worker.unref();
const takeAway = {
  transfer: (ab) => { try { structuredClone(ab, { transfer: [ab] }); } catch (e) { return 'refused'; } },
  resize: (ab) => { if (!ab.resizable) return 'fixed'; ab.resize(0); },
  postMessage: (ab) => { try { worker.postMessage(ab, [ab]); } catch (e) { return 'refused'; } },
};
// A tensor of the given shape with normal values, in memory of a kind.
let seed = 1;
function make(shape, kind) {
  const t = T.randn(shape, { seed: seed++ });
  if (kind === 'owned') return t;
  const n = t.size;
  const ab = kind === 'resizable' ? new ArrayBuffer(n * 4, { maxByteLength: n * 4 }) : new ArrayBuffer(n * 4);
  const data = new Float32Array(ab);
  data.set(t.data);
  return new T(data, shape);
}
const close = (got, want, tol) => got.length === want.length && got.every((x, i) => Math.abs(x - want[i]) <= tol * (1 + Math.abs(want[i])));
const ops = {
  matmulAsync: (n, kind) => {
    const a = make([n, n], kind), b = make([n, n], kind), out = make([n, n], kind);
    const want = ak.matmul(a.clone(), b.clone());
    return { inputs: [a, b], out, run: () => ak.matmulAsync(a, b, { out }), want: want.data };
  },
  softmaxAsync: (n, kind) => {
    const x = make([n, n], kind), out = make([n, n], kind);
    const want = ak.softmax(x.clone());
    return { inputs: [x], out, run: () => ak.softmaxAsync(x, { out }), want: want.data };
  },
  attentionAsync: (n, kind) => {
    const q = make([1, 2, n, 32], kind), k = make([1, 2, n, 32], kind), v = make([1, 2, n, 32], kind), out = make([1, 2, n, 32], kind);
    const want = ak.attention(q.clone(), k.clone(), v.clone());
    return { inputs: [q, k, v], out, run: () => ak.attentionAsync(q, k, v, { out }).then((r) => r.output), want: want.output.data };
  },
  forwardAsync: (n, kind) => {
    const mha = new ak.MultiHeadAttention({ embedDim: 64, numHeads: 4, seed: 2 });
    const x = make([1, n, 64], kind);
    const want = mha.forward(x.clone());
    return { inputs: [x], out: null, run: () => mha.forwardAsync(x).then((r) => r.output), want: want.output.data };
  },
};
(async () => {
  for (const [name, op] of Object.entries(ops)) {
    for (const kind of ['owned', 'plain', 'resizable']) {
      for (const size of ['large', 'small']) {
        const n = size === 'large' ? (name === 'forwardAsync' ? 1024 : 768) : 16;
        for (const [how, take] of Object.entries(takeAway)) {
          for (const which of ['input', 'out']) {
            const c = op(n, kind);
            const target = which === 'input' ? c.inputs[0] : c.out;
            if (!target) continue;
            const p = c.run();
            const note = take(target.data.buffer) || '';
            let line;
            try {
              const r = await p;
              line = 'resolved ' + (close(r.data, c.want, 1e-4) ? 'right' : 'WRONG');
            } catch (e) {
              line = e.constructor.name + ': ' + e.message;
            }
            console.log([name, kind, size, how, which, note, line].join(' | '));
        if (check && line !== 'resolved right' && !line.startsWith('RangeError: ')) process.exitCode = 1;
          }
        }
      }
    }
  }
  await worker.terminate();
})();
  
