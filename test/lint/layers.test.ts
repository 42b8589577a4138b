/**
 * The folder arrows of the architecture are a lint rule (eslint.config.js,
 * LAYERS). Each fixture is linted as if it lived where its first line says;
 * the ones that break an arrow must fail, at any folder depth.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import tseslint from 'typescript-eslint';
import { describe, expect, it } from 'vitest';
import { layerBoundaries } from '../../eslint.config.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const fixtures = path.join(here, 'fixtures');

const eslint = new ESLint({
  cwd: root,
  overrideConfigFile: true,
  overrideConfig: [{ files: ['**/*.ts'], languageOptions: { parser: tseslint.parser } }, layerBoundaries],
});

async function lintFixture(file: string): Promise<string[]> {
  const text = readFileSync(path.join(fixtures, file), 'utf8');
  const target = /^\/\/ lint-as: (\S+)/.exec(text)?.[1];
  if (target === undefined) throw new Error(`${file}: first line must be "// lint-as: <path>"`);
  const [result] = await eslint.lintText(text, { filePath: path.join(root, target) });
  return result.messages.map((m) => `${m.ruleId ?? 'parse'}: ${m.message}`);
}

describe('layer boundaries', () => {
  const cases: [file: string, expected: string | null][] = [
    ['client-imports-server-from-depth.ts', "client/ may not import server/ ('../../server/coordinator.js'): allowed are proto/"],
    ['server-imports-tfjs.ts', "server/ may not load '@tensorflow/tfjs-core'"],
    ['proto-reexports-client.ts', "proto/ may not import client/ ('../../client/model.js'): allowed are none of ours"],
    ['client-loads-sim-lazily.ts', "client/ may not import sim/ ('../sim/run.js'): allowed are proto/"],
    ['client-loads-sqlite.ts', "client/ may not load 'better-sqlite3'"],
    ['sim-uses-every-part.ts', null],
    ['client-uses-proto-from-depth.ts', null],
  ];

  it('has a case for every fixture', () => {
    expect(readdirSync(fixtures).sort()).toEqual(cases.map(([f]) => f).sort());
  });

  it.each(cases)('%s', async (file, expected) => {
    const messages = await lintFixture(file);
    expect(messages).toEqual(expected === null ? [] : [`subfed/layers: ${expected}`]);
  });
});
