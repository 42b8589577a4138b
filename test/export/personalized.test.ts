// An export writes the model the client's personalized accuracy is measured on: for
// Ditto its personal model, kept in the algorithm's state, not the global track it
// holds and uploads. A state whose algorithm part does not fit is refused, naming the file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { accuracyOf, loadClientModel } from '../../client/export/export.js';
import { createModel } from '../../client/model.js';
import { createParticipant } from '../../client/participant.js';
import { saveState, StateFileError } from '../../client/state.js';
import { OneClientServer, tinyData } from '../client/participant-helpers.js';
import { saveParticipant } from './fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'subfed-export-personalized-'));

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Two rounds of `algorithm` on a tiny task, saved as `subfed client` saves it. */
async function trainedClient(algorithm: 'ditto' | 'fedavg', name: string) {
  const model = createModel('lenet5-bn-mnist', 4);
  const { train, test } = tinyData(4, 80, 40, 4, 0.5);
  const participant = createParticipant({ model, algorithm, config: { epochs: 2, lr: 0.1 }, train, test, seed: 4 });
  const server = new OneClientServer(model.getWeights());
  for (let r = 0; r < 2; r++) await server.round_(participant);
  const personalized = await participant.evaluate('test');
  const stateDir = join(dir, name);
  const state = await saveParticipant(stateDir, participant, train);
  model.dispose();
  return { stateDir, state, test, personalized, held: state.weights };
}

describe('the exported model is the personalized one', () => {
  it('ditto: its personal model (the accuracy the client reports), not the global track it uploads', async () => {
    const c = await trainedClient('ditto', 'ditto');
    const { portable } = await loadClientModel(c.stateDir, undefined);
    expect(accuracyOf(portable, c.test)).toBe(c.personalized.accuracy);
    // The personal model differs from the held global track after two rounds of training.
    const differs = [...portable.weights].some(([key, v]) => v.some((x, i) => x !== c.held.get(key)![i]));
    expect(differs).toBe(true);
  });

  it('fedavg: the model it holds', async () => {
    const c = await trainedClient('fedavg', 'fedavg');
    const { portable } = await loadClientModel(c.stateDir, undefined);
    for (const [key, v] of portable.weights) expect(v).toEqual(c.held.get(key));
    expect(accuracyOf(portable, c.test)).toBe(c.personalized.accuracy);
  });

  it('a ditto state whose personal model is cut short is refused, naming the file and the algorithm', async () => {
    const c = await trainedClient('ditto', 'ditto-bad');
    const algorithmState = new Map([...c.state.algorithmState].filter(([key]) => !key.endsWith('fc2.bias')));
    const stateDir = join(dir, 'ditto-cut');
    await saveState(stateDir, { ...c.state, algorithmState });
    const error = await loadClientModel(stateDir, undefined).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StateFileError);
    expect(String((error as Error).message)).toMatch(/client-state\.bin.*ditto state that does not fit/s);
  });

  it('a state written by an algorithm subfed does not know is refused', async () => {
    const c = await trainedClient('fedavg', 'fedavg-unknown');
    const stateDir = join(dir, 'unknown');
    await saveState(stateDir, { ...c.state, algorithm: 'fedbogus' });
    const error = await loadClientModel(stateDir, undefined).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StateFileError);
    expect(String((error as Error).message)).toMatch(/algorithm 'fedbogus', which subfed does not know/);
  });
});
