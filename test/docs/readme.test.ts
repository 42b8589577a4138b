// The README's examples against the code: every JSON example goes through the real
// config schemas (server.json: server/config.ts; client.json: client/options.ts, as
// `subfed client --config` reads it), and every `subfed client` command line through
// the client's real flags, so the README cannot drift from what the CLI accepts.
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { clientFlagOptions, clientOptionsFromCommandLine } from '../../client/options.js';
import { parseConfig } from '../../server/config.js';
import { registerSimCommand } from '../../sim/main.js';
import { resolveExperiment, type SimFlags } from '../../sim/presets.js';
import { loadSweep } from '../../sim/sweep.js';
import { REPO_ROOT, backticked, fencedBlocks, prose, readDoc } from './markdown.js';

const README = readDoc('README.md');
const jsonBlocks = fencedBlocks(README).filter((b) => b.info.split(/\s+/)[0] === 'json');
const tagged = (tag: string) => jsonBlocks.filter((b) => b.info.split(/\s+/).includes(tag));

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('README: JSON examples', () => {
  it('tags every JSON example with the file it shows', () => {
    for (const block of jsonBlocks) {
      expect(['json server.json', 'json client.json', 'json experiment.json', 'json sweep.json']).toContain(block.info);
    }
    expect(tagged('server.json').length).toBeGreaterThanOrEqual(2);
    expect(tagged('client.json').length).toBeGreaterThanOrEqual(2);
    expect(tagged('experiment.json').length).toBeGreaterThanOrEqual(1);
    expect(tagged('sweep.json').length).toBeGreaterThanOrEqual(1);
  });

  it('every experiment.json example is a valid experiment, read as `subfed sim --config` reads it', () => {
    for (const block of tagged('experiment.json')) {
      const json = JSON.parse(block.body) as Record<string, unknown>;
      const dir = mkdtempSync(join(tmpdir(), 'subfed-readme-'));
      dirs.push(dir);
      const file = join(dir, 'experiment.json');
      writeFileSync(file, block.body);
      const experiment = resolveExperiment({ config: file }) as unknown as Record<string, unknown>;
      // What the example sets is what the simulation runs with (objects: the fields set).
      for (const [key, value] of Object.entries(json)) {
        if (typeof value === 'object' && value !== null && !Array.isArray(value))
          expect(experiment[key], key).toMatchObject(value);
        else expect(experiment[key], key).toEqual(value);
      }
    }
  });

  it('every sweep.json example is a valid sweep, over the experiment.json example beside it', () => {
    const experiment = tagged('experiment.json')[0].body;
    for (const block of tagged('sweep.json')) {
      const json = JSON.parse(block.body) as { grid: Record<string, unknown[]>; seeds?: number[] };
      const dir = mkdtempSync(join(tmpdir(), 'subfed-readme-'));
      dirs.push(dir);
      writeFileSync(join(dir, 'experiment.json'), experiment);
      const file = join(dir, 'sweep.json');
      writeFileSync(file, block.body);
      const sweep = loadSweep(file);
      const grid = Object.entries(json.grid);
      expect(sweep.cells).toHaveLength(grid.reduce((n, [, values]) => n * values.length, 1));
      for (const cell of sweep.cells) {
        for (const [path, values] of grid) {
          const value = path.split('.').reduce<unknown>((v, key) => (v as Record<string, unknown>)[key], cell.experiment);
          expect(values).toContainEqual(value);
        }
        if (json.seeds !== undefined) expect(cell.experiment.seeds).toEqual(json.seeds);
      }
    }
  });

  it('every server.json example is a valid coordinator config', () => {
    for (const block of tagged('server.json')) {
      const json = JSON.parse(block.body) as Record<string, unknown>;
      const config = parseConfig(json, 'README server.json');
      for (const [key, value] of Object.entries(json)) {
        // What the example sets is what the coordinator runs with (objects: the fields set).
        if (typeof value === 'object' && value !== null) expect(config[key as keyof typeof config]).toMatchObject(value);
        else expect(config[key as keyof typeof config]).toEqual(value);
      }
    }
  });

  it('every client.json example is a valid client config, read as `subfed client --config` reads it', async () => {
    for (const block of tagged('client.json')) {
      const json = JSON.parse(block.body) as Record<string, unknown>;
      const dir = mkdtempSync(join(tmpdir(), 'subfed-readme-'));
      dirs.push(dir);
      // The files the example names, as a device would have them.
      if (typeof json.tokenFile === 'string') {
        writeFileSync(join(dir, json.tokenFile), 'the-token\n');
        chmodSync(join(dir, json.tokenFile), 0o600);
      }
      const file = join(dir, 'client.json');
      writeFileSync(file, block.body);
      const options = await clientOptionsFromCommandLine({ config: file }, {});
      expect(options.warnings).toEqual([]);
      expect(options.enrollmentToken).toBe('the-token');
      expect(options.server).toBe(json.server);
      if (json.values !== undefined) expect(options.values).toBe(json.values);
      if (json.algorithm !== undefined) expect(options.algorithm).toBe(json.algorithm);
      if (typeof json.data === 'string') expect(options.data).toBe(join(dir, json.data));
      if (typeof json.tlsCa === 'string') expect(options.tlsCa).toBe(join(dir, json.tlsCa));
    }
  });

  it('names only coordinator fields that exist (`grpc.host`, `tls.cert`, ...)', () => {
    const config = parseConfig({
      rounds: 1,
      fraction: 1,
      enrollmentToken: 'x',
      tls: { cert: 'c', key: 'k', clientCa: 'ca' },
    }) as Record<string, unknown>;
    const fields = backticked(prose(README)).filter((t) => /^(grpc|http|tls|liveness)\.\w+$/.test(t));
    expect(fields.length).toBeGreaterThan(5);
    for (const field of fields) {
      const [group, key] = field.split('.');
      expect(Object.keys(config[group] as object), field).toContain(key);
    }
  });
});

