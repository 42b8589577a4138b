/**
 * The one translation between the wire and a Participant: a task the
 * coordinator delivered becomes a local round, and the round's result becomes
 * the upload it owes. `subfed client` and the simulator's workers both use it,
 * each with its own retry and logging around the push.
 */
import { scatter } from '../proto/codec.js';
import type { Participant, RoundMetrics } from './participant.js';
import type { OutgoingTensor, TaskResult, UpdateFields } from './remote.js';

/** A pulled task that carries a round (not "wait", not "finished"). */
export type DeliveredTask = Extract<TaskResult, { header: unknown }>;

export interface TrainedRound {
  readonly round: number;
  readonly metrics: RoundMetrics;
  /** Pruned share of the mask held when the task arrived: the download was cut to this mask. */
  readonly receivedSparsity: number;
  /** The arguments of CoordinatorClient.pushUpdate. */
  readonly upload: { readonly fields: UpdateFields; readonly tensors: Map<string, OutgoingTensor> };
}

export async function trainOnTask(participant: Participant, task: DeliveredTask): Promise<TrainedRound> {
  const { header } = task;
  // The masks the coordinator holds for us, when it holds our current version; copied
  // before training changes ours. They let the encoder send UNCHANGED or DIFF masks.
  const heldByServer = header.maskVersion === participant.maskVersion ? new Map(participant.masks) : undefined;
  const receivedSparsity = participant.sparsity;
  const result = await participant.localRound({
    round: header.roundId,
    config: task.config,
    dense: header.dense,
    tensors: task.tensors,
    serverMaskVersion: header.maskVersion,
  });
  const update = result.update;
  if (update === undefined) throw new Error(`${participant.algorithm.name} produced no update for round ${header.roundId}`);
  const tensors = new Map<string, OutgoingTensor>();
  for (const [name, t] of update.tensors) {
    const previousMask = heldByServer?.get(name);
    tensors.set(name, { dense: scatter(t.kept, t.mask), mask: t.mask, ...(previousMask !== undefined ? { previousMask } : {}) });
  }
  const m = result.metrics;
  return {
    round: update.round,
    metrics: m,
    receivedSparsity,
    upload: {
      fields: {
        roundId: update.round,
        numExamples: update.numExamples,
        baseMaskVersion: update.baseMaskVersion,
        maskChanged: update.maskChanged,
        newMaskVersion: update.newMaskVersion ?? 0,
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
