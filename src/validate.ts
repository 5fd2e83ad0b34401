// Argument checks shared by the public API. Every message names the
// argument, the value received and what was expected.

export function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (typeof value === 'number') return `${value} of type number`;
  if (typeof value === 'string') return `'${value.length > 40 ? value.slice(0, 40) + '…' : value}' of type string`;
  if (typeof value === 'boolean') return `${value} of type boolean`;
  if (typeof value === 'bigint') return `${value}n of type bigint`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return `an Array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) {
    const name = value.constructor?.name ?? 'typed array';
    return 'length' in value ? `a ${name} of length ${(value as { length: number }).length}` : `a ${name}`;
  }
  const ctor = (value as object).constructor?.name;
  if (ctor === 'Tensor') {
    const t = value as { dtype: string; shape: readonly number[] };
    return `a ${t.dtype} Tensor of shape [${t.shape.join(', ')}]`;
  }
  return ctor && ctor !== 'Object' ? `an instance of ${ctor}` : 'an object';
}

export function expected(what: string, name: string, value: unknown): string {
  return `Expected ${what} for ${name} but received ${describe(value)}`;
}

/** Throws TypeError for a non-number, RangeError for a number out of bounds. */
export function checkInteger(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return value;
  // The message is built only on failure: this check sits on hot paths.
  const what =
    min === 1 && max === Number.MAX_SAFE_INTEGER
      ? 'positive integer'
      : min === 0 && max === Number.MAX_SAFE_INTEGER
        ? 'non-negative integer'
        : `integer in [${min}, ${max}]`;
  if (typeof value !== 'number') throw new TypeError(expected(what, name, value));
  throw new RangeError(expected(what, name, value));
}

export function checkFinite(name: string, value: unknown): number {
  if (typeof value !== 'number') throw new TypeError(expected('finite number', name, value));
  if (!Number.isFinite(value)) throw new RangeError(expected('finite number', name, value));
  return value;
}

export function checkBoolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new TypeError(expected('boolean', name, value));
  return value;
}

/** Options must be a plain object (or undefined) with only the listed keys. */
export function checkOptions<T extends object>(fn: string, options: unknown, allowed: readonly string[]): Partial<T> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(expected('options object', `${fn} options`, options));
  }
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new TypeError(
        `Unknown option '${key}' for ${fn}; expected one of ${allowed.join(', ')} but received ${describe(
          (options as Record<string, unknown>)[key],
        )}`,
      );
    }
  }
  return options as Partial<T>;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; ++i) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether `shape` broadcasts to `full` (trailing axes aligned, each 1 or equal). */
export function broadcastsTo(shape: readonly number[], full: readonly number[]): boolean {
  const r = full.length - shape.length;
  if (r < 0) return false;
  for (let i = 0; i < shape.length; ++i) if (shape[i] !== 1 && shape[i] !== full[i + r]) return false;
  return true;
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Product of dimensions, checked against the largest exact integer (0 when any is 0, however large the others). */
export function checkedProduct(name: string, shape: readonly number[]): number {
  if (shape.includes(0)) return 0;
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (n > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(
        `Expected ${name} with fewer than 2^53 elements but received shape ${shapeString(shape)}`,
      );
    }
  }
  return n;
}

/** Packed sequences, checked: their lengths (a copy) and cumulative offsets (lengths.length + 1 entries, from 0). */
export interface PackedSequences {
  lengths: Int32Array;
  offsets: Int32Array;
}

/**
 * Checks `sequenceLengths` of packed variable-length input: an Array of
 * positive integers or an Int32Array, at least one, summing to `tokens` (the
 * packed input's token count).
 */
export function checkSequenceLengths(value: unknown, tokens: number, fn: string, name = 'sequenceLengths'): PackedSequences {
  if (!Array.isArray(value) && !(value instanceof Int32Array)) {
    throw new TypeError(expected('Array of positive integers or Int32Array', name, value));
  }
  const n = value.length;
  if (n === 0) throw new RangeError(expected('at least one sequence length', name, value));
  const lengths = new Int32Array(n);
  const offsets = new Int32Array(n + 1);
  let sum = 0;
  for (let i = 0; i < n; ++i) {
    const len = value[i] as unknown;
    if (typeof len !== 'number' || !Number.isInteger(len) || len < 1) checkInteger(`${name}[${i}]`, len, 1);
    sum += len as number;
    if (sum > 0x7fffffff) throw new RangeError(`${fn}: ${name} sum to more than 2^31 - 1 tokens`);
    lengths[i] = len as number;
    offsets[i + 1] = sum;
  }
  if (sum !== tokens) throw new RangeError(`${fn}: ${name} sum to ${sum} but the packed input holds ${tokens} tokens`);
  return { lengths, offsets };
}
