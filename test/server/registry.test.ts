// The records the coordinator delegates to, on their own: Registry (identity,
// liveness, history) and Round (reports, traffic), changed only by their methods.
import { describe, expect, it } from 'vitest';
import { Mask } from '../../proto/mask.js';
import { CoordinatorError } from '../../server/errors.js';
import { livenessAfter } from '../../server/liveness.js';
import { Registry } from '../../server/registry.js';
import { Round, type ReportMetrics } from '../../server/rounds.js';
import { refusal } from './harness.js';

const POLICY = { staleAfterMs: 30, goneAfterMs: 300 };

describe('livenessAfter', () => {
  it('is alive below staleAfterMs of silence, stale from it, gone from goneAfterMs; off is always alive', () => {
    expect([0, 29, 30, 299, 300, 1e9].map((ms) => livenessAfter(ms, POLICY))).toEqual([
      'alive',
      'alive',
      'stale',
      'stale',
      'gone',
      'gone',
    ]);
    // A clock that went back is not silence.
    expect(livenessAfter(-5, POLICY)).toBe('alive');
    expect(livenessAfter(1e12, 'off')).toBe('alive');
  });
});

describe('Registry', () => {
  it('enrolls with the enrollment token only, authenticates id and token, and refuses a client that left', () => {
    const reg = new Registry('secret', POLICY, 0);
    expect(refusal(() => reg.enroll('guess', 'x', 1, 0))).toMatchObject({
      code: 'UNAUTHENTICATED',
      reason: 'bad_enrollment_token',
    });
    const { record, token } = reg.enroll('secret', 'x', 5, 0);
    expect(record).toMatchObject({ id: 'c1', seq: 1, name: 'x', numExamples: 5, maskVersion: 0, active: true });
    expect(reg.authenticate('c1', token)).toBe(record);
    expect(refusal(() => reg.authenticate('c1', 'nope')).reason).toBe('wrong_token');
    expect(refusal(() => reg.authenticate('c9', token)).reason).toBe('unknown_client');
    reg.leave('c1');
    const err = refusal(() => reg.authenticate('c1', token));
    expect(err).toBeInstanceOf(CoordinatorError);
    expect(err).toMatchObject({ code: 'UNAUTHENTICATED', reason: 'client_left' });
    expect(reg.countByState(0)).toEqual({ alive: 0, stale: 0, gone: 0, left: 1 });
  });

  it('derives each state from the clock; touch reports the state before the call', () => {
    const reg = new Registry('secret', POLICY, 0);
    for (let i = 0; i < 3; i++) reg.enroll('secret', `n${i}`, 1, 0);
    reg.touch('c2', 100);
    reg.touch('c3', 290);
    expect(reg.countByState(310)).toEqual({ alive: 1, stale: 1, gone: 1, left: 0 });
    expect(reg.sampleable(310)).toEqual(['c3']);
    expect([reg.awaits('c1', 310), reg.awaits('c2', 310), reg.awaits('c3', 310)]).toEqual([false, true, true]);
    expect(reg.goneAt('c2')).toBe(400);
    expect(reg.touch('c1', 310)).toBe('gone');
    expect(reg.touch('c1', 311)).toBe('alive');
    expect(reg.sampleable(311)).toEqual(['c1', 'c3']);
  });

  it('counts a restored client as seen when the registry was created', () => {
    const first = new Registry('secret', POLICY, 0);
    const { record } = first.enroll('secret', 'x', 1, 0);
    const reg = new Registry('secret', POLICY, 10_000);
    reg.restore(record);
    expect(reg.views(10_029)).toMatchObject([{ id: 'c1', state: 'alive', lastSeenAt: null }]);
    expect(reg.views(10_030)).toMatchObject([{ id: 'c1', state: 'stale', lastSeenAt: null }]);
    // The next enrolment continues the sequence.
    expect(reg.enroll('secret', 'y', 1, 10_030).record.id).toBe('c2');
  });

  it('adopts masks only through its method, and hands out records it alone can change', () => {
    const reg = new Registry('secret', POLICY, 0);
    reg.enroll('secret', 'x', 1, 0);
    const masks = new Map([['w', Mask.fromBytes([1, 0, 1])]]);
    reg.adoptMasks('c1', 4, masks);
    expect(reg.get('c1')).toMatchObject({ maskVersion: 4, masks });
    expect(() => reg.adoptMasks('c9', 1, masks)).toThrow(/unknown client "c9"/);
  });

  it('builds each history from committed rounds in any order; the latest report wins by round number', () => {
    const metrics = (sparsity: number): ReportMetrics => ({
      numExamples: 1,
      loss: 0,
      localAccuracy: sparsity / 2,
      sparsity,
      receivedAccuracy: 0,
    });
    const rounds = [
      {
        round: 1,
        reporters: ['c1'],
        metrics: { c1: metrics(0.1) },
        traffic: { c1: { up: 10, down: 20 }, c2: { up: 0, down: 5 } },
      },
      { round: 2, reporters: ['c1', 'c2'], metrics: { c1: metrics(0.2), c2: metrics(0.5) }, traffic: { c1: { up: 1, down: 2 } } },
    ];
    const history = (order: typeof rounds) => {
      const reg = new Registry('secret', 'off', 0);
      reg.enroll('secret', 'a', 1, 0);
      reg.enroll('secret', 'b', 1, 0);
      for (const r of order) reg.recordCommitted(r);
      return reg.views(0).map((v) => v.history);
    };
    const expected = [
      { roundsTaken: 2, lastRound: 2, sparsity: 0.2, localAccuracy: 0.1, bytesUp: 11, bytesDown: 22 },
      { roundsTaken: 1, lastRound: 2, sparsity: 0.5, localAccuracy: 0.25, bytesUp: 0, bytesDown: 5 },
    ];
    expect(history(rounds)).toEqual(expected);
    expect(history([...rounds].reverse())).toEqual(expected);
  });
});

