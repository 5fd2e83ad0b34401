// attention-kernels: SIMD GEMM, softmax and attention for Node.
export { Tensor, MAX_RANK } from './tensor';
export type { DType, TensorData, TensorOptions, RandomOptions } from './tensor';
export {
  matmul,
  matmulAsync,
  softmax,
  softmaxAsync,
  cpuInfo,
  setNumThreads,
  getNumThreads,
} from './ops';
export type { MatmulOptions, SoftmaxOptions, CpuInfo } from './ops';
