/**
 * Hand-made round reports for the report tests: four clients, members [0, 1],
 * [1, 2], [2, 0] in rounds 1-3 (client 3 is never sampled), evaluations at
 * rounds 2 and 3. Every figure follows a simple rule so tests can state the
 * expected values by hand.
 */
import type { AlgorithmName } from '../../sim/presets.js';
import { accuracyStats, evaluationOf, type RoundReport } from '../../sim/report.js';
import type { MemberResult } from '../../sim/worker-protocol.js';

export const MEMBERS = [
  [0, 1],
  [1, 2],
  [2, 0],
] as const;
export const CLIENTS = [0, 1, 2, 3];

/** Client c's personalized test accuracy at an evaluation of round r; client 3 (never sampled) is near chance. */
export const testAccuracy = (c: number, r: number): number => [0.8, 0.7, 0.9, 0.1][c] + r / 100;
/** Its train accuracy: pruned algorithms overfit by 2 points, the others by 6 (client 3 by none). */
export const trainAccuracy = (algorithm: AlgorithmName, c: number, r: number): number =>
  c === 3 ? testAccuracy(c, r) : testAccuracy(c, r) + (algorithm === 'subfedavg-hy' ? 0.02 : 0.06);
/** Received accuracy of member k of round r. */
export const receivedAccuracy = (r: number, k: number): number => 0.3 + r / 10 + k / 100;

export function member(algorithm: AlgorithmName, r: number, c: number, k: number): MemberResult {
  const hy = algorithm === 'subfedavg-hy';
  const received = algorithm === 'local' ? null : receivedAccuracy(r, k);
  return {
    client: c,
    received: received === null ? null : { accuracy: received, loss: 2 - received },
    personalized: { accuracy: 0.5 + r / 10 + c / 100, loss: 1 + c / 10 },
    sparsity: hy ? 0.1 * r + 0.01 * c : 0,
    receivedSparsity: hy ? 0.1 * (r - 1) : 0,
    channelsKept: hy ? [10 - r, 20 - 2 * r - c] : null,
  };
}

export function fixtureRound(algorithm: AlgorithmName, r: number): RoundReport {
  const fed = algorithm === 'fedavg';
  const local = algorithm === 'local';
  const members = MEMBERS[r - 1].map((c, k) => member(algorithm, r, c, k));
  const sampled = new Set(MEMBERS.slice(0, r).flat());
  const evaluated = r >= 2;
  const received = members.flatMap((m) => (m.received ? [m.received.accuracy] : []));
  const withChannels = members.flatMap((m) => (m.channelsKept ? [m.channelsKept] : []));
  return {
    algorithm,
    round: r,
    members,
    membersAccuracy: accuracyStats(members.map((m) => m.personalized.accuracy)),
    receivedAccuracy: received.length ? accuracyStats(received) : null,
    evaluation: evaluated
      ? evaluationOf(
          CLIENTS.map((c) => ({
            client: c,
            test: { accuracy: testAccuracy(c, r), loss: 0.5 + c / 10 },
            train: { accuracy: trainAccuracy(algorithm, c, r), loss: 0.4 + c / 10 },
          })),
          fed ? CLIENTS.map((c) => ({ client: c, test: { accuracy: 0.2 + r / 100, loss: 2 } })) : null,
          sampled,
        )
      : null,
    bytes: local ? { up: 0, down: 0, denseUp: 0, denseDown: 0 } : { up: 1000 * r, down: 2000, denseUp: 4000, denseDown: 4000 },
    meanSparsity: members.reduce((s, m) => s + m.sparsity, 0) / members.length,
    receivedSparsity: members.reduce((s, m) => s + m.receivedSparsity, 0) / members.length,
    channelsKept: withChannels.length
      ? withChannels[0].map((_, i) => withChannels.reduce((s, k) => s + k[i], 0) / withChannels.length)
      : null,
    wallSeconds: 0.5,
  };
}

export const FIXTURE_ALGORITHMS: AlgorithmName[] = ['subfedavg-hy', 'fedavg', 'local'];
export const fixtureRounds = (): RoundReport[] => FIXTURE_ALGORITHMS.flatMap((a) => [1, 2, 3].map((r) => fixtureRound(a, r)));
