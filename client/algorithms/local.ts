/**
 * Local-only training: each client trains on its own data and never
 * communicates; the lower bound on what collaboration buys.
 */
import { z } from 'zod';
import { trainDense } from './common.js';
import { trainingDefaults } from './config.js';
import { LocalAlgorithmBase, defineAlgorithm } from './define.js';
import type { LocalAlgorithm, RoundContext, TrainOutcome } from './types.js';

export const localConfig = z.strictObject({ ...trainingDefaults });
export type LocalConfig = z.infer<typeof localConfig>;

/** Dense training as FedAvg's, on the client's own model only. */
export class LocalOnly extends LocalAlgorithmBase<LocalConfig> implements LocalAlgorithm {
  train(ctx: RoundContext): Promise<TrainOutcome> {
    return trainDense(ctx);
  }
}

export const localOnly = defineAlgorithm({
  name: 'local',
  summary: 'Local-only: each client trains on its own data and never communicates (the lower bound)',
  reference: 'the standard baseline of personalized FL, e.g. Sub-FedAvg (Vahidian et al., 2021)',
  kind: 'local',
  schema: localConfig,
  implementation: LocalOnly,
});
