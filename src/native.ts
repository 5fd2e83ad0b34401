// Loads the compiled addon through native/load.js (shared with the install
// script and the tests): one clear error when it cannot.
import * as locate from '../native/load.js';

export interface NativeCpuInfo {
  isa: 'scalar' | 'avx2' | 'avx512' | 'neon';
  requestedIsa: string;
  availableIsas: string[];
  arch: string;
  vendor: string;
  model: string;
  features: Record<string, boolean>;
  caches: { l1d: number; l2: number; l3: number };
  threads: number;
  logicalCpus: number;
  vectorWidth: number;
  gemmBlocking: { mr: number; nr: number; mc: number; kc: number; nc: number };
}

type F32 = Float32Array;
type Params = Float64Array;

/** The addon's exports (internal; the public API wraps and validates them). */
export interface NativeBinding {
  gemm(a: F32, b: F32, c: F32, bias: F32 | null, params: Params): void;
  gemmAsync(a: F32, b: F32, c: F32, bias: F32 | null, params: Params): Promise<void>;
  packB(b: F32, params: Params): object;
  gemmPacked(a: F32, packed: object, c: F32, bias: F32 | null, params: Params): void;
  gemmPackedAsync(a: F32, packed: object, c: F32, bias: F32 | null, params: Params): Promise<void>;
  softmax(x: F32, out: F32, mask: F32 | Uint8Array | null, params: Params): void;
  softmaxAsync(x: F32, out: F32, mask: F32 | Uint8Array | null, params: Params): Promise<void>;
  copyStrided(src: F32 | Uint8Array, dst: F32 | Uint8Array, params: Params): void;
  attention(q: F32, k: F32, v: F32, out: F32, mask: F32 | Uint8Array | null, keyPadding: F32 | Uint8Array | null, weights: F32 | null, scores: F32 | null, params: Params): void;
  attentionAsync(q: F32, k: F32, v: F32, out: F32, mask: F32 | Uint8Array | null, keyPadding: F32 | Uint8Array | null, weights: F32 | null, scores: F32 | null, params: Params): Promise<void>;
  additiveScores(pq: F32, pk: F32, w: F32, bias: F32 | null, scores: F32, params: Params): void;
  additiveScoresAsync(pq: F32, pk: F32, w: F32, bias: F32 | null, scores: F32, params: Params): Promise<void>;
  l2Normalize(src: F32, dst: F32, params: Params): void;
  toFloat32(bytes: Uint8Array, dtypeCode: number, dst: F32): void;
  fill(dst: F32, params: Params): void;
  cpuInfo(): NativeCpuInfo;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  fmaPeak(iterations: number): number;
  napiVersion: number;
}

/** The package's root directory. */
export const packageRoot: string = locate.root;

/** Where the loader looks, in order (native/load.js): ATTN_ADDON alone when set; else a build from source or the prebuilt binary, then a cmake-js build. */
export function addonCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  return locate.addonCandidates(env).map((c) => ('file' in c ? c.file : c.error));
}

const loaded = locate.loadAddon();

export const native: NativeBinding = loaded.binding as NativeBinding;
/** Absolute path of the addon file in use. */
export const addonPath: string = loaded.file;
