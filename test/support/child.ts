// Runs a snippet in a fresh Node process against the compiled package.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export const distPath = path.resolve(__dirname, '..', '..', 'dist');

export interface ChildResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `code` runs with `ak` bound to the package. */
export function runChild(code: string, env: NodeJS.ProcessEnv = {}): ChildResult {
  const r = spawnSync(process.execPath, ['-e', `const ak = require(${JSON.stringify(distPath)});\n${code}`], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
