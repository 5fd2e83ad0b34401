// Loads the compiled addon through native/load.js (shared with the install
// script and the tests): one clear error when it cannot.
import * as locate from '../native/load.js';

export interface NativeCpuInfo {
  /** 'amx': the AVX-512 path with products against packed weights on the tile unit. */
  isa: 'scalar' | 'avx2' | 'avx512' | 'amx' | 'neon';
  requestedIsa: string;
  availableIsas: string[];
  arch: string;
  /** CPU vendor id: 'GenuineIntel', 'AuthenticAMD', ... */
  vendor: string;
  /** The CPU's brand string, e.g. 'Intel(R) Xeon(R) Platinum 8370C CPU @ 2.80GHz'. */
  model: string;
  /** The family the kernels are tuned for: 'intel-skylake-server', 'amd-zen5', ..., or 'generic'. */
  family: string;
  /** x86 display family, model and stepping (zeros elsewhere). */
  cpuid: { family: number; model: number; stepping: number };
  features: Record<string, boolean>;
  caches: { l1d: number; l2: number; l3: number };
  threads: number;
  logicalCpus: number;
  vectorWidth: number;
  /** GEMM blocking; ncL2 > 0: runs of ncL2 columns of B sweep an A micro-panel kept in L1 (0: the B-reusing order). */
  gemmBlocking: { mr: number; nr: number; mc: number; kc: number; nc: number; ncL2: number };
  /** The tuning table row in use (native/kernels/tuning.cc) and where it comes from. */
  tuning: { family: string; prefetchPanels: boolean; streamPanels: boolean; minParallelFlops: number; basis: string };
}

type F32 = Float32Array;
/** A parameter block, written by the functions of ./params (layouts: native/params.json). */
type Params = Float64Array;
type Mask = F32 | Uint8Array | null;

/** The addon's exports (internal; the public API wraps and validates them). */
export interface NativeBinding {
  gemm(a: F32, b: F32, c: F32, bias: F32 | null, params: Params): void;
  gemmAsync(a: F32, b: F32, c: F32, bias: F32 | null, params: Params): Promise<void>;
  /** Calls callback now; the async calls it makes run as one job on the pool, in order. Returns how many. */
  chain(callback: () => void): number;
  packMatrix(b: F32, params: Params): object;
  packMatrixAsync(b: F32, params: Params): Promise<object>;
  gemmWithPacked(a: F32, packed: object, c: F32, bias: F32 | null, params: Params): void;
  gemmWithPackedAsync(a: F32, packed: object, c: F32, bias: F32 | null, params: Params): Promise<void>;
  softmax(x: F32, out: F32, mask: Mask, params: Params): void;
  softmaxAsync(x: F32, out: F32, mask: Mask, params: Params): Promise<void>;
  copyStrided(src: F32 | Uint8Array, dst: F32 | Uint8Array, params: Params): void;
  copyStridedAsync(src: F32 | Uint8Array, dst: F32 | Uint8Array, params: Params): Promise<void>;
  attention(q: F32, k: F32, v: F32, out: F32, mask: Mask, keyPadding: Mask, weights: F32 | null, scores: F32 | null, sequenceOffsets: Int32Array | null, params: Params): void;
  attentionAsync(q: F32, k: F32, v: F32, out: F32, mask: Mask, keyPadding: Mask, weights: F32 | null, scores: F32 | null, sequenceOffsets: Int32Array | null, params: Params): Promise<void>;
  additiveScores(pq: F32, pk: F32, w: F32, bias: F32 | null, scores: F32, params: Params): void;
  additiveScoresAsync(pq: F32, pk: F32, w: F32, bias: F32 | null, scores: F32, params: Params): Promise<void>;
  layerNorm(x: F32, residual: F32 | null, shift: F32 | null, weight: F32 | null, bias: F32 | null, out: F32, sum: F32 | null, params: Params): void;
  layerNormAsync(x: F32, residual: F32 | null, shift: F32 | null, weight: F32 | null, bias: F32 | null, out: F32, sum: F32 | null, params: Params): Promise<void>;
  activation(x: F32, out: F32, params: Params): void;
  activationAsync(x: F32, out: F32, params: Params): Promise<void>;
  linear(x: F32, weight: F32 | object, out: F32, bias: F32 | null, params: Params): void;
  linearAsync(x: F32, weight: F32 | object, out: F32, bias: F32 | null, params: Params): Promise<void>;
  l2Normalize(src: F32, dst: F32, params: Params): void;
  l2NormalizeAsync(src: F32, dst: F32, params: Params): Promise<void>;
  toFloat32(bytes: Uint8Array, dtypeCode: number, dst: F32): void;
  fill(dst: F32, params: Params): void;
  /** An ArrayBuffer over addon-owned memory (undefined when the runtime refuses external memory). */
  allocate(bytes: number, zero: boolean): ArrayBuffer | undefined;
  /** Whether a typed array's memory is the addon's. */
  isOwned(array: ArrayBufferView): boolean;
  /** The addon's block cache: bytes cached for reuse and in use, blocks reused and newly allocated. */
  memoryStats(): { cachedBytes: number; liveBytes: number; reused: number; allocated: number };
  cpuInfo(): NativeCpuInfo;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  setIdleSpin(microseconds: number): void;
  getIdleSpin(): number;
  fmaPeak(iterations: number): number;
  /** Per parameter block, the slots ("m", "shape[3]", ...) the addon has read so far in this process. */
  paramSlotsRead(): Record<string, string[]>;
  napiVersion: number;
}

const loaded = locate.loadAddon();

export const native: NativeBinding = loaded.binding as NativeBinding;
/** Absolute path of the addon file in use. */
export const addonPath: string = loaded.file;
