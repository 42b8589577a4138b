/**
 * The client algorithms, each described once (define.ts). The simulator, the
 * CLI and the participant ask here what an algorithm is and needs instead of
 * testing names. Adding an algorithm: its own file exporting a descriptor built
 * with `defineAlgorithm`, and one line in ALGORITHMS.
 */
import type { z } from 'zod';
import { AlgorithmConfigError } from './config.js';
import type { AlgorithmDescriptor } from './define.js';
import { ditto } from './ditto.js';
import { fedavgFt } from './fedavg-ft.js';
import { fedavg } from './fedavg.js';
import { fedprox } from './fedprox.js';
import { fedrep } from './fedrep.js';
import { lgFedavg } from './lg-fedavg.js';
import { localOnly } from './local.js';
import { lotteryfl } from './lotteryfl.js';
import { subfedavgHy } from './subfedavg-hy.js';
import { subfedavgUn } from './subfedavg-un.js';
import type { ClientAlgorithm } from './types.js';

/** In the order help and reports list them. */
const ALGORITHMS = [
  subfedavgUn,
  subfedavgHy,
  lotteryfl,
  fedavg,
  fedavgFt,
  fedprox,
  ditto,
  fedrep,
  lgFedavg,
  localOnly,
] as const satisfies readonly AlgorithmDescriptor[];

export type RegisteredAlgorithm = (typeof ALGORITHMS)[number];
export type AlgorithmName = RegisteredAlgorithm['name'];

/** An algorithm's kind, by name ('federated' | 'local'). */
export type AlgorithmKindOf<Name extends AlgorithmName> = Extract<RegisteredAlgorithm, { name: Name }>['kind'];

/** The config an algorithm accepts, before defaults (every field optional), by name. */
export type AlgorithmConfigInput<Name extends AlgorithmName> = z.input<Extract<RegisteredAlgorithm, { name: Name }>['schema']>;

const NAMES: readonly AlgorithmName[] = ALGORITHMS.map((a) => a.name);

export function algorithmNames(): readonly AlgorithmName[] {
  return NAMES;
}

export function isAlgorithmName(name: string): name is AlgorithmName {
  return (NAMES as readonly string[]).includes(name);
}

/** The descriptor of `name`; an unknown name is an AlgorithmConfigError listing the known ones. */
export function describeAlgorithm(name: string): AlgorithmDescriptor {
  const descriptor = ALGORITHMS.find((a) => a.name === name);
  if (descriptor === undefined) {
    throw new AlgorithmConfigError(`unknown algorithm '${name}': expected one of ${NAMES.join(', ')}`);
  }
  return descriptor;
}

/** Every descriptor, in registry order. */
export function allAlgorithms(): readonly AlgorithmDescriptor[] {
  return ALGORITHMS;
}

/** A new algorithm object (one per client: fedavg-ft keeps per-client bookkeeping). `config` is validated. */
export function createAlgorithm(name: string, config: unknown = {}): ClientAlgorithm {
  return describeAlgorithm(name).create(config);
}
