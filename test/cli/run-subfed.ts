// `subfed <args>` as a user runs it from the sources (node --import tsx cli.ts), for the command-line tests.
import { spawn } from 'node:child_process';
import { packageRoot } from '../../proto/package-root.js';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `subfed <args>` in the package root; resolves when it exits. */
export function subfed(args: string[], options: { nodeArgs?: string[]; env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), '--import', 'tsx', 'cli.ts', ...args], {
      cwd: packageRoot(),
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
