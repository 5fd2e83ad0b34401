// The safetensors format: an 8-byte little-endian header length, a JSON
// header ({name: {dtype, shape, data_offsets}, __metadata__?}), then the data.
import * as fs from 'node:fs';
import { native } from './native';
import { Tensor, MAX_RANK } from './tensor';
import { describe, expected } from './validate';

export interface SafetensorsFile {
  /** By name, in a null-prototype object: any name is a key, '__proto__' included. */
  tensors: Record<string, Tensor>;
  /** By key, in a null-prototype object. */
  metadata: Record<string, string>;
}

/** Element sizes of the dtypes this package reads. */
const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, U8: 1, BOOL: 1 };
const MAX_HEADER = 100_000_000;

class SafetensorsError extends RangeError {
  constructor(source: string, message: string) {
    super(`Invalid safetensors ${source}: ${message}`);
  }
}

/** One tensor of the header, checked against the data section. */
interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte range in the data section. */
  begin: number;
  end: number;
}

type Fail = (msg: string) => never;

/** The file's bytes and how to name it in errors. */
function readSource(pathOrBytes: unknown): { bytes: Uint8Array; source: string } {
  if (typeof pathOrBytes === 'string') {
    try {
      return { bytes: fs.readFileSync(pathOrBytes), source: `file ${pathOrBytes}` };
    } catch (err) {
      throw new Error(`Cannot read safetensors file ${pathOrBytes}: ${(err as Error).message}`);
    }
  }
  if (pathOrBytes instanceof Uint8Array) return { bytes: pathOrBytes, source: 'data' };
  throw new TypeError(expected('path string or Uint8Array', 'pathOrBytes', pathOrBytes));
}

/** The JSON header after the 8-byte length, and where the data section starts. */
function readHeader(bytes: Uint8Array, fail: Fail): { header: Record<string, unknown>; dataStart: number } {
  if (bytes.length < 8) fail(`${bytes.length} bytes is too short for the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > MAX_HEADER) fail(`header length ${headerLen} exceeds ${MAX_HEADER} bytes`);
  if (8 + headerLen > bytes.length) {
    fail(`header length ${headerLen} runs past the end of the ${bytes.length}-byte file (truncated?)`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (err) {
    fail(`header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) fail('header is not a JSON object');
  return { header: header as Record<string, unknown>, dataStart: 8 + headerLen };
}

function readMetadata(info: unknown, fail: Fail): Record<string, string> {
  if (info === null || typeof info !== 'object' || Array.isArray(info)) fail('__metadata__ is not an object');
  const metadata: Record<string, string> = Object.create(null);
  for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
    if (typeof v !== 'string') fail(`__metadata__.${k} is ${describe(v)}, expected a string`);
    metadata[k] = v as string;
  }
  return metadata;
}

/** A header entry: a known dtype, a shape, and data_offsets inside the data section that fit the shape. */
function readEntry(name: string, info: unknown, dataLen: number, fail: Fail): Entry {
  const t = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (t === null || typeof t !== 'object') fail(`entry '${name}' is not an object`);
  if (typeof t.dtype !== 'string' || !Object.prototype.hasOwnProperty.call(DTYPE_BYTES, t.dtype)) {
    fail(`tensor '${name}' has dtype ${JSON.stringify(t.dtype)}; supported: ${Object.keys(DTYPE_BYTES).join(', ')}`);
  }
  const shape = t.shape;
  if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(`tensor '${name}' has shape ${JSON.stringify(shape)}; expected up to ${MAX_RANK} non-negative integers`);
  }
  const offsets = t.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    fail(`tensor '${name}' has data_offsets ${JSON.stringify(offsets)}; expected [begin, end] with 0 <= begin <= end`);
  }
  const [begin, end] = offsets as number[];
  if (end > dataLen) {
    fail(`tensor '${name}' ends at byte ${end} of a ${dataLen}-byte data section (truncated file?)`);
  }
  const count = (shape as number[]).reduce((p, d) => p * d, 1);
  const need = count * DTYPE_BYTES[t.dtype as string];
  if (end - begin !== need) {
    fail(`tensor '${name}' (${t.dtype} [${(shape as number[]).join(', ')}]) needs ${need} bytes but data_offsets span ${end - begin}`);
  }
  return { name, dtype: t.dtype as string, shape: shape as number[], begin, end };
}

