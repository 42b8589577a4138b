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
export { fedprox, fedproxConfig, FedProx, type FedProxConfig } from './fedprox.js';
export { fedrep, fedrepConfig, FedRep, type FedRepConfig } from './fedrep.js';
export { lgFedavg, lgFedavgConfig, LgFedAvg, type LgFedAvgConfig } from './lg-fedavg.js';
export { ditto, dittoConfig, Ditto, type DittoConfig } from './ditto.js';
export { lotteryfl, lotteryflConfig, LotteryFL, type LotteryFLConfig } from './lotteryfl.js';
