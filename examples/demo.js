#!/usr/bin/env node
'use strict';
// The seed's example: the sentence 我想吃汉堡 (5 tokens), d_model 512, 8 heads
// of 64. Deterministic token embeddings plus sinusoidal position encoding,
// then multi-head self-attention; prints the shape at each stage, each head's
// 5x5 attention matrix as a heatmap, and writes an SVG with one panel per head.
//
//   npm start                         (writes attention-heads.svg)
//   npm start -- --out some/file.svg  (or --no-svg)

const fs = require('node:fs');
const path = require('node:path');
const { MultiHeadAttention, Tensor, cpuInfo } = require('..');

const args = process.argv.slice(2);
const outIndex = args.indexOf('--out');
const svgPath = args.includes('--no-svg') ? null : path.resolve(outIndex >= 0 ? args[outIndex + 1] : 'attention-heads.svg');
const color = process.stdout.isTTY && !process.env.NO_COLOR && !args.includes('--no-color');

const TOKENS = ['我', '想', '吃', '汉', '堡'];
const D_MODEL = 512;
const HEADS = 8;

// ---------------------------------------------------------------- inputs
// Token embeddings: one seeded normal vector per character (its code point is the seed).
function embed(tokens) {
  const x = Tensor.zeros([1, tokens.length, D_MODEL]);
  tokens.forEach((t, i) => x.select(0, 0).select(0, i).assign(Tensor.randn([D_MODEL], { seed: t.codePointAt(0) })));
  return x;
}

// PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).
function positionalEncoding(length, dim) {
  const pe = new Float32Array(length * dim);
  for (let pos = 0; pos < length; ++pos) {
    for (let i = 0; i < dim; i += 2) {
      const angle = pos / Math.pow(10000, i / dim);
      pe[pos * dim + i] = Math.sin(angle);
      if (i + 1 < dim) pe[pos * dim + i + 1] = Math.cos(angle);
    }
  }
  return new Tensor(pe, [1, length, dim]);
}

// ---------------------------------------------------------------- terminal output
const fmtShape = (s) => `[${s.join(', ')}]`;
// CJK characters take two terminal columns.
const width = (s) => [...s].reduce((w, ch) => w + (/[\u3000-\u9fff\uff00-\uffef]/.test(ch) ? 2 : 1), 0);
const pad = (s, n) => s + ' '.repeat(Math.max(0, n - width(s)));

function cell(p) {
  const text = p.toFixed(2).replace(/^0/, ' ');
  if (!color) {
    const shades = [' ', '░', '▒', '▓', '█'];
    return `${shades[Math.min(4, Math.floor(p * 5))]}${text} `;
  }
  // White (0) to deep blue (1) on a 24-bit background.
  const t = Math.min(1, p * 1.6);
  const bg = [255 - 200 * t, 255 - 160 * t, 255 - 40 * t].map(Math.round);
  const fg = t > 0.55 ? '97' : '30';
  return `\x1b[48;2;${bg.join(';')}m\x1b[${fg}m ${text} \x1b[0m`;
}

function heatmapLines(weights, head) {
  const lines = [pad(`head ${head + 1}`, 4) + '  ' + TOKENS.map((t) => pad(` ${t}`, 6)).join('')];
  for (let i = 0; i < TOKENS.length; ++i) {
    let line = pad(TOKENS[i], 4) + '  ';
    for (let j = 0; j < TOKENS.length; ++j) line += cell(weights.get(0, head, i, j));
    lines.push(line);
  }
  return lines;
}