/** The data section must be covered exactly: no overlaps, no holes. */
function checkCoverage(entries: Entry[], dataLen: number, fail: Fail): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of sorted) {
    if (e.begin < cursor) fail(`tensor '${e.name}' overlaps the tensor before it (bytes ${e.begin}..${cursor})`);
    if (e.begin > cursor) fail(`bytes ${cursor}..${e.begin} of the data section belong to no tensor`);
    cursor = e.end;
  }
  if (cursor !== dataLen) fail(`bytes ${cursor}..${dataLen} of the data section belong to no tensor`);
}

/** The tensor of a checked entry: aligned F32 viewed in place, other floats converted, U8 and BOOL as uint8. */
function tensorOf(bytes: Uint8Array, dataStart: number, e: Entry): Tensor {
  const at = bytes.byteOffset + dataStart + e.begin;
  const n = e.shape.reduce((p, d) => p * d, 1);
  const raw = bytes.subarray(dataStart + e.begin, dataStart + e.end);
  let data: Float32Array | Uint8Array;
  if (e.dtype === 'F32') {
    // Unaligned (e.g. after an odd-length uint8 tensor): copy. Buffer#slice is a view, so copy explicitly.
    data = at % 4 === 0 ? new Float32Array(bytes.buffer, at, n) : new Float32Array(new Uint8Array(raw).buffer);
  } else if (e.dtype === 'U8' || e.dtype === 'BOOL') {
    data = raw;
  } else {
    data = new Float32Array(n);
    native.toFloat32(raw, e.dtype === 'F16' ? 0 : e.dtype === 'BF16' ? 1 : 2, data);
  }
  return new Tensor(data, e.shape);
}

/**
 * Reads a safetensors file (a path) or its bytes. F32, F16, BF16 and F64
 * become float32 tensors; U8 and BOOL become uint8 tensors. Aligned F32 data
 * is viewed in place (no copy) when bytes are given. The whole header is
 * checked before any tensor is made.
 */
export function loadSafetensors(pathOrBytes: string | Uint8Array): SafetensorsFile {
  const { bytes, source } = readSource(pathOrBytes);
  const fail: Fail = (msg) => {
    throw new SafetensorsError(source, msg);
  };
  const { header, dataStart } = readHeader(bytes, fail);
  const dataLen = bytes.length - dataStart;
  let metadata: Record<string, string> = Object.create(null);
  const entries: Entry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') metadata = readMetadata(info, fail);
    else entries.push(readEntry(name, info, dataLen, fail));
  }
  checkCoverage(entries, dataLen, fail);
  // A null-prototype object: a tensor named '__proto__' is a key like any other.
  const tensors: Record<string, Tensor> = Object.create(null);
  for (const e of entries) tensors[e.name] = tensorOf(bytes, dataStart, e);
  return { tensors, metadata };
}

/**
 * Serialises tensors (float32 as F32, uint8 as U8) with optional string
 * metadata. With a path first, writes the file; otherwise returns the bytes.
 */
export function saveSafetensors(
  tensors: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Uint8Array;
export function saveSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void;
export function saveSafetensors(
  a: string | Record<string, Tensor>,
  b?: Record<string, Tensor> | Record<string, string>,
  c?: Record<string, string>,
): Uint8Array | void {
  const path = typeof a === 'string' ? a : undefined;
  const tensors = (path === undefined ? a : b) as Record<string, Tensor>;
  const metadata = (path === undefined ? b : c) as Record<string, string> | undefined;
  if (tensors === null || typeof tensors !== 'object') throw new TypeError(expected('object of Tensors', 'tensors', tensors));
  const header: Record<string, unknown> = Object.create(null);
  if (metadata !== undefined) {
    if (metadata === null || typeof metadata !== 'object') throw new TypeError(expected('object of strings', 'metadata', metadata));
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new TypeError(expected('string', `metadata.${k}`, v));
    }
    header.__metadata__ = Object.assign(Object.create(null), metadata);
  }
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (name === '__metadata__') throw new RangeError("A tensor may not be named '__metadata__'");
    if (!(t instanceof Tensor)) throw new TypeError(expected('Tensor', `tensors['${name}']`, t));
    const c = t.contiguous();
    const bytes = new Uint8Array(c.data.buffer, c.data.byteOffset + c.offset * (c.dtype === 'float32' ? 4 : 1), c.size * (c.dtype === 'float32' ? 4 : 1));
    header[name] = { dtype: c.dtype === 'float32' ? 'F32' : 'U8', shape: [...c.shape], data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data section starts 8-byte aligned.
  const jsonBytes = () => new TextEncoder().encode(json);
  while ((8 + jsonBytes().length) % 8 !== 0) json += ' ';
  const hb = jsonBytes();
  const out = new Uint8Array(8 + hb.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let at = 8 + hb.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  if (path === undefined) return out;
  fs.writeFileSync(path, out);
}
