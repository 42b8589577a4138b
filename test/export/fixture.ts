/**
 * A Sub-FedAvg (Hy) client after a few rounds, on disk as `subfed client` leaves it:
 * its state folder (client-state.bin) and its data folder (train/ and test/ as IDX files).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ImageDataset } from '../../client/data/dataset.js';
import { inputEncodingOf } from '../../client/export/portable.js';
import { createModel } from '../../client/model.js';
import { createParticipant, type Participant } from '../../client/participant.js';
import { saveState, type ClientState } from '../../client/state.js';
import { idxImages, idxLabels } from '../fixtures/data-files.js';
import { OneClientServer, tinyData } from '../client/participant-helpers.js';

export interface HyClient {
  readonly stateDir: string;
  readonly dataDir: string;
  readonly train: ImageDataset;
  readonly test: ImageDataset;
  /** Channels kept per BatchNorm layer after the last round. */
  readonly channelsKept: readonly number[];
}

/** Writes a dataset as an IDX pair in `folder`. */
export function writeIdx(folder: string, ds: ImageDataset): void {
  mkdirSync(folder, { recursive: true });
  writeFileSync(
    join(folder, 'images.idx'),
    idxImages(ds.count, ds.height, ds.width, (i) => ds.images[i]),
  );
  writeFileSync(join(folder, 'labels.idx'), idxLabels(ds.labels));
}

/** Saves `participant` in `stateDir` as `subfed client` saves it, and returns the state written. */
export async function saveParticipant(stateDir: string, participant: Participant, train: ImageDataset): Promise<ClientState> {
  const s = participant.exportState();
  const state: ClientState = {
    identity: undefined,
    round: s.round,
    maskVersion: s.maskVersion,
    algorithm: participant.algorithm.name,
    model: participant.model.name,
    algorithmState: s.algorithmState,
    weights: s.weights,
    masks: s.masks,
    personal: s.personal,
    input: inputEncodingOf(train),
  };
  await saveState(stateDir, state);
  return state;
}

/**
 * Three rounds of subfedavg-hy on a 4-class noisy task with a brisk learning rate, which
 * removes channels within two rounds (as test/client/algorithms.test.ts shows), then
 * the state and data written under `dir`.
 */
export async function hyClient(dir: string, rounds = 3): Promise<HyClient> {
  const model = createModel('lenet5-bn-mnist', 3);
  const { train, test } = tinyData(3, 100, 40, 4, 0.5);
  const participant = createParticipant({
    model,
    algorithm: 'subfedavg-hy',
    config: { epochs: 3, lr: 0.1, gateOn: 'test' },
    train,
    test,
    seed: 3,
  });
  const server = new OneClientServer(model.getWeights());
  let channelsKept: number[] = [];
  for (let r = 0; r < rounds; r++) channelsKept = (await server.round_(participant)).metrics.channelsKept ?? [];
  const stateDir = join(dir, 'state');
  await saveParticipant(stateDir, participant, train);
  model.dispose();
  const dataDir = join(dir, 'data');
  writeIdx(join(dataDir, 'train'), train);
  writeIdx(join(dataDir, 'test'), test);
  return { stateDir, dataDir, train, test, channelsKept };
}
