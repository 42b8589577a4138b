/**
 * Chooses the tfjs backend for local training and registers our own kernels on it.
 *
 * Preference for 'auto': tfjs-node (native TensorFlow, an optional dependency) when it
 * loads, else the WebAssembly backend (XNNPACK + SIMD), else the pure-JS cpu backend.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { EnvironmentError, envChoice } from './env.js';
import { registerGradients } from './kernels/gradients.js';
import { registerFastKernels } from './kernels/index.js';

export const BACKEND_CHOICES = ['auto', 'node', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

/** Anything with an `info(message)` method, e.g. a pino logger. */
export interface BackendLogger {
  info(message: string): void;
}

export interface BackendOptions {
  /** Where the one "backend chosen" line goes; default: one line on stderr. */
  logger?: BackendLogger;
  /**
   * Register our faster kernels (default true). Turned off only by the benchmark's
   * `cpu-stock` baseline, which measures tfjs as shipped.
   */
  customKernels?: boolean;
}

let active: { key: string; ready: Promise<BackendName> } | undefined;

/**
 * Selects and initialises a backend once; later calls with the same arguments return
 * the same promise. Forcing a backend that cannot load rejects with the reason.
 */
export function initBackend(choice?: BackendChoice, options: BackendOptions = {}): Promise<BackendName> {
  let chosen: BackendChoice;
  try {
    chosen = choice ?? envChoice('SUBFED_BACKEND', BACKEND_CHOICES) ?? 'auto';
  } catch (err) {
    // Rejected like any other failure to start the backend.
    if (err instanceof EnvironmentError) return Promise.reject(err);
    throw err;
  }
  const customKernels = options.customKernels ?? true;
  const key = `${chosen}:${customKernels}`;
  if (active?.key === key) return active.ready;
  const ready = selectBackend(chosen, customKernels).then((name) => {
    const line = `tfjs backend: ${name}${customKernels ? '' : ' (stock kernels)'}`;
    if (options.logger) options.logger.info(line);
    else process.stderr.write(`${line}\n`);
    return name;
  });
  active = { key, ready };
  // A failed attempt must not poison later calls with another choice.
  ready.catch(() => {
    if (active?.ready === ready) active = undefined;
  });
  return ready;
}

async function selectBackend(choice: BackendChoice, customKernels: boolean): Promise<BackendName> {
  const order: Exclude<BackendChoice, 'auto'>[] = choice === 'auto' ? ['node', 'wasm', 'cpu'] : [choice];
  const failures: string[] = [];
  for (const candidate of order) {
    try {
      const name = await activate(candidate);
      if (customKernels) registerFastKernels(name);
      registerGradients();
      return name;
    } catch (err) {
      failures.push(`${candidate}: ${errorMessage(err)}`);
    }
  }
  throw new Error(`backend "${choice}" is unavailable (${failures.join('; ')})`);
}

async function activate(candidate: Exclude<BackendChoice, 'auto'>): Promise<BackendName> {
  switch (candidate) {
    case 'node': {
      // A variable specifier keeps TypeScript from resolving a package that is only optional.
      const specifier = '@tensorflow/tfjs-node';
      try {
        await import(specifier);
      } catch (err) {
        throw new Error(
          `@tensorflow/tfjs-node did not load (${firstLine(errorMessage(err))}); install it to use the native backend`,
        );
      }
      return setBackendOrThrow('tensorflow');
    }
    case 'wasm': {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      // The .wasm binaries ship inside the npm package: load them from disk, never the network.
      const require = createRequire(import.meta.url);
      const dist = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep;
      if (tf.findBackend('wasm') === null) wasm.setWasmPaths(dist);
      return withoutNewProcessHandlers(() => setBackendOrThrow('wasm'));
    }
    case 'cpu':
      await import('@tensorflow/tfjs-backend-cpu');
      return setBackendOrThrow('cpu');
  }
}

/**
 * The Emscripten runtime of tfjs-backend-wasm installs process-wide 'uncaughtException'
 * and 'unhandledRejection' handlers that rethrow, so that Node prints the throwing line
 * of its minified module (tens of kilobytes) with every later uncaught error. Node's own
 * handling is the same minus that noise: drop the handlers it added.
 */
async function withoutNewProcessHandlers<T>(init: () => Promise<T>): Promise<T> {
  const exceptionHandlers = new Set(process.listeners('uncaughtException'));
  const rejectionHandlers = new Set(process.listeners('unhandledRejection'));
  try {
    return await init();
  } finally {
    for (const listener of process.listeners('uncaughtException')) {
      if (!exceptionHandlers.has(listener)) process.removeListener('uncaughtException', listener);
    }
    for (const listener of process.listeners('unhandledRejection')) {
      if (!rejectionHandlers.has(listener)) process.removeListener('unhandledRejection', listener);
    }
  }
}

async function setBackendOrThrow<N extends BackendName>(name: N): Promise<N> {
  if (tf.findBackendFactory(name) === null) throw new Error(`tfjs backend "${name}" is not registered`);
  const ok = await tf.setBackend(name);
  if (!ok) throw new Error(`tfjs backend "${name}" failed to initialise`);
  await tf.ready();
  return name;
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'object' && err !== null && 'message' in err) return String(err.message);
  return String(err);
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0] ?? text;
}
