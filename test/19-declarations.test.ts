// The published declarations (dist/*.d.ts): internal members are stripped,
// and what remains stands on its own — the type-level checks of
// test/types/result-types.ts hold against it as they do against the sources.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const root = path.join(__dirname, '..');
let dir: string;
/** dist's declarations (npm test builds dist first), by file name. */
const declarations = new Map<string, string>();

beforeAll(() => {
  const dist = path.join(root, 'dist');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'attention-kernels-dts-'));
  for (const file of fs.readdirSync(dist).filter((f) => f.endsWith('.d.ts'))) {
    const text = fs.readFileSync(path.join(dist, file), 'utf8');
    declarations.set(file, text);
    fs.writeFileSync(path.join(dir, file), text);
  }
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('published declarations', () => {
  test('@internal members are not in the .d.ts files', () => {
    expect(declarations.has('index.d.ts')).toBe(true);
    for (const [file, text] of declarations) expect(text, file).not.toContain('@internal');
    const ops = declarations.get('ops.d.ts')!;
    const packed = ops.slice(ops.indexOf('export declare class PackedMatrix'), ops.indexOf('}', ops.indexOf('export declare class PackedMatrix')));
    expect(packed).toContain('readonly shape');
    expect(packed).toContain('private constructor();');
    expect(packed).not.toMatch(/handle/);
    const multihead = declarations.get('multihead.d.ts')!;
    expect(multihead).not.toMatch(/\bappend\(/);
    expect(multihead).not.toMatch(/ModuleWeights/);
  });

  test('the declarations compile on their own and keep the result types', () => {
    // The type-level checks, pointed at the emitted index.d.ts instead of src.
    const checks = fs.readFileSync(path.join(root, 'test', 'types', 'result-types.ts'), 'utf8').replace("from '../../src'", "from './index'");
    expect(checks).toContain("from './index'");
    const consumer = path.join(dir, 'consumer.ts');
    fs.writeFileSync(consumer, checks);
    const program = ts.createProgram([consumer, ...[...declarations.keys()].map((f) => path.join(dir, f))], {
      strict: true,
      noEmit: true,
      skipLibCheck: false,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.Node16,
      moduleResolution: ts.ModuleResolutionKind.Node16,
      types: ['node'],
      typeRoots: [path.join(root, 'node_modules', '@types')],
    });
    // Every file of ours, checked in full (the libraries they use only as far as they are used).
    const ours = program.getSourceFiles().filter((f) => path.dirname(f.fileName) === dir);
    expect(ours.length).toBe(declarations.size + 1);
    const diagnostics = [
      ...program.getOptionsDiagnostics(),
      ...program.getGlobalDiagnostics(),
      ...ours.flatMap((f) => [...program.getSyntacticDiagnostics(f), ...program.getSemanticDiagnostics(f)]),
    ];
    expect(ts.formatDiagnostics(diagnostics, ts.createCompilerHost({}))).toBe('');
  });
});
