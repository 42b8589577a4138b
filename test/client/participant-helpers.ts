/** Test helpers: a one-client in-memory "coordinator" around a Participant, and tiny datasets. */
import { syntheticDataset } from '../../client/data/synthetic.js';
import type { ImageDataset } from '../../client/data/dataset.js';
import type {
  FederatedParticipant,
  FederatedRoundResult,
  LocalUpdate,
  ReceivedTask,
  SharedUpdateTensor,
  UpdateTensor,
} from '../../client/participant.js';
import type { MaskMap, TensorMap } from '../../client/prune.js';
import { Mask } from '../../proto/mask.js';

/** A 28x28x1 two-class task (a personalized client holds few labels). */
export function tinyData(
  seed: number,
  trainCount = 120,
  testCount = 60,
  classes = 2,
  noise = 0.25,
): { train: ImageDataset; test: ImageDataset } {
  const common = { classes, height: 28, width: 28, channels: 1, seed, noise };
  return {
    train: syntheticDataset({ ...common, count: trainCount, sampleStream: 0, name: 'synthetic/train' }),
    test: syntheticDataset({ ...common, count: testCount, sampleStream: 1, name: 'synthetic/test' }),
  };
}

/**
 * The coordinator side of one client, in memory: it holds the global model and
 * the client's mask (as last pushed), sends dense on first contact and sparse
 * at the client's kept positions after, and folds the delta in (one member: the
 * intersection average is the delta itself).
 */
export class OneClientServer {
  global: TensorMap;
  clientMasks: MaskMap | undefined;
  maskVersion = 0;
  round = 0;

  constructor(initial: TensorMap) {
    this.global = new Map([...initial].map(([n, w]) => [n, Float32Array.from(w)]));
  }

  task(config?: unknown): ReceivedTask {
    this.round += 1;
    const masks = this.clientMasks;
    const common = { round: this.round, maskVersion: this.maskVersion, config };
    if (masks === undefined) {
      return { kind: 'dense', ...common, tensors: new Map([...this.global].map(([name, w]) => [name, Float32Array.from(w)])) };
    }
    const tensors = new Map(
      [...this.global].map(([name, w]) => {
        const mask = masks.get(name)!;
        return [name, { mask, kept: mask.gather(w) }];
      }),
    );
    return { kind: 'sparse', ...common, tensors };
  }

  apply(update: LocalUpdate): void {
    for (const [name, t] of update.tensors) {
      if (t.kind === 'personal') continue; // shares nothing
      const w = this.global.get(name)!;
      const delta = t.mask.scatter(t.kept);
      for (let i = 0; i < w.length; i++) if (t.mask.has(i)) w[i] += delta[i];
    }
    // A personal tensor is held as a mask keeping nothing, as the coordinator does.
    const masks = (): MaskMap =>
      new Map([...update.tensors].map(([n, t]) => [n, t.kind === 'personal' ? Mask.none(this.global.get(n)!.length) : t.mask]));
    switch (update.maskChange.kind) {
      case 'changed':
        this.clientMasks = masks();
        this.maskVersion = update.maskChange.version;
        break;
      case 'unchanged':
        this.clientMasks ??= masks();
        break;
    }
  }

  async round_(participant: FederatedParticipant, config?: unknown): Promise<FederatedRoundResult> {
    const result = await participant.localRound(this.task(config));
    this.apply(result.update);
    return result;
  }
}

/** Every masked-out weight is exactly zero. */
export function zerosWhereMasked(weights: TensorMap, masks: MaskMap): boolean {
  for (const [name, m] of masks) {
    const w = weights.get(name)!;
    for (let i = 0; i < m.length; i++) if (!m.has(i) && w[i] !== 0) return false;
  }
  return true;
}

/** An update tensor that must be shared (the algorithms without personal tensors). */
export function shared(t: UpdateTensor | undefined): SharedUpdateTensor {
  if (t === undefined || t.kind !== 'shared') throw new Error(`expected a shared update tensor, got ${t?.kind ?? 'none'}`);
  return t;
}
