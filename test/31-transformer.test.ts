// Transformer encoder and decoder layers and stacks: PyTorch parity on the
// golden cases (pytorch-transformer, computed by PyTorch 1.13; extra-transformer,
// by the float64 re-implementation in test/fixtures/make_extra_transformer.py),
// state dicts under PyTorch's names, masks, incremental decoding against the
// full causal forward, and errors.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import {
  Tensor,
  TransformerDecoder,
  TransformerDecoderLayer,
  TransformerEncoder,
  TransformerEncoderLayer,
  getNumThreads,
  layerNorm,
  loadSafetensors,
  saveSafetensors,
  setNumThreads,
  type Activation,
  type DecoderForwardOptions,
  type EncoderForwardOptions,
} from '../src';
import { expectBitwiseEqual, expectClose, values } from './support/reference';

const TOL = 1e-4;
const threadsBefore = getNumThreads();
afterAll(() => setNumThreads(threadsBefore));

const dirs = ['pytorch-transformer', 'extra-transformer'].map((d) => path.join(__dirname, 'fixtures', d));
const cases = dirs.flatMap((dir) =>
  fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .sort()
    .map((f) => [`${path.basename(dir)}/${f.replace('.safetensors', '')}`, path.join(dir, f)] as const),
);

type Module = TransformerEncoderLayer | TransformerEncoder | TransformerDecoderLayer | TransformerDecoder;

/** The fixture's module (from its state dict) and a forward over its inputs, sync or async. */
function setup(file: string) {
  const { tensors: t, metadata: m } = loadSafetensors(file);
  const options = {
    numHeads: Number(m.nhead),
    activation: m.activation as Activation,
    normFirst: m.norm_first === 'true',
    layerNormEps: Number(m.layer_norm_eps),
  };
  const Kind = { encoder_layer: TransformerEncoderLayer, encoder: TransformerEncoder, decoder_layer: TransformerDecoderLayer, decoder: TransformerDecoder }[m.kind]!;
  const module: Module = Kind.fromStateDict(t, options);
  const enc: EncoderForwardOptions = { srcMask: t['input.src_mask'], srcKeyPaddingMask: t['input.src_key_padding_mask'] };
  const dec: DecoderForwardOptions = {
    tgtMask: t['input.tgt_mask'],
    memoryMask: t['input.memory_mask'],
    tgtKeyPaddingMask: t['input.tgt_key_padding_mask'],
    memoryKeyPaddingMask: t['input.memory_key_padding_mask'],
  };
  const run = (async: boolean, extra: object = {}): Tensor | Promise<Tensor> => {
    if (module instanceof TransformerEncoderLayer || module instanceof TransformerEncoder) {
      return async ? module.forwardAsync(t['input.src'], { ...enc, ...extra }) : module.forward(t['input.src'], { ...enc, ...extra });
    }
    return async
      ? module.forwardAsync(t['input.tgt'], t['input.memory'], { ...dec, ...extra })
      : module.forward(t['input.tgt'], t['input.memory'], { ...dec, ...extra });
  };
  return { t, m, module, run };
}

describe(`PyTorch parity of the Transformer layers (${process.env.ATTN_ISA} kernels), within ${TOL}`, () => {
  test('the fixture folders are present and complete', () => {
    expect(cases.filter(([n]) => n.startsWith('pytorch-transformer/')).length).toBe(5);
    expect(cases.filter(([n]) => n.startsWith('extra-transformer/')).length).toBeGreaterThanOrEqual(9);
  });

  test.each(cases)('%s', async (name, file) => {
    const { t, m, module, run } = setup(file);
    const want = t['output.out'];
    const got = run(false) as Tensor;
    expect(got.shape).toEqual(want.shape);
    expectClose(got, values(want), TOL, name);
    expectBitwiseEqual(await run(true), got, `${name} (async)`);
    // The module's own state dict holds exactly the fixture's parameters, under the same names.
    const params = Object.keys(t).filter((k) => !k.startsWith('input.') && !k.startsWith('output.'));
    const sd = module.stateDict();
    expect(Object.keys(sd).sort()).toEqual(params.sort());
    for (const k of params) expectBitwiseEqual(sd[k], t[k], k);
    // A causal mask stored in the fixture is the same as causal: true.
    const mask = t['input.src_mask'] ?? t['input.tgt_mask'];
    if (mask && mask.dtype === 'uint8' && mask.rank === 2 && values(mask).every((v, i) => v === (i % mask.shape[1] > Math.floor(i / mask.shape[1]) ? 1 : 0))) {
      const key = t['input.src_mask'] ? 'srcMask' : 'tgtMask';
      expectBitwiseEqual(run(false, { [key]: undefined, causal: true }) as Tensor, got, `${name} (causal: true)`);
    }
    expect(m.kind).toMatch(/^(encoder|decoder)(_layer)?$/);
  });
});

