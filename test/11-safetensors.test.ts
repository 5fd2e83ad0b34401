import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { Tensor, loadSafetensors, saveSafetensors } from '../src';
import { values } from './support/reference';

/** A safetensors file from a header object and a raw data section. */
function build(header: object, data: Uint8Array, pad = true): Uint8Array {
  let json = JSON.stringify(header);
  if (pad) while ((8 + json.length) % 8) json += ' ';
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  out.set(data, 8 + hb.length);
  return out;
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('safetensors round trip', () => {
  test('float32 and uint8 tensors, metadata, strided views, bytes and files', () => {
    const a = Tensor.randn([3, 4], { seed: 1 });
    const b = Tensor.from([1, 0, 1], 'uint8');
    const c = Tensor.randn([5, 6], { seed: 2 }).transpose().narrow(0, 1, 3); // strided
    const bytes = saveSafetensors({ a, b, c, empty: Tensor.zeros([0, 3]) }, { format: 'pt', note: 'hi' });
    const back = loadSafetensors(bytes);
    expect(back.metadata).toEqual({ format: 'pt', note: 'hi' });
    expect(Object.keys(back.tensors).sort()).toEqual(['a', 'b', 'c', 'empty']);
    expect(values(back.tensors.a)).toEqual(values(a));
    expect(back.tensors.b.dtype).toBe('uint8');
    expect(Array.from(back.tensors.b.data)).toEqual([1, 0, 1]);
    expect(back.tensors.c.shape).toEqual([3, 5]);
    expect(values(back.tensors.c)).toEqual(values(c));
    expect(back.tensors.empty.shape).toEqual([0, 3]);

    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ak-')), 'w.safetensors');
    saveSafetensors(file, { a }, { k: 'v' });
    const fromFile = loadSafetensors(file);
    expect(values(fromFile.tensors.a)).toEqual(values(a));
    expect(fromFile.metadata).toEqual({ k: 'v' });
  });

  test('the data section starts 8-byte aligned and F32 is viewed without a copy', () => {
    const bytes = saveSafetensors({ x: Tensor.randn([16]) });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + n) % 8).toBe(0);
    const t = loadSafetensors(bytes).tensors.x;
    expect(t.data.buffer).toBe(bytes.buffer);
  });

  test('F32 after an odd-length uint8 tensor (unaligned) is copied correctly', () => {
    const f = Float32Array.of(1.5, -2.25);
    const data = new Uint8Array(3 + 8);
    data.set([7, 8, 9], 0);
    data.set(bytesOf(f), 3);
    const file = build({ m: { dtype: 'U8', shape: [3], data_offsets: [0, 3] }, w: { dtype: 'F32', shape: [2], data_offsets: [3, 11] } }, data);
    const t = loadSafetensors(file).tensors;
    expect(Array.from(t.w.data)).toEqual([1.5, -2.25]);
    expect(Array.from(t.m.data)).toEqual([7, 8, 9]);
  });
});

describe('safetensors dtypes', () => {
  test('F16, BF16 and F64 become float32; BOOL becomes uint8', () => {
    // F16: 1.0, -2.0, 65504, 2^-24 (smallest subnormal), inf, 0.333 (0x3555)
    const f16 = Uint16Array.of(0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x3555);
    // BF16: 1.0, -3.5, 1e38-ish
    const bf16 = Uint16Array.of(0x3f80, 0xc060, 0x7e96);
    const f64 = Float64Array.of(0.1, -1e300, 3);
    const bool = Uint8Array.of(1, 0, 1, 1);
    const parts = [bytesOf(f16), bytesOf(bf16), bytesOf(f64), bool];
    const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    const header: Record<string, unknown> = {};
    const names = ['h', 'b', 'd', 'flag'];
    const dtypes = ['F16', 'BF16', 'F64', 'BOOL'];
    const shapes = [[6], [3], [3], [2, 2]];
    parts.forEach((p, i) => {
      header[names[i]] = { dtype: dtypes[i], shape: shapes[i], data_offsets: [o, o + p.length] };
      data.set(p, o);
      o += p.length;
    });
    const t = loadSafetensors(build(header, data)).tensors;
    expect(Array.from(t.h.data)).toEqual([1, -2, 65504, 2 ** -24, Infinity, Math.fround(0.333251953125)]);
    // BF16 is the top half of a float32.
    expect(Array.from(t.b.data)).toEqual(Array.from(new Float32Array(Uint32Array.of(0x3f800000, 0xc0600000, 0x7e960000).buffer)));
    expect(Array.from(t.d.data)).toEqual([Math.fround(0.1), -Infinity, 3]);
    expect(t.flag.dtype).toBe('uint8');
    expect(t.flag.shape).toEqual([2, 2]);
    expect(Array.from(t.flag.data)).toEqual([1, 0, 1, 1]);
  });
});

