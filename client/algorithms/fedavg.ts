/**
 * FedAvg: train the received global model locally and upload the delta. Its
 * mask stays all ones, so the coordinator's intersection average is plain FedAvg.
 */
import { z } from 'zod';
import { trainingDefaults } from './config.js';
import { DenseAlgorithm, defineAlgorithm } from './define.js';

export const fedavgConfig = z.strictObject({ ...trainingDefaults });
export type FedAvgConfig = z.infer<typeof fedavgConfig>;

export const fedavg = defineAlgorithm({
  name: 'fedavg',
  summary: 'FedAvg: one dense global model, trained locally and averaged (the communication baseline)',
  reference: 'McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017',
  kind: 'federated',
  schema: fedavgConfig,
  evaluatesGlobalModel: true,
  implementation: DenseAlgorithm,
});