describe('Round', () => {
  const metrics: ReportMetrics = { numExamples: 1, loss: 0, localAccuracy: 0, sparsity: 0, receivedAccuracy: 0 };
  const receipt = { ack: { accepted: true, message: 'ok', maskVersion: 0 }, digest: 'd' } as const;

  it('accepts one report per member and keeps the masks it adopts', () => {
    const r = new Round(1, 0, ['c1', 'c2', 'c3'], 0, 1000);
    r.accept('c1', receipt, metrics, { kind: 'changed', version: 2, masks: new Map() });
    r.accept('c2', receipt, metrics, { kind: 'unchanged' });
    expect(() => r.accept('c1', receipt, metrics, { kind: 'unchanged' })).toThrow(/c1 reported already/);
    expect(() => r.accept('c9', receipt, metrics, { kind: 'unchanged' })).toThrow(/c9 is not a member/);
    expect([r.reported, r.hasReported('c1'), r.hasReported('c3'), r.receiptOf('c2')]).toEqual([2, true, false, receipt]);
    expect(r.adoptedMasks).toEqual([{ clientId: 'c1', version: 2, masks: new Map() }]);
    expect(r.awaited(() => true)).toEqual(['c3']);
    expect(r.awaited((id) => id !== 'c3')).toEqual([]);
  });

  it('adds up wire traffic per member and direction, and dense-equivalent bytes apart', () => {
    const r = new Round(1, 0, ['c1', 'c2'], 0, 1000);
    r.addTraffic('c1', 'up', 10);
    r.addTraffic('c1', 'down', 3);
    r.addTraffic('c2', 'up', 5);
    r.countDense('up', 100);
    r.countDense('down', 100);
    r.countDense('down', 100);
    expect([r.bytesUp, r.bytesDown, r.denseBytesUp, r.denseBytesDown]).toEqual([15, 3, 100, 200]);
    expect(Object.fromEntries(r.traffic)).toEqual({ c1: { up: 10, down: 3 }, c2: { up: 5, down: 0 } });
  });
});
