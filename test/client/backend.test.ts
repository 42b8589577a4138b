import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { initBackend } from '../../client/backend.js';

describe('initBackend', () => {
  it('rejects forcing tfjs-node when it is not installed, naming it and why', async () => {
    await expect(initBackend('node', { logger: { info: () => {} } })).rejects.toThrow(
      /backend "node" is unavailable.*tfjs-node did not load/,
    );
  });

  it('rejects an unknown choice, listing the valid ones: from SUBFED_BACKEND at run time, in code at compile time', async () => {
    // @ts-expect-error 'gpu' is no BackendChoice: a choice written in code is checked by the compiler
    expectTypeOf(initBackend).toBeCallableWith('gpu');
    const saved = process.env.SUBFED_BACKEND;
    process.env.SUBFED_BACKEND = 'gpu';
    try {
      await expect(initBackend()).rejects.toThrow(/SUBFED_BACKEND: expected one of auto, node, wasm, cpu, got "gpu"/);
    } finally {
      if (saved === undefined) delete process.env.SUBFED_BACKEND;
      else process.env.SUBFED_BACKEND = saved;
    }
  });

  it('selects a backend once and logs it once; auto falls back past the missing tfjs-node', async () => {
    const handlers = process.listenerCount('uncaughtException') + process.listenerCount('unhandledRejection');
    const lines: string[] = [];
    const logger = { info: (line: string) => lines.push(line) };
    const first = initBackend('auto', { logger });
    const second = initBackend('auto', { logger });
    expect(second).toBe(first);
    expect(await first).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(lines).toEqual(['tfjs backend: wasm']);
    // The wasm runtime's rethrowing process handlers are removed again.
    expect(process.listenerCount('uncaughtException') + process.listenerCount('unhandledRejection')).toBe(handlers);
  });

  it('switches when another backend is forced, with our Conv2DBackpropFilter registered on it', async () => {
    const logger = { info: () => {} };
    expect(await initBackend('cpu', { logger })).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(tf.getKernel('Conv2DBackpropFilter', 'cpu')?.kernelFunc.name).not.toBe('conv2DBackpropFilter');
    expect(await initBackend('wasm', { logger })).toBe('wasm');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
  });
});
