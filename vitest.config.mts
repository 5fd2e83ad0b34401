import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// The suite runs once per kernel path this machine can execute (each test
// file in its own process, with ATTN_ISA forcing the path). ATTN_ISA set by
// the caller pins a single path.
function isasToTest(): string[] {
  if (process.env.ATTN_ISA) return [process.env.ATTN_ISA];
  const probe = spawnSync(
    process.execPath,
    ['-e', "const n = require('./test/support/load-native.cjs'); process.stdout.write(JSON.stringify(n.cpuInfo().availableIsas))"],
    { cwd: fileURLToPath(new URL('.', import.meta.url)), encoding: 'utf8' },
  );
  if (probe.status !== 0) {
    throw new Error(`Cannot list the kernel paths to test: ${probe.stderr || probe.stdout}`);
  }
  return JSON.parse(probe.stdout) as string[];
}

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: isasToTest().map((isa) => ({
      extends: true,
      test: { name: isa, env: { ATTN_ISA: isa }, include: ['test/**/*.test.ts'] },
    })),
  },
});
