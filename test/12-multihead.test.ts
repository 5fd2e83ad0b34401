import { describe, expect, test } from 'vitest';
import { MultiHeadAttention, Tensor } from '../src';
import { expectBitwiseEqual, expectClose, multiheadRef, values } from './support/reference';

let seed = 900;
const rand = (shape: number[], std = 1) => Tensor.randn(shape, { seed: seed++, std });

describe('MultiHeadAttention construction', () => {
  test('shapes and PyTorch parameter names', () => {
    const m = new MultiHeadAttention({ embedDim: 512, numHeads: 8 });
    expect(m.headDim).toBe(64);
    const sd = m.stateDict();
    expect(Object.keys(sd)).toEqual(['in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias']);
    expect(sd.in_proj_weight.shape).toEqual([1536, 512]);
    const cross = new MultiHeadAttention({ embedDim: 24, numHeads: 3, kdim: 10, vdim: 12, bias: false });
    expect(Object.keys(cross.stateDict())).toEqual(['q_proj_weight', 'k_proj_weight', 'v_proj_weight', 'out_proj.weight']);
    expect(cross.stateDict().k_proj_weight.shape).toEqual([24, 10]);
    const kv = new MultiHeadAttention({ embedDim: 8, numHeads: 2, addBiasKV: true });
    expect(kv.stateDict().bias_k.shape).toEqual([1, 1, 8]);
  });

  test('Xavier-uniform initialisation, deterministic for a seed', () => {
    const a = new MultiHeadAttention({ embedDim: 64, numHeads: 4, seed: 3 });
    const b = new MultiHeadAttention({ embedDim: 64, numHeads: 4, seed: 3 });
    const c = new MultiHeadAttention({ embedDim: 64, numHeads: 4, seed: 4 });
    expectBitwiseEqual(a.inProjWeight!, b.inProjWeight!, 'same seed');
    expect(values(a.inProjWeight!)).not.toEqual(values(c.inProjWeight!));
    const w = values(a.inProjWeight!);
    const bound = Math.sqrt(6 / (64 + 192));
    expect(Math.max(...w.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...w.map(Math.abs))).toBeGreaterThan(0.95 * bound);
    const variance = w.reduce((s, x) => s + x * x, 0) / w.length;
    expect(variance).toBeCloseTo((bound * bound) / 3, 3);
    expect(values(a.inProjBias!).every((x) => x === 0)).toBe(true);
  });

  test('bad construction', () => {
    expect(() => new MultiHeadAttention({ embedDim: 512, numHeads: 7 })).toThrow(
      'Expected numHeads that divides embedDim 512 but received 7 of type number',
    );
    expect(() => new MultiHeadAttention({ embedDim: 512, numHeads: 0 })).toThrow(
      'Expected positive integer for numHeads but received 0 of type number',
    );
    expect(() => new MultiHeadAttention({ embedDim: '512', numHeads: 8 } as never)).toThrow(TypeError);
    expect(() => new MultiHeadAttention({ embedDim: 8, numHeads: 2, dropout: 0.1 } as never)).toThrow("Unknown option 'dropout'");
    expect(() => new MultiHeadAttention(undefined as never)).toThrow(TypeError);
  });
});