describe('safetensors validation', () => {
  const good = () => build({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));

  test('truncated files', () => {
    expect(() => loadSafetensors(new Uint8Array(5))).toThrow('Invalid safetensors data: 5 bytes is too short for the 8-byte header length');
    const g = good();
    expect(() => loadSafetensors(g.subarray(0, 20))).toThrow(/runs past the end/);
    expect(() => loadSafetensors(g.subarray(0, g.length - 3))).toThrow("tensor 'w' ends at byte 8 of a 5-byte data section (truncated file?)");
  });

  test('corrupted headers', () => {
    const g = good();
    const bad = g.slice();
    bad[10] = 0xff;
    expect(() => loadSafetensors(bad)).toThrow(/header is not valid UTF-8 JSON/);
    const huge = g.slice();
    new DataView(huge.buffer).setBigUint64(0, 2n ** 40n, true);
    expect(() => loadSafetensors(huge)).toThrow(/exceeds 100000000 bytes/);
    expect(() => loadSafetensors(build([1, 2] as never, new Uint8Array(0)))).toThrow('header is not a JSON object');
    expect(() => loadSafetensors(build({ w: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)))).toThrow(
      `tensor 'w' has dtype "I64"; supported: F32, F16, BF16, F64, U8, BOOL`,
    );
    expect(() => loadSafetensors(build({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 8] } }, new Uint8Array(8)))).toThrow(/has shape \[-1\]/);
    expect(() => loadSafetensors(build({ w: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, new Uint8Array(8)))).toThrow(/data_offsets/);
    expect(() => loadSafetensors(build({ __metadata__: { a: 1 } }, new Uint8Array(0)))).toThrow('__metadata__.a is 1 of type number, expected a string');
  });

  test('sizes, overlaps and holes', () => {
    expect(() => loadSafetensors(build({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)))).toThrow(
      "tensor 'w' (F32 [3]) needs 12 bytes but data_offsets span 8",
    );
    expect(() =>
      loadSafetensors(
        build(
          { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
          new Uint8Array(12),
        ),
      ),
    ).toThrow("tensor 'b' overlaps the tensor before it");
    expect(() => loadSafetensors(build({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)))).toThrow(
      'bytes 0..4 of the data section belong to no tensor',
    );
    expect(() => loadSafetensors(build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(8)))).toThrow(
      'bytes 4..8 of the data section belong to no tensor',
    );
  });

  test('bad arguments', () => {
    expect(() => loadSafetensors(42 as never)).toThrow('Expected path string or Uint8Array for pathOrBytes but received 42 of type number');
    expect(() => loadSafetensors('/nonexistent/x.safetensors')).toThrow(/Cannot read safetensors file \/nonexistent\/x.safetensors/);
    expect(() => saveSafetensors({ a: new Float32Array(2) as never })).toThrow("Expected Tensor for tensors['a']");
    expect(() => saveSafetensors({ a: Tensor.zeros([1]) }, { k: 1 as never })).toThrow('Expected string for metadata.k');
  });
});
