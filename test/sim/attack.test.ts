// A sign-flipping minority in a small real simulation (coordinator + 10
// clients over loopback gRPC): 20% of the clients upload their delta times -4.
// Under the intersection mean the attack stops learning; under the trimmed
// mean the model each member receives is as accurate as in a clean run.
import { describe, expect, it } from 'vitest';
import { loadDataset } from '../../sim/datasets.js';
import { PRESETS, attackers, validateSimConfig, type SimConfig } from '../../sim/presets.js';
import { runSimulation } from '../../sim/run.js';

const clean: SimConfig = validateSimConfig({
  ...PRESETS.quick,
  algorithms: ['fedavg'],
  dataset: 'synthetic',
  clients: 10,
  partition: { kind: 'iid' },
  maxTestPerClient: 100,
  fraction: 1,
  rounds: 6,
  training: { ...PRESETS.quick.training, epochs: 2, lr: 0.05 },
  model: 'mlp',
  workers: 2,
  evalEvery: 100,
  seed: 5,
});
const attack = { kind: 'sign-flip', fraction: 0.2, scale: 4 } as const;

/** Accuracy (in points) of the model the members received in the last round, before their local training. */
async function receivedAccuracy(config: SimConfig): Promise<number> {
  const data = await loadDataset('synthetic', { seed: 5, synthetic: { train: 1000, test: 500 } });
  let last = NaN;
  for await (const round of runSimulation(config, { data })) last = round.receivedAccuracy?.mean ?? NaN;
  return 100 * last;
}

describe('sign-flipping attackers (attack simulation)', () => {
  it('picks round(fraction * clients) attackers, seeded', () => {
    const picked = attackers({ ...clean, attack });
    expect(picked.size).toBe(2);
    expect(attackers({ ...clean, attack })).toEqual(picked);
    expect(attackers(clean).size).toBe(0);
    expect(attackers({ ...clean, attack: { ...attack, fraction: 0.01 } }).size).toBe(1);
  });

  it('20% of them leave received-model accuracy within 2 points of a clean run under the trimmed mean', async () => {
    const baseline = await receivedAccuracy(clean);
    const undefended = await receivedAccuracy({ ...clean, attack });
    const defended = await receivedAccuracy({ ...clean, attack, aggregation: { kind: 'trimmed-mean', trim: 0.2 } });
    console.log(
      `received-model accuracy after ${clean.rounds} rounds: clean ${baseline.toFixed(1)}, ` +
        `20% sign-flip x4 under the mean ${undefended.toFixed(1)}, under the trimmed mean (0.2) ${defended.toFixed(1)}`,
    );
    // The attack is real: the plain mean loses most of what the clean run learned.
    expect(baseline - undefended).toBeGreaterThan(20);
    expect(Math.abs(defended - baseline)).toBeLessThanOrEqual(2);
  }, 180_000);
});
