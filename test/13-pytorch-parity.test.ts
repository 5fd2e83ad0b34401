import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { MultiHeadAttention, loadSafetensors, type ForwardOptions, type Tensor } from '../src';
import { expectClose, values } from './support/reference';

// Golden cases computed by torch.nn.MultiheadAttention (pytorch-mha) and by
// an independent float64 re-implementation of it (extra-mha, see
// test/fixtures/make_extra_mha.py). Each file holds the module's state dict,
// the inputs, the expected outputs, and the case's parameters as metadata.
const TOL = 1e-4;
const dirs = ['pytorch-mha', 'extra-mha'].map((d) => path.join(__dirname, 'fixtures', d));
const cases = dirs.flatMap((dir) =>
  fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .sort()
    .map((f) => [`${path.basename(dir)}/${f.replace('.safetensors', '')}`, path.join(dir, f)] as const),
);

function setup(file: string) {
  const { tensors, metadata } = loadSafetensors(file);
  const module = MultiHeadAttention.fromStateDict(tensors, {
    numHeads: Number(metadata.num_heads),
    addZeroAttn: metadata.add_zero_attn === 'True',
  });
  const query = tensors['input.query'];
  const key = tensors['input.key'] ?? query;
  const value = tensors['input.value'] ?? key;
  const options: ForwardOptions = { needWeights: true, averageWeights: metadata.average_attn_weights === 'True' };
  if (tensors['input.attn_mask']) options.attnMask = tensors['input.attn_mask'];
  if (tensors['input.key_padding_mask']) options.keyPaddingMask = tensors['input.key_padding_mask'];
  return { tensors, metadata, module, query, key, value, options };
}

function compare(got: { output: Tensor; weights?: Tensor }, tensors: Record<string, Tensor>, label: string) {
  const output = tensors['output.attn_output'];
  const weights = tensors['output.attn_weights'];
  expect(got.output.shape).toEqual(output.shape);
  expect(got.weights!.shape).toEqual(weights.shape);
  expectClose(got.output, values(output), TOL, `${label} attn_output`);
  expectClose(got.weights!, values(weights), TOL, `${label} attn_weights`);
}

describe(`PyTorch parity (${process.env.ATTN_ISA} kernels), within ${TOL}`, () => {
  test('the fixture folders are present and complete', () => {
    expect(cases.filter(([n]) => n.startsWith('pytorch-mha/')).length).toBe(7);
    expect(cases.length).toBeGreaterThanOrEqual(19);
  });

  test.each(cases)('%s', async (name, file) => {
    const { tensors, metadata, module, query, key, value, options } = setup(file);
    compare(module.forward(query, key, value, options), tensors, name);
    // Without weights the fused kernel computes the output.
    const fused = module.forward(query, key, value, { ...options, needWeights: false });
    expect(fused.weights).toBeUndefined();
    expectClose(fused.output, values(tensors['output.attn_output']), TOL, `${name} (fused) attn_output`);
    compare(await module.forwardAsync(query, key, value, options), tensors, `${name} (async)`);
    if (metadata.causal === 'True') {
      // The same case through causal masking instead of the stored mask.
      const { attnMask, ...rest } = options;
      expect(attnMask).toBeDefined();
      compare(module.forward(query, key, value, { ...rest, causal: true }), tensors, `${name} (causal: true)`);
    }
    // Self-attention cases also run with key and value omitted.
    if (metadata.self_attention === 'True') compare(module.forward(query, undefined, undefined, options), tensors, `${name} (defaults)`);
  });
});
