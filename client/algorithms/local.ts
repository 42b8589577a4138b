/**
 * Local-only training: each client trains on its own data and never
 * communicates; the lower bound on what collaboration buys.
 */
import { z } from 'zod';
import { trainingDefaults } from './config.js';
import { DenseAlgorithm, defineAlgorithm } from './define.js';

export const localConfig = z.strictObject({ ...trainingDefaults });
export type LocalConfig = z.infer<typeof localConfig>;

export class LocalOnly extends DenseAlgorithm<LocalConfig> {
  override prepare(): void {
    throw new Error('the local algorithm never receives a model');
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