describe('forward against a float64 multi-head reference', () => {
  test('self-attention, batched and unbatched, weights averaged or per head', () => {
    const m = new MultiHeadAttention({ embedDim: 48, numHeads: 6, seed: 1 });
    for (const t of [m.inProjBias!, m.outProjBias!]) t.assign(rand(t.shape as number[], 0.1));
    const x = rand([3, 11, 48]);
    const ref = multiheadRef(m.stateDict(), 6, x, x, x);
    const r = m.forward(x, x, x, { needWeights: true, averageWeights: false });
    expectClose(r.output, ref.output, 2e-5, 'output');
    expectClose(r.weights!, ref.weights, 2e-6, 'weights');
    expect(r.weights!.shape).toEqual([3, 6, 11, 11]);
    const avg = m.forward(x, undefined, undefined, { needWeights: true });
    expect(avg.weights!.shape).toEqual([3, 11, 11]);
    const w = values(r.weights!);
    const mean = values(avg.weights!);
    for (let b = 0; b < 3; ++b)
      for (let i = 0; i < 121; ++i) {
        let s = 0;
        for (let h = 0; h < 6; ++h) s += w[(b * 6 + h) * 121 + i];
        expect(Math.abs(mean[b * 121 + i] - s / 6)).toBeLessThan(1e-6);
      }
    // Unbatched [L, E] input gives [L, E] output.
    const one = m.forward(x.select(0, 1), undefined, undefined, { needWeights: true });
    expect(one.output.shape).toEqual([11, 48]);
    expect(one.weights!.shape).toEqual([11, 11]);
    expectClose(one.output, values(r.output).subarray(11 * 48, 22 * 48), 1e-6, 'unbatched');
  });

  test('cross-attention with kdim and vdim, masks and causal', () => {
    const m = new MultiHeadAttention({ embedDim: 32, numHeads: 4, kdim: 20, vdim: 12, seed: 2 });
    const q = rand([2, 5, 32]);
    const k = rand([2, 9, 20]);
    const v = rand([2, 9, 12]);
    const kpm = Tensor.zeros([2, 9], 'uint8');
    kpm.data.fill(1, 9 + 6, 18);
    const am = rand([5, 9]);
    const ref = multiheadRef(m.stateDict(), 4, q, k, v, { keyPaddingMask: kpm, attnMask: am, causal: true });
    const r = m.forward(q, k, v, { keyPaddingMask: kpm, attnMask: am, causal: true, needWeights: true, averageWeights: false });
    expectClose(r.output, ref.output, 2e-5, 'cross output');
    expectClose(r.weights!, ref.weights, 2e-6, 'cross weights');
  });

  test('encoder-decoder attention over one memory (key === value) and PyTorch 3-D masks', () => {
    const m = new MultiHeadAttention({ embedDim: 16, numHeads: 2, seed: 5 });
    const q = rand([2, 4, 16]);
    const mem = rand([2, 7, 16]);
    const mask3 = Tensor.zeros([2 * 2, 4, 7], 'uint8');
    mask3.data[3] = 1;
    mask3.data[40] = 1;
    const r = m.forward(q, mem, mem, { attnMask: mask3, needWeights: true, averageWeights: false });
    const ref = multiheadRef(m.stateDict(), 2, q, mem, mem, { attnMask: mask3.reshape([2, 2, 4, 7]) });
    expectClose(r.output, ref.output, 2e-5, 'memory output');
    expectClose(r.weights!, ref.weights, 2e-6, 'memory weights');
  });

  test('forwardAsync gives the same bits as forward', async () => {
    const m = new MultiHeadAttention({ embedDim: 64, numHeads: 8, seed: 6 });
    const x = rand([2, 33, 64]);
    const a = m.forward(x, undefined, undefined, { causal: true, needWeights: true });
    const b = await m.forwardAsync(x, undefined, undefined, { causal: true, needWeights: true });
    expectBitwiseEqual(b.output, a.output, 'output');
    expectBitwiseEqual(b.weights!, a.weights!, 'weights');
  });

  test('repeated plain self-attention forwards (laid out once per workspace) follow every change of shape, causality, masks and module', async () => {
    const m = new MultiHeadAttention({ embedDim: 32, numHeads: 4, seed: 7 });
    const other = new MultiHeadAttention({ embedDim: 32, numHeads: 4, seed: 8 });
    for (const t of [m.inProjBias!, m.outProjBias!]) t.assign(rand(t.shape as number[], 0.1));
    const xs = [rand([2, 5, 32]), rand([1, 9, 32]), rand([2, 5, 32])];
    const kpm = Tensor.zeros([2, 5], 'uint8');
    kpm.data[4] = 1;
    const calls: { x: Tensor; causal: boolean; masked?: boolean; mod?: MultiHeadAttention }[] = [
      { x: xs[0], causal: false },
      { x: xs[0], causal: false },
      { x: xs[0], causal: true },
      { x: xs[1], causal: false },
      { x: xs[2], causal: false },
      { x: xs[2], causal: false, masked: true },
      { x: xs[2], causal: false },
      { x: xs[0], causal: true, mod: other },
      { x: xs[0], causal: true },
    ];
    for (const round of [0, 1]) {
      for (const { x, causal, masked, mod } of calls) {
        const mm = mod ?? m;
        const opts = masked ? { causal, keyPaddingMask: kpm } : { causal };
        const ref = multiheadRef(mm.stateDict(), 4, x, x, x, opts);
        const r = round === 0 ? mm.forward(x, undefined, undefined, opts) : await mm.forwardAsync(x, undefined, undefined, opts);
        expectClose(r.output, ref.output, 2e-5, `round ${round} ${x.shape} causal ${causal} masked ${!!masked}`);
      }
    }
  });

  test('trace reports the stages of the seed document', () => {
    const m = new MultiHeadAttention({ embedDim: 512, numHeads: 8 });
    const stages: [string, readonly number[]][] = [];
    m.forward(rand([1, 5, 512]), undefined, undefined, { trace: (s, shape) => stages.push([s, shape]) });
    const shapes = new Map(stages);
    expect(shapes.get('input')).toEqual([1, 5, 512]);
    expect(shapes.get('split heads')).toEqual([1, 5, 8, 64]);
    expect(shapes.get('heads first')).toEqual([1, 8, 5, 64]);
    expect(shapes.get('concat heads')).toEqual([1, 5, 512]);
    expect(shapes.get('output = concat · W^O')).toEqual([1, 5, 512]);
  });
});