// ---------------------------------------------------------------- SVG
function svg(weights) {
  const n = TOKENS.length;
  const cellSize = 44;
  const panel = cellSize * n + 70;
  const cols = 4;
  const rows = HEADS / cols;
  const W = cols * panel + 20;
  const H = rows * (panel + 30) + 70;
  const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="'Noto Sans CJK SC','PingFang SC','Microsoft YaHei',sans-serif">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="30" text-anchor="middle" font-size="18">${esc('Multi-head self-attention over 我想吃汉堡: d_model 512, 8 heads of 64')}</text>`,
    `<text x="${W / 2}" y="52" text-anchor="middle" font-size="12" fill="#555555">rows: query token · columns: key token · each row sums to 1</text>`,
  ];
  for (let h = 0; h < HEADS; ++h) {
    const ox = 10 + (h % cols) * panel + 40;
    const oy = 70 + Math.floor(h / cols) * (panel + 30) + 30;
    out.push(`<text x="${ox + (cellSize * n) / 2}" y="${oy - 14}" text-anchor="middle" font-size="14">head ${h + 1}</text>`);
    for (let i = 0; i < n; ++i) {
      out.push(`<text x="${ox - 8}" y="${oy + i * cellSize + cellSize / 2 + 5}" text-anchor="end" font-size="14">${TOKENS[i]}</text>`);
      out.push(`<text x="${ox + i * cellSize + cellSize / 2}" y="${oy + n * cellSize + 18}" text-anchor="middle" font-size="14">${TOKENS[i]}</text>`);
      for (let j = 0; j < n; ++j) {
        const p = weights.get(0, h, i, j);
        const t = Math.min(1, p * 1.6);
        const fill = `rgb(${Math.round(255 - 200 * t)},${Math.round(255 - 160 * t)},${Math.round(255 - 40 * t)})`;
        const x = ox + j * cellSize;
        const y = oy + i * cellSize;
        out.push(`<rect x="${x}" y="${y}" width="${cellSize}" height="${cellSize}" fill="${fill}" stroke="#ffffff"/>`);
        out.push(`<text x="${x + cellSize / 2}" y="${y + cellSize / 2 + 4}" text-anchor="middle" font-size="11" fill="${t > 0.55 ? '#ffffff' : '#222222'}">${p.toFixed(2)}</text>`);
      }
    }
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------- run
function main() {
  console.log(`attention-kernels demo (${cpuInfo().isa} kernels): ${TOKENS.join('')}, d_model ${D_MODEL}, ${HEADS} heads of ${D_MODEL / HEADS}\n`);
  const x = embed(TOKENS);
  const pe = positionalEncoding(TOKENS.length, D_MODEL);
  const input = Tensor.zeros(x.shape).assign(x);
  for (let i = 0; i < input.data.length; ++i) input.data[i] += pe.data[i]; // X = embedding + PE

  const mha = new MultiHeadAttention({ embedDim: D_MODEL, numHeads: HEADS, seed: 2023 });
  const stages = [];
  const { output, weights } = mha.forward(input, input, input, {
    needWeights: true,
    averageWeights: false,
    trace: (stage, shape) => stages.push([stage, shape]),
  });

  console.log('Shapes, stage by stage:');
  for (const [stage, shape] of stages) console.log(`  ${pad(stage, 34)} ${fmtShape(shape)}`);
  const walk = ['input', 'split heads', 'heads first', 'softmax(QKᵀ/√d_k) · V per head', 'concat heads', 'output = concat · W^O'];
  const byName = new Map(stages);
  console.log(`\n  ${walk.map((s) => fmtShape(byName.get(s))).join(' → ')}\n`);
  console.log(`Attention weights per head (row: query token, column: key token; rows sum to 1)${color ? '' : ', shaded ░▒▓█'}:\n`);
  for (let h = 0; h < HEADS; h += 2) {
    const left = heatmapLines(weights, h);
    const right = heatmapLines(weights, h + 1);
    left.forEach((l, i) => console.log(`  ${l}      ${right[i]}`));
    console.log('');
  }
  console.log(`output ${fmtShape(output.shape)}, first values: ${Array.from(output.data.subarray(0, 4), (v) => v.toFixed(4)).join(', ')}`);
  if (svgPath) {
    fs.mkdirSync(path.dirname(svgPath), { recursive: true });
    fs.writeFileSync(svgPath, svg(weights));
    console.log(`SVG with one heatmap per head: ${path.relative(process.cwd(), svgPath) || svgPath}`);
  }
}

main();
