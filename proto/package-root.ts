// Files that ship beside the code (the .proto, the embedded data set, bench
// results) are found from the package root, so that the same code works from
// the sources (under tsx/vitest) and from the compiled dist/.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cachedRoot: string | undefined;

/** The directory of subfed's package.json, searched upwards from this module (proto/ or dist/proto/). */
export function packageRoot(): string {
  cachedRoot ??= findPackageRoot(dirname(fileURLToPath(import.meta.url)));
  return cachedRoot;
}

/** The nearest directory at or above `start` whose package.json is named "subfed". */
export function findPackageRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'subfed') return dir;
      } catch {
        // An unreadable package.json on the way up is not ours; keep climbing.
      }
    }
    if (dirname(dir) === dir) throw new Error(`cannot find subfed's package.json in ${start} or any directory above it`);
  }
}