describe('fresh modules', () => {
  test('deterministic for a seed, initialised as PyTorch does, shapes', () => {
    const a = new TransformerEncoderLayer({ dModel: 16, numHeads: 4, dimFeedforward: 24, seed: 5 });
    const b = new TransformerEncoderLayer({ dModel: 16, numHeads: 4, dimFeedforward: 24, seed: 5 });
    const c = new TransformerEncoderLayer({ dModel: 16, numHeads: 4, dimFeedforward: 24, seed: 6 });
    const x = Tensor.randn([2, 5, 16], { seed: 1 });
    expectBitwiseEqual(a.forward(x), b.forward(x), 'same seed');
    expect(values(a.forward(x))).not.toEqual(values(c.forward(x)));
    expect(a.linear1.weight.shape).toEqual([24, 16]);
    expect(a.linear2.weight.shape).toEqual([16, 24]);
    expect(Math.max(...values(a.linear1.weight).map(Math.abs))).toBeLessThanOrEqual(1 / 4);
    expect(Array.from(a.norm1.weight.data)).toEqual(new Array(16).fill(1));
    expect(Array.from(a.norm2.bias!.data)).toEqual(new Array(16).fill(0));
    expect([a.dimFeedforward, a.activation, a.normFirst, a.layerNormEps, a.bias]).toEqual([24, 'relu', false, 1e-5, true]);
    const d = new TransformerDecoderLayer({ dModel: 16, numHeads: 2 });
    expect(d.dimFeedforward).toBe(2048);
    expect(Object.keys(d.stateDict())).toContain('multihead_attn.in_proj_weight');
    expect(Object.keys(d.stateDict())).toContain('norm3.bias');
    const noBias = new TransformerEncoder({ dModel: 8, numHeads: 2, dimFeedforward: 8, numLayers: 2, bias: false, finalNorm: true });
    expect(Object.keys(noBias.stateDict()).filter((k) => k.endsWith('bias'))).toEqual([]);
    expect(Object.keys(noBias.stateDict())).toContain('norm.weight');
    // Each layer of a stack has its own weights.
    expect(values(noBias.layers[0].linear1.weight)).not.toEqual(values(noBias.layers[1].linear1.weight));
  });

  test('a stack is its layers one after another, then the final norm (pre- and post-norm)', () => {
    for (const normFirst of [false, true]) {
      const enc = new TransformerEncoder({ dModel: 24, numHeads: 3, dimFeedforward: 40, numLayers: 3, normFirst, activation: 'gelu', finalNorm: true, seed: 2 });
      const x = Tensor.randn([2, 7, 24], { seed: 3 });
      let y = x;
      for (const l of enc.layers) y = l.forward(y, { causal: true });
      y = layerNorm(y, { weight: enc.norm!.weight, bias: enc.norm!.bias });
      expectBitwiseEqual(enc.forward(x, { causal: true }), y, `normFirst ${normFirst}`);
      // The final norm's own eps (a custom nn.TransformerEncoder(..., norm=nn.LayerNorm(d, eps))).
      const eps = TransformerEncoder.fromStateDict(enc.stateDict(), { numHeads: 3, normFirst, activation: 'gelu', layerNormEps: 1e-6, finalNormEps: 0.5 });
      expect(eps.normEps).toBe(0.5);
      let z0 = x;
      for (const l of eps.layers) z0 = l.forward(z0);
      expectBitwiseEqual(eps.forward(x), layerNorm(z0, { weight: enc.norm!.weight, bias: enc.norm!.bias, eps: 0.5 }), `finalNormEps, normFirst ${normFirst}`);
      const dec = new TransformerDecoder({ dModel: 24, numHeads: 3, dimFeedforward: 40, numLayers: 2, normFirst, seed: 4 });
      const mem = Tensor.randn([2, 5, 24], { seed: 5 });
      let z = x;
      for (const l of dec.layers) z = l.forward(z, mem, { causal: true });
      expectBitwiseEqual(dec.forward(x, mem, { causal: true }), z, `decoder normFirst ${normFirst}`);
    }
  });

  test('inputs are not modified, results are new tensors, unbatched inputs give unbatched results', () => {
    const layer = new TransformerEncoderLayer({ dModel: 16, numHeads: 4, dimFeedforward: 32, normFirst: true });
    const x = Tensor.randn([3, 16], { seed: 9 });
    const before = values(x);
    const y1 = layer.forward(x);
    const y2 = layer.forward(x);
    expect(y1.shape).toEqual([3, 16]);
    expect(y1.data).not.toBe(y2.data);
    expect(values(x)).toEqual(before);
    expectBitwiseEqual(y1, layer.forward(x.unsqueeze(0)).select(0, 0), 'unbatched = batch of one');
  });

  test('forwardAsync leaves the event loop running and gives the same bits as forward', async () => {
    const enc = new TransformerEncoder({ dModel: 128, numHeads: 4, dimFeedforward: 512, numLayers: 2, activation: 'gelu', seed: 9 });
    // Long enough (about 20 ms on two threads) for a 1 ms interval to fire on
    // a busy machine: the forward settles once, its kernels being one chain.
    const x = Tensor.randn([8, 384, 128], { seed: 10 });
    const sync = enc.forward(x);
    let ticks = 0;
    let done = false;
    const timer = setInterval(() => ticks++, 0);
    const pending = enc.forwardAsync(x);
    void pending.then(() => (done = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(done).toBe(false);
    const got = await pending;
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
    expectBitwiseEqual(got, sync, 'async');
  });

  test('results do not depend on the thread count', () => {
    const enc = new TransformerEncoder({ dModel: 64, numHeads: 4, dimFeedforward: 256, numLayers: 2, activation: 'gelu', seed: 7 });
    const x = Tensor.randn([4, 70, 64], { seed: 8 });
    setNumThreads(1);
    const one = enc.forward(x);
    setNumThreads(2);
    expectBitwiseEqual(enc.forward(x), one, '2 threads');
  });
});

describe('masks', () => {
  const layer = new TransformerEncoderLayer({ dModel: 32, numHeads: 4, dimFeedforward: 48, seed: 11 });
  const x = Tensor.randn([2, 6, 32], { seed: 12 });

  test('uint8 and float masks, [S, S] and [B·h, S, S], key padding', () => {
    const u8 = Tensor.zeros([6, 6], 'uint8');
    const fl = Tensor.zeros([6, 6]);
    for (let i = 0; i < 6; ++i)
      for (let j = i + 1; j < 6; ++j) {
        u8.data[i * 6 + j] = 1;
        fl.data[i * 6 + j] = -Infinity;
      }
    const causal = layer.forward(x, { causal: true });
    expectBitwiseEqual(layer.forward(x, { srcMask: u8 }), causal, 'uint8 mask');
    expectClose(layer.forward(x, { srcMask: fl }), values(causal), 1e-6, 'float mask');
    expectClose(layer.forward(x, { srcMask: u8.unsqueeze(0).expand([8, 6, 6]).clone() }), values(causal), 1e-6, '[B·h, S, S]');
    const kpm = Tensor.zeros([2, 6], 'uint8');
    kpm.data.fill(1, 10, 12); // batch 1: the last two keys are padding
    const padded = layer.forward(x, { srcKeyPaddingMask: kpm });
    // Batch 0 is unaffected; batch 1 equals running its first four positions' keys only.
    expectBitwiseEqual(padded.select(0, 0), layer.forward(x.narrow(0, 0, 1)).select(0, 0), 'batch 0');
    const fkpm = Tensor.zeros([2, 6]);
    fkpm.data.fill(-Infinity, 10, 12);
    expectClose(layer.forward(x, { srcKeyPaddingMask: fkpm }), values(padded), 1e-6, 'float key padding');
  });

  test('bad masks are named by their option', () => {
    expect(() => layer.forward(x, { srcMask: Tensor.zeros([6, 5], 'uint8') })).toThrow(
      'Expected Tensor [6, 6] or [8, 6, 6] for srcMask but received a uint8 Tensor of shape [6, 5]',
    );
    expect(() => layer.forward(x, { srcKeyPaddingMask: Tensor.zeros([6], 'uint8') })).toThrow(
      'Expected Tensor of shape [2, 6] for srcKeyPaddingMask but received a uint8 Tensor of shape [6]',
    );
    expect(() => layer.forward(x, { srcMask: [1] as never })).toThrow('Expected Tensor for srcMask but received an Array of length 1');
    expect(() => layer.forward(x, { causal: 1 as never })).toThrow('Expected boolean for causal but received 1 of type number');
    expect(() => layer.forward(x, { mask: u8() } as never)).toThrow("Unknown option 'mask' for forward");
    const dec = new TransformerDecoderLayer({ dModel: 32, numHeads: 4, dimFeedforward: 16 });
    const mem = Tensor.randn([2, 9, 32], { seed: 13 });
    expect(() => dec.forward(x, mem, { memoryMask: Tensor.zeros([6, 6]) })).toThrow('Expected Tensor [6, 9] or [8, 6, 9] for memoryMask');
    expect(() => dec.forward(x, mem, { memoryKeyPaddingMask: Tensor.zeros([2, 6]) })).toThrow(
      'Expected Tensor of shape [2, 9] for memoryKeyPaddingMask',
    );
    expect(() => dec.forward(x, mem.narrow(0, 0, 1))).toThrow('forward: batch sizes differ: tgt 2, memory 1');
    expect(() => dec.forward(x, mem.select(0, 0))).toThrow('forward: tgt has rank 3 but memory has rank 2');
  });
  const u8 = () => Tensor.zeros([6, 6], 'uint8');
});

describe('incremental decoding', () => {
  for (const normFirst of [false, true]) {
    test(`one or more steps at a time equals the full causal forward (normFirst ${normFirst})`, async () => {
      const dec = new TransformerDecoder({ dModel: 32, numHeads: 4, dimFeedforward: 64, numLayers: 3, normFirst, activation: 'gelu', finalNorm: true, seed: 21 });
      const tgt = Tensor.randn([2, 13, 32], { seed: 22 });
      const mem = Tensor.randn([2, 9, 32], { seed: 23 });
      const memoryKeyPaddingMask = Tensor.zeros([2, 9], 'uint8');
      memoryKeyPaddingMask.data.fill(1, 15, 18); // batch 1: its last three memory positions are padding
      const full = values(dec.forward(tgt, mem, { causal: true, memoryKeyPaddingMask }));
      const cache = dec.createCache({ batch: 2, capacity: 2 }); // grows on the way
      for (const [round, sizes] of [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [4, 1, 3, 5], [13]].entries()) {
        cache.reset();
        let t = 0;
        for (const [i, n] of sizes.entries()) {
          const step = tgt.narrow(1, t, n);
          const y = i % 2 ? await dec.forwardAsync(step, mem, { cache, memoryKeyPaddingMask }) : dec.forward(step, mem, { cache, memoryKeyPaddingMask });
          expect(y.shape).toEqual([2, n, 32]);
          for (let b = 0; b < 2; ++b) expectClose(y.select(0, b), full.subarray((b * 13 + t) * 32, (b * 13 + t + n) * 32), 1e-5, `round ${round} step ${t} batch ${b}`);
          t += n;
        }
        expect(cache.length).toBe(13);
      }
      // Rolling back and decoding the same steps again gives the same results.
      cache.truncate(10);
      const again = dec.forward(tgt.narrow(1, 10, 3), mem, { cache, memoryKeyPaddingMask });
      for (let b = 0; b < 2; ++b) expectClose(again.select(0, b), full.subarray((b * 13 + 10) * 32, (b * 13 + 13) * 32), 1e-5, `after truncate, batch ${b}`);
    });
  }

  test('a single decoder layer, unbatched steps', () => {
    const layer = new TransformerDecoderLayer({ dModel: 16, numHeads: 2, dimFeedforward: 20, activation: 'gelu_tanh', seed: 31 });
    const tgt = Tensor.randn([7, 16], { seed: 32 });
    const mem = Tensor.randn([4, 16], { seed: 33 });
    const full = values(layer.forward(tgt, mem, { causal: true }));
    const cache = layer.createCache();
    for (let t = 0; t < 7; ++t) {
      const y = layer.forward(tgt.narrow(0, t, 1), mem, { cache });
      expect(y.shape).toEqual([1, 16]);
      expectClose(y, full.subarray(t * 16, (t + 1) * 16), 1e-5, `step ${t}`);
    }
  });

  test('the cache refuses another memory, batch or decoder', () => {
    const dec = new TransformerDecoder({ dModel: 16, numHeads: 2, dimFeedforward: 16, numLayers: 2 });
    const mem = Tensor.randn([1, 4, 16], { seed: 41 });
    const cache = dec.createCache();
    dec.forward(Tensor.randn([1, 1, 16]), mem, { cache });
    expect(() => dec.forward(Tensor.randn([1, 1, 16]), mem.clone(), { cache })).toThrow(
      'forward: cache holds the keys and values of another memory tensor; pass the same memory every step, or call cache.reset() first',
    );
    expect(() => dec.forward(Tensor.randn([2, 1, 16]), Tensor.randn([2, 4, 16]), { cache })).toThrow('forward: cache holds batch 1 but tgt has batch 2');
    const other = new TransformerDecoder({ dModel: 16, numHeads: 2, dimFeedforward: 16, numLayers: 3 });
    expect(() => other.forward(Tensor.randn([1, 1, 16]), mem, { cache })).toThrow(/cache was made for another decoder \(2 layers/);
    expect(() => dec.forward(Tensor.randn([1, 1, 16]), mem, { cache: {} as never })).toThrow(
      'Expected TransformerDecoderCache for cache but received an object',
    );
    expect(() => dec.createCache({ batch: 0 })).toThrow('Expected positive integer for batch but received 0 of type number');
    cache.reset();
    dec.forward(Tensor.randn([1, 2, 16]), mem.clone(), { cache });
    expect(cache.length).toBe(2);
  });

  test('one forward at a time per cache; a failed forward leaves it usable', async () => {
    const dec = new TransformerDecoder({ dModel: 16, numHeads: 2, dimFeedforward: 16, numLayers: 2 });
    const mem = Tensor.randn([1, 4, 16], { seed: 42 });
    const cache = dec.createCache();
    const pending = dec.forwardAsync(Tensor.randn([1, 1, 16]), mem, { cache });
    expect(() => dec.forward(Tensor.randn([1, 1, 16]), mem, { cache })).toThrow(
      'forward: cache is in use by a forward that has not settled; one forward at a time per cache',
    );
    await pending;
    expect(cache.length).toBe(1);
    expect(() => dec.forward(Tensor.randn([1, 1, 16]), mem, { cache, tgtMask: Tensor.zeros([1, 3]) })).toThrow(/tgtMask/);
    expect(dec.forward(Tensor.randn([1, 1, 16]), mem, { cache }).shape).toEqual([1, 1, 16]);
    expect(cache.length).toBe(2);
  });
});

describe('state dicts', () => {
  test('round trip through safetensors, with a prefix', () => {
    const enc = new TransformerEncoder({ dModel: 16, numHeads: 4, dimFeedforward: 32, numLayers: 2, finalNorm: true, normFirst: true, activation: 'gelu', seed: 51 });
    const prefixed = Object.fromEntries(Object.entries(enc.stateDict()).map(([k, v]) => [`encoder.${k}`, v]));
    const { tensors } = loadSafetensors(saveSafetensors({ ...prefixed, 'decoder.layers.0.linear1.weight': Tensor.zeros([2, 2]) }));
    const back = TransformerEncoder.fromStateDict(tensors, { numHeads: 4, prefix: 'encoder.', normFirst: true, activation: 'gelu' });
    expect(back.numLayers).toBe(2);
    expect(back.norm).toBeDefined();
    const x = Tensor.randn([2, 5, 16], { seed: 52 });
    expectBitwiseEqual(back.forward(x), enc.forward(x), 'round trip');
    // The copies are the module's own: changing the loaded tensors changes nothing.
    tensors['encoder.layers.0.linear1.weight'].data.fill(0);
    expectBitwiseEqual(back.forward(x), enc.forward(x), 'copied');
    // numLayers may ask for fewer layers only when the rest are absent.
    expect(() => TransformerEncoder.fromStateDict(tensors, { numHeads: 4, prefix: 'encoder.', numLayers: 1 })).toThrow(
      "fromStateDict: unexpected tensor 'encoder.layers.1.self_attn.in_proj_weight' in the state dict; expected encoder.layers.0.* to layers.0.*, encoder.norm.weight, encoder.norm.bias",
    );
    expect(() => TransformerEncoder.fromStateDict(tensors, { numHeads: 4, prefix: 'encoder.', numLayers: 3 })).toThrow(
      "fromStateDict: missing tensor 'encoder.layers.2.self_attn.in_proj_weight'",
    );
  });

  test('missing, misshapen and unexpected tensors are named', () => {
    const sd = new TransformerDecoderLayer({ dModel: 16, numHeads: 4, dimFeedforward: 24 }).stateDict();
    const without = (name: string) => Object.fromEntries(Object.entries(sd).filter(([k]) => k !== name));
    const load = (d: Record<string, Tensor>) => TransformerDecoderLayer.fromStateDict(d, { numHeads: 4 });
    expect(() => load(without('linear2.weight'))).toThrow("fromStateDict: missing tensor 'linear2.weight' of shape [16, 24]");
    expect(() => load(without('linear1.weight'))).toThrow("fromStateDict: missing tensor 'linear1.weight' of shape [dimFeedforward, 16]");
    expect(() => load(without('norm3.bias'))).toThrow("fromStateDict: missing tensor 'norm3.bias' of shape [16]");
    expect(() => load(without('multihead_attn.out_proj.weight'))).toThrow("fromStateDict: missing tensor 'multihead_attn.out_proj.weight' of shape [16, 16]");
    expect(() => load({ ...sd, 'norm1.weight': Tensor.zeros([15]) })).toThrow("fromStateDict: tensor 'norm1.weight' has shape [15], expected [16]");
    expect(() => load({ ...sd, 'linear1.weight': Tensor.zeros([24, 15]) })).toThrow(
      "fromStateDict: tensor 'linear1.weight' has shape [24, 15], expected [dimFeedforward, 16]",
    );
    expect(() => load({ ...sd, 'linear2.weight': Tensor.zeros([16, 25]) })).toThrow("fromStateDict: tensor 'linear2.weight' has shape [16, 25], expected [16, 24]");
    expect(() => load({ ...sd, 'linear1.weights': Tensor.zeros([1]) })).toThrow("fromStateDict: unexpected tensor 'linear1.weights' in the state dict");
    expect(() => load({ ...sd, 'self_attn.out_proj.weights': Tensor.zeros([1]) })).toThrow(
      "fromStateDict: unexpected tensor 'self_attn.out_proj.weights' in the state dict",
    );
    expect(() => load({ ...sd, 'norm2.weight': Tensor.zeros([16], 'uint8') })).toThrow("Expected float32 Tensor for stateDict['norm2.weight']");
    const enc = new TransformerEncoderLayer({ dModel: 16, numHeads: 4, dimFeedforward: 24 }).stateDict();
    expect(() => TransformerEncoderLayer.fromStateDict({ ...enc, 'norm3.weight': Tensor.zeros([16]) }, { numHeads: 4 })).toThrow(
      "fromStateDict: unexpected tensor 'norm3.weight' in the state dict; expected self_attn.*, linear1.weight",
    );
    // Biases are all there or all absent.
    expect(() => TransformerEncoderLayer.fromStateDict(Object.fromEntries(Object.entries(enc).filter(([k]) => k !== 'linear1.bias')), { numHeads: 4 })).toThrow(
      "fromStateDict: missing tensor 'linear1.bias' of shape [24]",
    );
    // Keys outside the layer's names (a fixture's inputs, another module's) are ignored.
    expect(TransformerEncoderLayer.fromStateDict({ ...enc, 'input.src': Tensor.zeros([1]), 'head.weight': Tensor.zeros([2]) }, { numHeads: 4 }).dModel).toBe(16);
    expect(() => TransformerEncoderLayer.fromStateDict(enc, { numHeads: 3 })).toThrow('Expected numHeads that divides embedDim 16 but received 3 of type number');
    expect(() => TransformerEncoderLayer.fromStateDict(enc, { numHeads: 4, activation: 'tanh' as never })).toThrow(
      "Expected 'none', 'relu', 'gelu' or 'gelu_tanh' for activation but received 'tanh' of type string",
    );
    expect(() => TransformerEncoderLayer.fromStateDict(enc, { numHeads: 4, norm_first: true } as never)).toThrow("Unknown option 'norm_first' for fromStateDict");
    expect(() => TransformerEncoderLayer.fromStateDict(null as never, { numHeads: 4 })).toThrow('Expected object or Map of Tensors for stateDict but received null');
  });

  test('constructor and forward errors', async () => {
    expect(() => new TransformerEncoderLayer(undefined as never)).toThrow(TypeError);
    expect(() => new TransformerEncoderLayer({ dModel: 10, numHeads: 4 })).toThrow('Expected numHeads that divides dModel 10 but received 4 of type number');
    expect(() => new TransformerEncoderLayer({ dModel: 8, numHeads: 2, activation: 'swish' as never })).toThrow(RangeError);
    expect(() => new TransformerEncoderLayer({ dModel: 8, numHeads: 2, layerNormEps: -1 })).toThrow('Expected finite non-negative number for layerNormEps');
    expect(() => new TransformerEncoderLayer({ dModel: 8, numHeads: 2, dropout: 0.1 } as never)).toThrow("Unknown option 'dropout' for TransformerEncoderLayer");
    expect(() => new TransformerDecoder({ dModel: 8, numHeads: 2 } as never)).toThrow('Expected positive integer for numLayers but received undefined');
    const layer = new TransformerEncoderLayer({ dModel: 8, numHeads: 2, dimFeedforward: 8 });
    expect(() => layer.forward(Tensor.zeros([2, 3, 9]))).toThrow('Expected Tensor [batch, seq, 8] or [seq, 8] for src but received a float32 Tensor of shape [2, 3, 9]');
    expect(() => layer.forward(Tensor.zeros([8]))).toThrow(RangeError);
    await expect(layer.forwardAsync(Tensor.zeros([2, 3, 9]))).rejects.toThrow(RangeError);
    const dec = new TransformerDecoderLayer({ dModel: 8, numHeads: 2, dimFeedforward: 8 });
    expect(() => dec.forward(Tensor.zeros([1, 3, 8]), 'memory' as never)).toThrow("Expected float32 Tensor for memory but received 'memory' of type string");
  });
});
