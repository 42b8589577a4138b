/** The client algorithms: the registry, their descriptors and configs. */
export * from './registry.js';
export * from './config.js';
export type * from './define.js';
export type * from './types.js';
export { subfedavgUn, subfedavgUnConfig, SubFedAvgUn, type SubFedAvgUnConfig } from './subfedavg-un.js';
export { subfedavgHy, subfedavgHyConfig, SubFedAvgHy, type SubFedAvgHyConfig } from './subfedavg-hy.js';
export { fedavg, fedavgConfig, type FedAvgConfig } from './fedavg.js';
export { fedavgFt, fedavgFtConfig, FedAvgFt, type FedAvgFtConfig } from './fedavg-ft.js';
export { localOnly, localConfig, LocalOnly, type LocalConfig } from './local.js';
