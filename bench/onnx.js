'use strict';
// Builds small ONNX models in memory for the side-by-side benchmarks: a
// minimal protobuf writer covering the messages a one-graph model needs
// (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
// ValueInfoProto). Field numbers follow onnx.proto.

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

class Writer {
  constructor() {
    this.parts = [];
  }
  varint(v) {
    let n = BigInt(v);
    if (n < 0n) n = BigInt.asUintN(64, n); // int64 fields: two's complement, 10 bytes
    const bytes = [];
    do {
      let b = Number(n & 0x7fn);
      n >>= 7n;
      if (n > 0n) b |= 0x80;
      bytes.push(b);
    } while (n > 0n);
    this.parts.push(Uint8Array.from(bytes));
    return this;
  }
  tag(field, wire) {
    return this.varint((field << 3) | wire);
  }
  int(field, v) {
    return this.tag(field, WIRE_VARINT).varint(v);
  }
  float(field, v) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.tag(field, WIRE_I32);
    this.parts.push(b);
    return this;
  }
  bytes(field, data) {
    this.tag(field, WIRE_LEN).varint(data.length);
    this.parts.push(data);
    return this;
  }
  string(field, s) {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  message(field, build) {
    const w = new Writer();
    build(w);
    return this.bytes(field, w.finish());
  }
  finish() {
    const total = this.parts.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

const FLOAT = 1; // TensorProto.DataType.FLOAT
const INT32 = 6;

// A tensor type with fixed dims (numbers) or symbolic ones (strings).
function valueInfo(w, field, name, dims, elemType = FLOAT) {
  w.message(field, (v) => {
    v.string(1, name);
    v.message(2, (t) =>
      t.message(1, (tt) => {
        tt.int(1, elemType);
        tt.message(2, (shape) => {
          for (const d of dims) {
            shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
          }
        });
      }),
    );
  });
}

function attribute(w, name, value) {
  w.message(5, (a) => {
    a.string(1, name);
    if (Number.isInteger(value)) {
      a.int(3, value);
      a.int(20, 2); // AttributeType.INT
    } else if (typeof value === 'number') {
      a.float(2, value);
      a.int(20, 1); // FLOAT
    } else {
      throw new TypeError(`unsupported attribute ${name}`);
    }
  });
}

/**
 * @param {object} spec
 * @param {{opType: string, inputs: string[], outputs: string[], domain?: string, attrs?: object}[]} spec.nodes
 * @param {{name: string, dims: (number|string)[]}[]} spec.inputs
 * @param {{name: string, dims: (number|string)[]}[]} spec.outputs
 * @param {{name: string, dims: number[], data: Float32Array|Int32Array}[]} [spec.initializers]
 * @param {{domain: string, version: number}[]} spec.opsets
 * @returns {Uint8Array} a serialized ModelProto
 */
function buildModel(spec) {
  const w = new Writer();
  w.int(1, 8); // ir_version
  w.string(2, 'attention-kernels-bench');
  for (const op of spec.opsets) {
    w.message(8, (o) => {
      if (op.domain) o.string(1, op.domain);
      o.int(2, op.version);
    });
  }
  w.message(7, (g) => {
    spec.nodes.forEach((node, i) => {
      g.message(1, (n) => {
        for (const x of node.inputs) n.string(1, x);
        for (const y of node.outputs) n.string(2, y);
        n.string(3, `node${i}`);
        n.string(4, node.opType);
        for (const [k, v] of Object.entries(node.attrs || {})) attribute(n, k, v);
        if (node.domain) n.string(7, node.domain);
      });
    });
    g.string(2, 'graph');
    for (const init of spec.initializers || []) {
      g.message(5, (t) => {
        for (const d of init.dims) t.int(1, d);
        t.int(2, init.data instanceof Int32Array ? INT32 : FLOAT);
        t.string(8, init.name);
        t.bytes(9, new Uint8Array(init.data.buffer, init.data.byteOffset, init.data.byteLength));
      });
    }
    for (const x of spec.inputs) valueInfo(g, 11, x.name, x.dims, x.type || FLOAT);
    for (const y of spec.outputs) valueInfo(g, 12, y.name, y.dims, y.type || FLOAT);
  });
  return w.finish();
}

module.exports = { buildModel, FLOAT, INT32 };
