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
    for (const block of jsonBlocks) expect(['json server.json', 'json client.json']).toContain(block.info);
    expect(tagged('server.json').length).toBeGreaterThanOrEqual(2);
    expect(tagged('client.json').length).toBeGreaterThanOrEqual(2);
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

describe('README: links', () => {
  it('links only to files in the repository', () => {
    const links = [...README.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
    expect(links).toEqual(expect.arrayContaining(['ARCHITECTURE.md', 'proto/PROTOCOL.md']));
    for (const link of links) expect(existsSync(join(REPO_ROOT, link)), link).toBe(true);
    expect(README).not.toContain('../shared');
  });
});
