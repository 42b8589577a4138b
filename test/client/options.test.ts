/** `subfed client --config client.json`: one file for everything a device needs, flags over it, errors naming file and field. */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientRun } from '../../client/run.js';
import { Option } from 'commander';
import {
  CLIENT_FLAGS,
  ClientCommandError,
  clientOptionsFromCommandLine,
  type ClientOptionKey,
  type ClientOptions,
} from '../../client/options.js';

describe('one name per option', () => {
  it("names each option's config-file field as the option, and its flag as the field's kebab-case (the token alone: tokenFile)", () => {
    const kebab = (field: string) => `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    for (const [key, spec] of Object.entries(CLIENT_FLAGS) as [ClientOptionKey, { flags: string }][]) {
      const option = new Option(spec.flags);
      const field = key === 'enrollmentToken' ? 'tokenFile' : key;
      expect([option.long, option.attributeName()], key).toEqual([kebab(field), field]);
    }
  });
});

describe('client config file', () => {
  let dir: string;
  let file: string;
  const write = (name: string, value: unknown): Promise<void> =>
    writeFile(join(dir, name), typeof value === 'string' ? value : JSON.stringify(value, null, 2));

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'subfed-config-'));
    await mkdir(join(dir, 'device', 'secrets'), { recursive: true });
    await writeFile(join(dir, 'device', 'secrets', 'token'), 'from-the-file\n');
    await chmod(join(dir, 'device', 'secrets', 'token'), 0o600);
    await writeFile(join(dir, 'device', 'prune.json'), '{"target": 45}');
    file = join(dir, 'device', 'client.json');
    await write('device/client.json', {
      server: 'coordinator.lan:50051',
      tokenFile: 'secrets/token',
      data: 'data',
      labelColumn: 'y',
      stateDir: '/var/lib/subfed',
      algorithm: 'subfedavg-un',
      algorithmConfig: 'prune.json',
      values: 'int8',
      tlsCa: 'ca.pem',
      backend: 'wasm',
      model: 'mlp',
      name: 'sensor-7',
      seed: 7,
      rounds: 20,
      leave: true,
      logLevel: 'warn',
      heartbeatMs: 2000,
    });
  });

  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('holds every option, relative paths resolved against its folder', async () => {
    const options = await clientOptionsFromCommandLine({ config: file }, {});
    expect(options).toMatchObject({
      server: 'coordinator.lan:50051',
      enrollmentToken: 'from-the-file',
      data: join(dir, 'device', 'data'),
      labelColumn: 'y',
      stateDir: '/var/lib/subfed', // absolute stays
      algorithm: 'subfedavg-un',
      algorithmConfig: { target: 45 },
      values: 'int8',
      tlsCa: join(dir, 'device', 'ca.pem'),
      backend: 'wasm',
      model: 'mlp',
      name: 'sensor-7',
      seed: 7,
      rounds: 20,
      leave: true,
      logLevel: 'warn',
      heartbeatMs: 2000,
      warnings: [],
    } satisfies Partial<ClientOptions>);
    expect(options.nameOf('rounds')).toBe(`${file}: rounds`);
    expect(options.nameOf('enrollmentToken')).toBe(`${file}: tokenFile`);
  });

  it('is overridden by SUBFED_TOKEN and by flags, field by field', async () => {
    const options = await clientOptionsFromCommandLine(
      { config: file, rounds: '3', data: 'here', algorithmConfig: '{"target": 30}', logLevel: 'debug' },
      { SUBFED_TOKEN: 'from-the-environment' },
    );
    expect(options).toMatchObject({
      enrollmentToken: 'from-the-environment',
      rounds: 3,
      data: 'here', // a flag's path is the user's, relative to where they are
      algorithmConfig: { target: 30 },
      logLevel: 'debug',
      server: 'coordinator.lan:50051',
      name: 'sensor-7',
    });
    expect([options.nameOf('rounds'), options.nameOf('enrollmentToken'), options.nameOf('server')]).toEqual([
      '--rounds',
      'SUBFED_TOKEN',
      `${file}: server`,
    ]);
    const tokenFile = join(dir, 'device', 'secrets', 'token');
    expect((await clientOptionsFromCommandLine({ config: file, tokenFile }, { SUBFED_TOKEN: 'env' })).enrollmentToken).toBe(
      'from-the-file',
    );
  });

  it('names the file and the field at fault', async () => {
    const bad = async (name: string, content: unknown, flags: Record<string, string> = {}): Promise<string> => {
      await write(name, content);
      const err = await clientOptionsFromCommandLine({ config: join(dir, name), ...flags }, { SUBFED_TOKEN: 't' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ClientCommandError);
      return (err as Error).message;
    };
    const base = { server: 'h:1', data: 'd' };
    const at = (name: string) => join(dir, name);
    expect(await bad('rounds.json', { ...base, rounds: 0 })).toBe(
      `${at('rounds.json')}: rounds: expected a positive integer, got 0`,
    );
    expect(await bad('text.json', { ...base, rounds: '3' })).toBe(
      `${at('text.json')}: rounds: expected a positive integer, got "3"`,
    );
    expect(await bad('values.json', { ...base, values: 'f64', leave: 'yes' })).toBe(
      `${at('values.json')}: values: expected one of f32, f16, int8, got "f64"; ${at('values.json')}: leave: expected true or false, got "yes"`,
    );
    expect(await bad('unknown.json', { ...base, epochs: 5, valueEncoding: 'f16' })).toMatch(
      new RegExp(`^${at('unknown.json')}: unknown field\\(s\\) epochs, valueEncoding; the fields are server, tokenFile, data, `),
    );
    expect(await bad('path.json', { ...base, data: 42 })).toBe(`${at('path.json')}: data: expected a path, got 42`);
    expect(await bad('algo.json', { ...base, algorithmConfig: { p: -1 } })).toMatch(
      new RegExp(`^${at('algo.json')}: algorithmConfig: invalid subfedavg-un config: p: `),
    );
    expect(await bad('algo-file.json', { ...base, algorithmConfig: 'missing.json' })).toMatch(
      new RegExp(`^${at('algo-file.json')}: algorithmConfig: cannot read '${at('missing.json')}'`),
    );
    expect(await bad('token-file.json', { ...base, tokenFile: 'nope' })).toMatch(
      new RegExp(`^${at('token-file.json')}: tokenFile: cannot read '${at('nope')}'`),
    );
    expect(await bad('array.json', [1, 2])).toBe(`${at('array.json')}: expected a JSON object of client options, got [1,2]`);
    expect(await bad('broken.json', '{\n  "server": "h:1",\n  "rounds": 3,,\n}')).toMatch(
      new RegExp(`^${at('broken.json')}: not valid JSON( at line 3, column 15)? \\(.*\\)$`),
    );
    expect(await bad('broken.json', '{}', {})).toBe(
      '--server: expected host:port, got nothing; --data: expected a data folder, got nothing',
    );
    const missing = join(dir, 'absent.json');
    await expect(clientOptionsFromCommandLine({ config: missing }, {})).rejects.toThrow(
      new RegExp(`^--config: cannot read '${missing}' \\(ENOENT`),
    );
  });

  it('names the config field in errors found later, e.g. a data folder that is not there', async () => {
    await write('later.json', { server: '127.0.0.1:1', data: 'no-such-folder', algorithm: 'fedavg', backend: 'cpu' });
    const options = await clientOptionsFromCommandLine({ config: join(dir, 'later.json') }, { SUBFED_TOKEN: 't' });
    const run = clientRun(options);
    await expect(
      (async () => {
        for await (const _ of run);
      })(),
    ).rejects.toThrow(`${join(dir, 'later.json')}: data: '${join(dir, 'no-such-folder')}' is not a folder`);
  });
});
