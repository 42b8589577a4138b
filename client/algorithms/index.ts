/** The client algorithms by name. */
import { ALGORITHM_NAMES, AlgorithmConfigError, isAlgorithmName } from './config.js';
import { FedAvg, FedAvgFt, LocalOnly } from './dense.js';
import { SubFedAvgHy } from './subfedavg-hy.js';
import { SubFedAvgUn } from './subfedavg-un.js';
import type { ClientAlgorithm } from './types.js';

/** A new algorithm object (one per client: fedavg-ft keeps per-client bookkeeping). `config` is validated. */
export function createAlgorithm(name: string, config: unknown = {}): ClientAlgorithm {
  if (!isAlgorithmName(name)) {
    throw new AlgorithmConfigError(`unknown algorithm '${name}': expected one of ${ALGORITHM_NAMES.join(', ')}`);
  }
  switch (name) {
    case 'subfedavg-un':
      return new SubFedAvgUn(config);
    case 'subfedavg-hy':
      return new SubFedAvgHy(config);
    case 'fedavg':
      return new FedAvg(config);
    case 'fedavg-ft':
      return new FedAvgFt(config);
    case 'local':
      return new LocalOnly(config);
  }
}

export * from './config.js';
export type * from './types.js';
export { SubFedAvgUn, SubFedAvgHy, FedAvg, FedAvgFt, LocalOnly };