describe('state dicts', () => {
  test('stateDict -> fromStateDict reproduces the module, with a prefix', () => {
    const m = new MultiHeadAttention({ embedDim: 24, numHeads: 3, kdim: 10, vdim: 12, seed: 9, addBiasKV: true });
    const sd: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(m.stateDict())) sd[`decoder.layers.0.cross.${k}`] = v;
    sd['decoder.layers.0.norm.weight'] = Tensor.zeros([24]); // another module's parameter: outside the prefix
    const copy = MultiHeadAttention.fromStateDict(sd, { numHeads: 3, prefix: 'decoder.layers.0.cross.' });
    const q = rand([2, 4, 24]);
    const k = rand([2, 6, 10]);
    const v = rand([2, 6, 12]);
    expectBitwiseEqual(copy.forward(q, k, v).output, m.forward(q, k, v).output, 'round trip');
    // The copy owns its tensors.
    copy.outProjWeight.data[0] += 1;
    expect(copy.outProjWeight.data[0]).not.toBe(m.outProjWeight.data[0]);
  });

  test('missing, extra and misshapen tensors are named', () => {
    const sd = new MultiHeadAttention({ embedDim: 8, numHeads: 2 }).stateDict();
    const without = (name: string) => Object.fromEntries(Object.entries(sd).filter(([k]) => k !== name));
    expect(() => MultiHeadAttention.fromStateDict(without('out_proj.weight'), { numHeads: 2 })).toThrow(
      "fromStateDict: missing tensor 'out_proj.weight' of shape [8, 8]",
    );
    expect(() => MultiHeadAttention.fromStateDict(without('out_proj.bias'), { numHeads: 2 })).toThrow("missing tensor 'out_proj.bias'");
    expect(() => MultiHeadAttention.fromStateDict(without('in_proj_weight'), { numHeads: 2 })).toThrow(
      "fromStateDict: missing tensor 'in_proj_weight' (or 'q_proj_weight', 'k_proj_weight', 'v_proj_weight')",
    );
    expect(() => MultiHeadAttention.fromStateDict({ ...sd, 'out_proj.weights': Tensor.zeros([8, 8]) }, { numHeads: 2 })).toThrow(
      "fromStateDict: unexpected tensor 'out_proj.weights' in the state dict",
    );
    expect(() => MultiHeadAttention.fromStateDict({ ...sd, 'in_proj_bias': Tensor.zeros([23]) }, { numHeads: 2 })).toThrow(
      "fromStateDict: tensor 'in_proj_bias' has shape [23], expected [24]",
    );
    expect(() => MultiHeadAttention.fromStateDict({ ...sd, in_proj_weight: Tensor.zeros([20, 8]) }, { numHeads: 2 })).toThrow(
      "tensor 'in_proj_weight' has shape [20, 8], expected [3E, E]",
    );
    expect(() => MultiHeadAttention.fromStateDict({ ...sd, in_proj_weight: Tensor.zeros([24, 8], 'uint8') }, { numHeads: 2 })).toThrow(TypeError);
    expect(() => MultiHeadAttention.fromStateDict(sd, { numHeads: 3 })).toThrow('Expected numHeads that divides embedDim 8 but received 3');
    expect(() => MultiHeadAttention.fromStateDict(sd, {} as never)).toThrow('Expected positive integer for numHeads but received undefined');
    // Tensors that are not parameters (a fixture's inputs) are ignored.
    expect(MultiHeadAttention.fromStateDict({ ...sd, 'input.query': Tensor.zeros([1, 8]) }, { numHeads: 2 }).embedDim).toBe(8);
  });
});

