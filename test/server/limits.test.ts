// Join limits: the per-peer token bucket (pure, driven by a hand-set clock),
// the peer address it is keyed by, and the coordinator's two refusals.
import { describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION } from '../../proto/rpc.js';
import { parseConfig, type CoordinatorConfigInput } from '../../server/config.js';
import { Coordinator } from '../../server/coordinator.js';
import { PeerRateLimiter, peerAddress } from '../../server/limits.js';
import { CoordinatorMetrics } from '../../server/metrics.js';
import { ENROLL, memoryLogger, refusal, toyModel } from './harness.js';

describe('PeerRateLimiter', () => {
  it('gives a peer `burst` joins at once, then one per 1/perSecond, and says how long to wait', () => {
    const limiter = new PeerRateLimiter({ burst: 3, perSecond: 2 });
    expect([0, 0, 0].map(() => limiter.take('a', 1000))).toEqual([0, 0, 0]);
    expect(limiter.take('a', 1000)).toBe(500);
    expect(limiter.take('a', 1250)).toBe(250); // half a token back
    expect(limiter.take('a', 1500)).toBe(0); // one token back after 500 ms
    expect(limiter.take('a', 1500)).toBe(500);
    // Another peer has a bucket of its own.
    expect(limiter.take('b', 1500)).toBe(0);
    // A long pause refills to `burst`, no further.
    expect([0, 0, 0, 0].map(() => limiter.take('a', 100_000))).toEqual([0, 0, 0, 500]);
    // A clock that goes back refills nothing.
    expect(limiter.take('a', 50_000)).toBe(500);
    expect(limiter.peers).toBe(2);
  });

  it('keys joins by address, whatever the source port', () => {
    expect(peerAddress('127.0.0.1:50123')).toBe('127.0.0.1');
    expect(peerAddress('ipv4:10.1.2.3:7')).toBe('10.1.2.3');
    expect(peerAddress('::1:50123')).toBe('::1');
    expect(peerAddress('[::1]:50123')).toBe('::1');
    expect(peerAddress('ipv6:[fe80::1]:9')).toBe('fe80::1');
    expect(peerAddress('::ffff:127.0.0.1:4000')).toBe('::ffff:127.0.0.1');
    expect(peerAddress('unknown')).toBe('unknown');
  });
});

describe('Coordinator.join limits', () => {
  function coordinator(overrides: Partial<CoordinatorConfigInput>, clock: { now: number }) {
    const config = parseConfig({ rounds: 1, fraction: 1, minClients: 100, enrollmentToken: ENROLL, ...overrides });
    const metrics = new CoordinatorMetrics();
    const coord = new Coordinator(config, toyModel(), { logger: memoryLogger().logger, metrics, now: () => clock.now });
    const join = (peer?: string, token = ENROLL) =>
      coord.join({ protocolVersion: PROTOCOL_VERSION, enrollmentToken: token, clientName: 'x', numExamples: 1 }, peer);
    return { coord, join };
  }

  it('refuses joins from one peer beyond its bucket with RESOURCE_EXHAUSTED join_rate and a retry time; bad tokens count too', () => {
    const clock = { now: 0 };
    const { coord, join } = coordinator({ joins: { perPeer: { burst: 3, perSecond: 0.5 } } }, clock);
    join('10.0.0.1');
    expect(refusal(() => join('10.0.0.1', 'guess')).reason).toBe('bad_enrollment_token');
    join('10.0.0.1');
    const err = refusal(() => join('10.0.0.1'));
    expect({ code: err.code, reason: err.reason, retryAfterMs: err.retryAfterMs }).toEqual({
      code: 'RESOURCE_EXHAUSTED',
      reason: 'join_rate',
      retryAfterMs: 2000,
    });
    expect(err.message).toBe(
      'too many joins from 10.0.0.1: at most 3 at once, then 0.5 per second (joins.perPeer); retry in 2000 ms',
    );
    // Another address, and an in-process caller (no peer), are not held back.
    join('10.0.0.2');
    join();
    clock.now = 2000;
    join('10.0.0.1');
    expect(coord.status().clientsRegistered).toBe(5);
    coord.stop();
  });

  it('refuses a join beyond joins.maxClients with RESOURCE_EXHAUSTED max_clients; a client that left frees its place', () => {
    const clock = { now: 0 };
    const { coord, join } = coordinator({ joins: { maxClients: 2, perPeer: 'off' } }, clock);
    const first = join('10.0.0.1');
    join('10.0.0.1');
    const err = refusal(() => join('10.0.0.1'));
    expect({ code: err.code, reason: err.reason, message: err.message }).toEqual({
      code: 'RESOURCE_EXHAUSTED',
      reason: 'max_clients',
      message: 'the coordinator has 2 clients enrolled, its limit (joins.maxClients)',
    });
    // The token is checked first: a stranger learns nothing about the count.
    expect(refusal(() => join('10.0.0.1', 'guess')).reason).toBe('bad_enrollment_token');
    coord.leave({ protocolVersion: PROTOCOL_VERSION, clientId: first.clientId, clientToken: first.clientToken, reason: '' });
    join('10.0.0.1');
    coord.stop();
  });

  it('reads the join limits with defaults and field-named errors', () => {
    const base = { rounds: 1, fraction: 1, enrollmentToken: 't' };
    expect(parseConfig(base).joins).toEqual({ maxClients: 10_000, perPeer: { burst: 20, perSecond: 1 } });
    expect(parseConfig({ ...base, joins: { perPeer: 'off' } }).joins).toEqual({ maxClients: 10_000, perPeer: 'off' });
    expect(() => parseConfig({ ...base, joins: { maxClients: 0 } })).toThrow(
      'config: joins.maxClients: expected a positive integer, got 0',
    );
    expect(() => parseConfig({ ...base, joins: { perPeer: { burst: 2, perSecond: -1 } } })).toThrow(
      'config: joins.perPeer.perSecond: expected a positive number, got -1',
    );
    expect(() => parseConfig({ ...base, joins: { perPeer: 'on' } })).toThrow(
      'config: joins.perPeer: expected "off" or { "burst": n, "perSecond": n }, got "on"',
    );
    expect(() => parseConfig({ ...base, joins: { max: 3 } })).toThrow('config: joins: unknown field(s) max');
  });
});
