// attention-kernels: SIMD GEMM, softmax and attention for Node.
export { Tensor, MAX_RANK } from './tensor';
export type { DType, TensorData, TensorOptions, RandomOptions, NestedArray } from './tensor';
export {
  matmul,
  matmulAsync,
  softmax,
  softmaxAsync,
  cpuInfo,
  setNumThreads,
  getNumThreads,
  setIdleSpin,
  getIdleSpin,
  MAX_IDLE_SPIN,
  packMatrix,
  PackedMatrix,
} from './ops';
export type { MatmulOptions, SoftmaxOptions, CpuInfo } from './ops';
export { attention, attentionAsync } from './attention';
export type { AttentionOptions, AttentionResult, AttentionResultWithWeights, AdditiveWeights, ScoreFunction } from './attention';
export { layerNorm, layerNormAsync, gelu, geluAsync, relu, reluAsync, linear, linearAsync } from './layers';
export type { Activation, LayerNormOptions, GeluOptions, ReluOptions, LinearOptions } from './layers';
export { MultiHeadAttention, KVCache } from './multihead';
export type {
  MultiHeadAttentionOptions,
  ForwardOptions,
  ForwardResult,
  ForwardResultWithWeights,
  FromStateDictOptions,
} from './multihead';
export {
  TransformerEncoderLayer,
  TransformerDecoderLayer,
  TransformerEncoder,
  TransformerDecoder,
  TransformerDecoderCache,
} from './transformer';
export type {
  TransformerLayerOptions,
  TransformerStackOptions,
  EncoderForwardOptions,
  DecoderForwardOptions,
  TransformerFromStateDictOptions,
  TransformerStackFromStateDictOptions,
  LinearParameters,
  LayerNormParameters,
} from './transformer';
export { loadSafetensors, saveSafetensors } from './safetensors';
export type { SafetensorsFile } from './safetensors';
export { Batcher, BatcherError } from './batcher';
export type { BatcherOptions, BatcherRunOptions, BatcherStats, PackedModule, PackedForward, PackedOptions, PackedResult } from './batcher';