describe('README: command lines', () => {
  /** Every `subfed client ...` line of the shell examples, as arguments after `client`. */
  function clientCommandLines(): string[][] {
    const lines = fencedBlocks(README)
      .filter((b) => b.info === 'sh')
      .flatMap((b) => b.body.replace(/\\\n/g, ' ').split('\n'));
    return lines
      .map((line) => line.replace(/#.*$/, '').trim().split(/\s+/))
      .filter((words) => words.join(' ').includes('subfed client'))
      .map((words) => words.slice(words.indexOf('client') + 1));
  }

  it('every `subfed client` example uses only flags the client has, and never --token', () => {
    const lines = clientCommandLines();
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const args of lines) {
      const command = new Command('client').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
      for (const option of clientFlagOptions()) command.addOption(option);
      command.action(() => {});
      expect(() => command.parse(args, { from: 'user' }), args.join(' ')).not.toThrow();
      expect(command.opts().token, `${args.join(' ')}: the CLI refuses --token`).toBeUndefined();
    }
  });
});

describe('README: `subfed sim` command lines', () => {
  it('use only flags `subfed sim` has, with values its config accepts', () => {
    const lines = fencedBlocks(README)
      .filter((b) => b.info === 'sh')
      .flatMap((b) => b.body.replace(/\\\n/g, ' ').split('\n'))
      .map((line) => line.replace(/#.*$/, '').trim().split(/\s+/))
      .filter((words) => words.join(' ').includes('subfed sim'))
      .map((words) => words.slice(words.indexOf('sim') + 1));
    expect(lines.length).toBeGreaterThanOrEqual(5);
    for (const args of lines) {
      const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
      const sim = registerSimCommand(program).action(() => {});
      expect(() => program.parse(['sim', ...args], { from: 'user' }), args.join(' ')).not.toThrow();
      // An experiment file named on a line is the README's own example.
      const flags = sim.opts<SimFlags>();
      if (flags.config !== undefined) {
        const dir = mkdtempSync(join(tmpdir(), 'subfed-readme-'));
        dirs.push(dir);
        flags.config = join(dir, flags.config);
        writeFileSync(flags.config, tagged('experiment.json')[0].body);
      }
      // Data folders named on a line need not exist to parse.
      expect(() => resolveExperiment(flags), args.join(' ')).not.toThrow();
    }
  });
});

describe('README: links', () => {
  it('links only to files in the repository', () => {
    const links = [...README.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
    expect(links).toEqual(expect.arrayContaining(['ARCHITECTURE.md', 'proto/PROTOCOL.md']));
    for (const link of links) expect(existsSync(join(REPO_ROOT, link)), link).toBe(true);
    expect(README).not.toContain('../shared');
  });
});
