/**
 * The one translation between the wire and a Participant: a task the
 * coordinator delivered becomes a local round, and the round's result becomes
 * the upload it owes. `subfed client` and the simulator's workers both use it,
 * each with its own retry and logging around the push.
 */
import type { FederatedParticipant, ReceivedTask, RoundMetrics } from './participant.js';
import type { OutgoingTensor, UpdateFields } from './remote.js';

export interface TrainedRound {
  readonly round: number;
  readonly metrics: RoundMetrics;
  /** Pruned share of the mask held when the task arrived: the download was cut to this mask. */
  readonly receivedSparsity: number;
  /** The arguments of CoordinatorClient.pushUpdate. */
  readonly upload: { readonly fields: UpdateFields; readonly tensors: ReadonlyMap<string, OutgoingTensor> };
}

export async function trainOnTask(participant: FederatedParticipant, task: ReceivedTask): Promise<TrainedRound> {
  // The masks the coordinator holds for us, when it holds our current version; taken
  // before training replaces ours. They let the encoder send UNCHANGED or DIFF masks.
  const heldByServer = task.maskVersion === participant.maskVersion ? participant.wireMasks : undefined;
  const receivedSparsity = participant.sparsity;
  const { update, metrics: m } = await participant.localRound(task);
  const tensors = new Map<string, OutgoingTensor>();
  for (const [name, t] of update.tensors) {
    if (t.kind === 'personal') {
      tensors.set(name, { kind: 'personal' });
      continue;
    }
    const previousMask = heldByServer?.get(name);
    tensors.set(name, { mask: t.mask, kept: t.kept, ...(previousMask !== undefined ? { previousMask } : {}) });
  }
  return {
    round: update.round,
    metrics: m,
    receivedSparsity,
    upload: {
      fields: {
        roundId: update.round,
        numExamples: update.numExamples,
        baseMaskVersion: update.baseMaskVersion,
        maskChange: update.maskChange,
        metrics: {
          loss: m.loss,
          localAccuracy: m.accuracy,
          sparsity: m.sparsity,
          receivedAccuracy: m.receivedAccuracy,
          channelsKept: m.channelsKept ?? [],
        },
      },
      tensors,
    },
  };
}
