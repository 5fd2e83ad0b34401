// Every JavaScript example in README.md runs as it is written, against the
// built package: each in a fresh Node process, as a .cjs file (or .mjs when it
// imports), in a scratch directory where `attention-kernels` resolves to this
// checkout. A block whose first line is `// Continues the example above.` runs
// after the block before it (and whatever that one continued). Shell commands
// and output are in blocks of other languages and are not run.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const root = path.resolve(__dirname, '..');
const continues = '// Continues the example above.';

interface Block {
  line: number;
  code: string;
}

/** The README's js blocks, each joined to the ones it continues. */
function readmeExamples(markdown: string): Block[] {
  const blocks: Block[] = [];
  const fence = /^```(\w*)\n([\s\S]*?)^```$/gm;
  for (let m = fence.exec(markdown); m; m = fence.exec(markdown)) {
    if (m[1] !== 'js') continue;
    const line = markdown.slice(0, m.index).split('\n').length;
    const code = m[2];
    if (code.startsWith(continues)) {
      const previous = blocks[blocks.length - 1];
      if (!previous) throw new Error(`README line ${line}: continues a block, but none comes before it`);
      blocks.push({ line, code: `${previous.code}\n${code}` });
    } else {
      blocks.push({ line, code });
    }
  }
  return blocks;
}

const examples = readmeExamples(fs.readFileSync(path.join(root, 'README.md'), 'utf8'));
let dir = '';

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'attention-kernels-readme-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'attention-kernels'), 'dir');
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('README examples', () => {
  test('there are examples, and each continued one has a block before it', () => {
    expect(examples.length).toBeGreaterThanOrEqual(10);
  });

  test.each(examples.map((b) => [b.line, b] as const))('the block at README.md line %i runs', (line, block) => {
    const esm = /^import .* from /m.test(block.code);
    const file = path.join(dir, `example-${line}.${esm ? 'mjs' : 'cjs'}`);
    fs.writeFileSync(file, block.code);
    const r = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr, `README.md line ${line}:\n${block.code}`).toBe('');
    expect(r.status).toBe(0);
  });
});
