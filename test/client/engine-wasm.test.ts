/**
 * The committed client/kernels/wasm/engine.wasm is what engine.c builds to: rebuilt
 * with `npm run build:wasm`'s script when the recorded toolchain (engine.toolchain) is
 * installed, else skipped with a notice (CI machines need no clang to run the engine).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../proto/package-root.js';

// lib "ES2023" declares no WebAssembly.
declare const WebAssembly: { validate(bytes: Uint8Array): boolean };

const dir = join(packageRoot(), 'client', 'kernels', 'wasm');
const recorded = readFileSync(join(dir, 'engine.toolchain'), 'utf8').trim();

function installedToolchain(): string | null {
  const clang = spawnSync('clang', ['--version'], { encoding: 'utf8' });
  const ld = spawnSync('wasm-ld', ['--version'], { encoding: 'utf8' });
  if (clang.status !== 0 || ld.status !== 0) return null;
  return clang.stdout.split('\n', 1)[0].trim();
}

const installed = installedToolchain();
const why =
  installed === null
    ? 'clang or wasm-ld is not installed'
    : installed !== recorded
      ? `installed "${installed}" differs from the recorded "${recorded}"`
      : '';
if (why !== '') process.stderr.write(`engine-wasm.test.ts: rebuild check skipped: ${why}\n`);

describe('engine.wasm', () => {
  it.skipIf(why !== '')('matches a rebuild of engine.c byte for byte', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'subfed-wasm-'));
    try {
      const out = join(tmp, 'engine.wasm');
      execFileSync('sh', [join(dir, 'build.sh'), out], { stdio: 'pipe' });
      expect(readFileSync(out).equals(readFileSync(join(dir, 'engine.wasm')))).toBe(true);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('is a valid WebAssembly module for this runtime', () => {
    expect(WebAssembly.validate(readFileSync(join(dir, 'engine.wasm')))).toBe(true);
  });
});
