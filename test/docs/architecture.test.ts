// ARCHITECTURE.md against the tree: the files and names it cites exist, every
// source file is on its map, and its folder arrows are the linter's.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LAYERS } from '../../eslint.config.js';
import { REPO_ROOT, backticked, namedPaths, plain, prose, readDoc, tableAfter } from './markdown.js';

const DOC = readDoc('ARCHITECTURE.md');
const PARTS = ['proto', 'server', 'client', 'sim', 'bench'];

/** Source files of the parts (what a reader looks for on the map). */
function sourceFiles(): string[] {
  return PARTS.flatMap((part) =>
    readdirSync(join(REPO_ROOT, part), { recursive: true, encoding: 'utf8' })
      .filter((f) => /\.(ts|c|proto|py|sh)$/.test(f))
      .map((f) => `${part}/${f}`),
  );
}

describe('ARCHITECTURE.md', () => {
  it('names only files and folders that exist', () => {
    const paths = namedPaths(DOC, [...PARTS, 'test', 'eslint.config.js', 'cli.ts', 'README.md']);
    expect(paths.length).toBeGreaterThan(100);
    for (const path of paths) expect(existsSync(join(REPO_ROOT, path)), path).toBe(true);
  });

  it('puts every source file on the map', () => {
    const named = new Set(namedPaths(DOC, PARTS));
    const missing = sourceFiles().filter((f) => !named.has(f));
    expect(missing).toEqual([]);
  });

  it('draws the folder arrows the linter enforces', () => {
    const rows = tableAfter(DOC, 'layers-table').rows.map(([part, , imports]) => [
      plain(part),
      imports === 'none of ours' ? [] : backticked(imports),
    ]);
    expect(Object.fromEntries(rows)).toEqual(Object.fromEntries(Object.entries(LAYERS).map(([part, l]) => [part, l.parts])));
  });

  it('cites only names that exist in the code', () => {
    const code = [...sourceFiles(), 'eslint.config.js', 'tsconfig.json']
      .map((f) => readFileSync(join(REPO_ROOT, f), 'utf8'))
      .join('\n');
    // Identifiers with a capital, a `#` or a dot (`Mask`, `validateUpdate`, `Registry.adoptMasks`, `#maybeOpenRound`).
    const names = backticked(prose(DOC)).filter(
      (t) => /^#?[A-Za-z_]\w*(\.\w+)?$/.test(t) && /[A-Z#.]/.test(t) && !/^[A-Z_]+$/.test(t),
    );
    expect(names.length).toBeGreaterThan(30);
    for (const name of names) {
      const last = name.split('.').pop() ?? name;
      expect(new RegExp(`(^|[^\\w#])${last}\\b`).test(code), name).toBe(true);
    }
  });
});
