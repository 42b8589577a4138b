/**
 * SUBFED_BACKEND and SUBFED_ENGINE: parsed where they are read, a bad value an
 * error naming the variable, what it held and the allowed values; `subfed
 * client` answers one with exit code 2 before it reads any data.
 */
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { EnvironmentError, envChoice } from '../../client/env.js';
import { engineChoice } from '../../client/kernels/engine/index.js';
import { runClientCommand } from '../../client/main.js';

const saved = { SUBFED_BACKEND: process.env.SUBFED_BACKEND, SUBFED_ENGINE: process.env.SUBFED_ENGINE };

afterEach(() => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

describe('envChoice', () => {
  const choices = ['auto', 'native', 'tfjs'] as const;

  it('is undefined when the variable is not set, the value when it is one of the choices', () => {
    expect(envChoice('X', choices, {})).toBeUndefined();
    expect(envChoice('X', choices, { X: 'tfjs' })).toBe('tfjs');
  });

  it('refuses another value (an empty one too), naming the variable, the value and the choices', () => {
    expect(() => envChoice('X', choices, { X: 'gpu' })).toThrow(EnvironmentError);
    expect(() => envChoice('X', choices, { X: 'gpu' })).toThrow(/^X: expected one of auto, native, tfjs, got "gpu"$/);
    expect(() => envChoice('X', choices, { X: '' })).toThrow(/^X: expected one of auto, native, tfjs, got ""$/);
  });
});

describe('SUBFED_BACKEND and SUBFED_ENGINE', () => {
  it('initBackend rejects a bad SUBFED_BACKEND when no backend is given, and ignores it when one is', async () => {
    process.env.SUBFED_BACKEND = 'gpu';
    await expect(initBackend()).rejects.toThrow(/^SUBFED_BACKEND: expected one of auto, node, wasm, cpu, got "gpu"$/);
    await expect(initBackend('cpu', { logger: { info: () => {} } })).resolves.toBe('cpu');
  });

  it('engineChoice throws on a bad SUBFED_ENGINE unless the engine is given', () => {
    process.env.SUBFED_ENGINE = 'fast';
    expect(() => engineChoice()).toThrow(/^SUBFED_ENGINE: expected one of auto, native, tfjs, got "fast"$/);
    expect(engineChoice('tfjs')).toBe('tfjs');
    process.env.SUBFED_ENGINE = 'tfjs';
    expect(engineChoice()).toBe('tfjs');
    delete process.env.SUBFED_ENGINE;
    expect(engineChoice()).toBe('auto');
  });

  it.each([
    ['SUBFED_BACKEND', 'gpu', /SUBFED_BACKEND: expected one of auto, node, wasm, cpu, got "gpu"/],
    ['SUBFED_ENGINE', 'fast', /SUBFED_ENGINE: expected one of auto, native, tfjs, got "fast"/],
  ])('subfed client exits 2 on a bad %s, before reading the data folder', async (name, value, message) => {
    process.env[name] = value;
    let output = '';
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        output += chunk.toString();
        done();
      },
    });
    const code = await runClientCommand(
      { server: '127.0.0.1:1', data: '/nonexistent/subfed-data', logLevel: 'error' },
      { env: { SUBFED_TOKEN: 'token' }, stream },
    );
    expect(code).toBe(2);
    const records = output
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { event?: string; msg?: string });
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ event: 'failed', error: 'EnvironmentError', exitCode: 2 });
    expect(records[0].msg).toMatch(message);
  });
});