describe('forward rejects bad input', () => {
  const m = new MultiHeadAttention({ embedDim: 16, numHeads: 4, kdim: 6 });
  const t = (shape: number[]) => Tensor.zeros(shape);
  test('embed dims, lengths, batches', () => {
    expect(() => m.forward(t([2, 3, 15]), t([2, 5, 6]), t([2, 5, 16]))).toThrow('forward: query.shape[2] is 15, expected embedDim 16');
    expect(() => m.forward(t([2, 3, 16]), t([2, 5, 7]), t([2, 5, 16]))).toThrow('forward: key.shape[2] is 7, expected kdim 6');
    expect(() => m.forward(t([2, 3, 16]), t([2, 5, 6]), t([2, 4, 16]))).toThrow(
      'forward: key and value lengths differ: key.shape[1] is 5 but value.shape[1] is 4',
    );
    expect(() => m.forward(t([2, 3, 16]), t([3, 5, 6]), t([3, 5, 16]))).toThrow('forward: batch sizes differ: query 2, key 3, value 3');
    expect(() => m.forward(t([3, 16]), t([2, 5, 6]), t([2, 5, 16]))).toThrow('forward: key has rank 3 but query has rank 2');
    expect(() => m.forward(t([16]))).toThrow(RangeError);
  });

  test('masks of the wrong shape or dtype', () => {
    const q = t([2, 3, 16]);
    const k = t([2, 5, 6]);
    const v = t([2, 5, 16]);
    expect(() => m.forward(q, k, v, { keyPaddingMask: t([2, 4]) })).toThrow(
      'Expected Tensor of shape [2, 5] ([batch, keys]) for keyPaddingMask but received a float32 Tensor of shape [2, 4]',
    );
    expect(() => m.forward(q, k, v, { attnMask: t([3, 4]) })).toThrow('forward: attnMask.shape[1] is 4, expected the key length 5');
    expect(() => m.forward(q, k, v, { attnMask: t([4, 5]) })).toThrow('forward: attnMask.shape[0] is 4, expected the query length 3');
    expect(() => m.forward(q, k, v, { attnMask: t([3, 3, 5]) })).toThrow(RangeError);
    expect(() => m.forward(q, k, v, { attnMask: new Uint8Array(15) as never })).toThrow(TypeError);
    expect(() => m.forward(q, k, v, { needWeights: 'yes' as never })).toThrow('Expected boolean for needWeights');
  });
});
