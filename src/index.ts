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
  packMatrix,
  PackedMatrix,
} from './ops';
export type { MatmulOptions, SoftmaxOptions, CpuInfo } from './ops';
export { attention, attentionAsync } from './attention';
export type { AttentionOptions, AttentionResult, AttentionResultWithWeights, AdditiveWeights, ScoreFunction } from './attention';
export { MultiHeadAttention, KVCache } from './multihead';
export type {
  MultiHeadAttentionOptions,
  ForwardOptions,
  ForwardResult,
  ForwardResultWithWeights,
  FromStateDictOptions,
} from './multihead';
export { loadSafetensors, saveSafetensors } from './safetensors';
export type { SafetensorsFile } from './safetensors';
export { Batcher, BatcherError } from './batcher';
export type { BatcherOptions, BatcherRunOptions, BatcherStats, PackedModule, PackedForward, PackedOptions, PackedResult } from './batcher';
