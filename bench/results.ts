// Every benchmark writes its JSON to bench/results/ at the package root, whether it runs from the sources or from dist/.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../proto/package-root.js';

/** Writes bench/results/<name>.json and returns its path. */
export function writeBenchResult(name: string, data: unknown): string {
  const dir = join(packageRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}
