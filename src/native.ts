// Finds and loads the compiled addon. One clear error when it cannot.
import * as fs from 'node:fs';
import * as path from 'node:path';

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
/** A parameter block, written by the functions of ./params (layouts: native/params.json). */
type Params = Float64Array;
type Mask = F32 | Uint8Array | null;

/** The addon's exports (internal; the public API wraps and validates them). */
export interface NativeBinding {
  gemm(a: F32, b: F32, c: F32, bias: F32 | null, params: Params): void;
  gemmAsync(a: F32, b: F32, c: F32, bias: F32 | null, params: Params): Promise<void>;
  packMatrix(b: F32, params: Params): object;
  gemmWithPacked(a: F32, packed: object, c: F32, bias: F32 | null, params: Params): void;
  gemmWithPackedAsync(a: F32, packed: object, c: F32, bias: F32 | null, params: Params): Promise<void>;
  softmax(x: F32, out: F32, mask: Mask, params: Params): void;
  softmaxAsync(x: F32, out: F32, mask: Mask, params: Params): Promise<void>;
  copyStrided(src: F32 | Uint8Array, dst: F32 | Uint8Array, params: Params): void;
  attention(q: F32, k: F32, v: F32, out: F32, mask: Mask, keyPadding: Mask, weights: F32 | null, scores: F32 | null, params: Params): void;
  attentionAsync(q: F32, k: F32, v: F32, out: F32, mask: Mask, keyPadding: Mask, weights: F32 | null, scores: F32 | null, params: Params): Promise<void>;
  additiveScores(pq: F32, pk: F32, w: F32, bias: F32 | null, scores: F32, params: Params): void;
  additiveScoresAsync(pq: F32, pk: F32, w: F32, bias: F32 | null, scores: F32, params: Params): Promise<void>;
  layerNorm(x: F32, residual: F32 | null, shift: F32 | null, weight: F32 | null, bias: F32 | null, out: F32, sum: F32 | null, params: Params): void;
  layerNormAsync(x: F32, residual: F32 | null, shift: F32 | null, weight: F32 | null, bias: F32 | null, out: F32, sum: F32 | null, params: Params): Promise<void>;
  activation(x: F32, out: F32, params: Params): void;
  activationAsync(x: F32, out: F32, params: Params): Promise<void>;
  linear(x: F32, weight: F32 | object, out: F32, bias: F32 | null, params: Params): void;
  linearAsync(x: F32, weight: F32 | object, out: F32, bias: F32 | null, params: Params): Promise<void>;
  l2Normalize(src: F32, dst: F32, params: Params): void;
  toFloat32(bytes: Uint8Array, dtypeCode: number, dst: F32): void;
  fill(dst: F32, params: Params): void;
  cpuInfo(): NativeCpuInfo;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  fmaPeak(iterations: number): number;
  /** Per parameter block, the slots ("m", "shape[3]", ...) the addon has read so far in this process. */
  paramSlotsRead(): Record<string, string[]>;
  napiVersion: number;
}

const packageRoot = path.resolve(__dirname, '..');

/** Where the loader looks, in order. ATTN_ADDON names one file and is then the only candidate. */
function addonCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.ATTN_ADDON) return [path.resolve(env.ATTN_ADDON)];
  return [
    path.join(packageRoot, 'build', 'Release', 'attention_kernels.node'),
    path.join(packageRoot, 'build-cmake', 'Release', 'attention_kernels.node'),
    path.join(packageRoot, 'build', 'Debug', 'attention_kernels.node'),
  ];
}

function loadAddon(): { binding: NativeBinding; file: string } {
  const failures: string[] = [];
  for (const file of addonCandidates()) {
    if (!fs.existsSync(file)) {
      failures.push(`${file}: not found`);
      continue;
    }
    const mod = { exports: {} as NativeBinding };
    try {
      process.dlopen(mod, file);
      return { binding: mod.exports, file };
    } catch (err) {
      const message = (err as Error).message;
      // The binary loaded but refused the forced ISA: that is the answer.
      if (message.startsWith('ATTN_ISA=')) {
        throw new Error(`attention-kernels: ${message} (set by the ATTN_ISA environment variable; loaded ${file})`);
      }
      failures.push(`${file}: ${message}`);
    }
  }
  throw new Error(
    [
      'attention-kernels could not load its native addon. Tried:',
      ...failures.map((f) => `  - ${f}`),
      `Platform: node ${process.version}, ${process.platform}-${process.arch}, Node-API ${process.versions.napi}.`,
      'Build it with `npm rebuild attention-kernels` (node-gyp) or `npm run build:cmake` (cmake-js),',
      'or point ATTN_ADDON at an attention_kernels.node file.',
    ].join('\n'),
  );
}

const loaded = loadAddon();

export const native: NativeBinding = loaded.binding;
/** Absolute path of the addon file in use. */
export const addonPath: string = loaded.file;
