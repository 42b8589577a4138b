// The bad-input suite, over real loopback gRPC. Each case sends one bad
// request, asserts the exact gRPC code and a message naming the problem, then
// lets the round finish with the good updates: the global model must be
// bit-identical to a run that never saw the bad request.
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodePersonalTensor, encodeSparseTensor, encodeValues } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import {
  MaskEncoding,
  PROTOCOL_VERSION,
  ValueEncoding,
  createCoordinatorDefinition,
  splitTensor,
  type SparseTensor,
} from '../../proto/rpc.js';
import type { CoordinatorConfigInput } from '../../server/config.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import { ENROLL, ScriptedClient, expectCallError, memoryLogger, toyModel, withBias, type CallError } from './harness.js';

const def = createCoordinatorDefinition();
const MAX_MESSAGE = 64 * 1024;

interface Scenario {
  server: CoordinatorHandle;
  clients: ScriptedClient[];
  members: ScriptedClient[];
  outsider: ScriptedClient;
  log: ReturnType<typeof memoryLogger>;
}

let open: Scenario | undefined;

/** Three clients, two sampled members in round 1 (fraction 0.67), norm bound 100, 64 KiB messages; a case may add config. */
async function scenario(config: Partial<CoordinatorConfigInput> = {}): Promise<Scenario> {
  const log = memoryLogger();
  const server = await startCoordinator(
    {
      ...config,
      rounds: 1,
      fraction: 0.67,
      minClients: 3,
      enrollmentToken: ENROLL,
      updateNormBound: 100,
      grpc: { maxMessageBytes: MAX_MESSAGE },
      http: { enabled: false },
      seed: 11,
    },
    toyModel(),
    { logger: log.logger },
  );
  const clients = [0, 1, 2].map(() => new ScriptedClient(server.grpcAddress));
  for (const c of clients) await c.join();
  const memberIds = server.coordinator.members();
  const members = clients.filter((c) => memberIds.includes(c.id));
  const outsider = clients.find((c) => !memberIds.includes(c.id)) as ScriptedClient;
  open = { server, clients, members, outsider, log };
  return open;
}

const good = [
  { 'dense/kernel': [0.5, -1, 2, 0.25, 0, 3], 'dense/bias': [1, 1, 1] },
  { 'dense/kernel': [1.5, 1, -2, 0.75, 4, -3], 'dense/bias': [0, 2, -1] },
];

/** Pulls and pushes the good updates of both members, then returns the global model's bytes. */
async function finish(s: Scenario): Promise<Buffer[]> {
  for (const [i, m] of s.members.entries()) {
    await m.pull();
    const ack = await m.push(1, m.encode(good[i]), { numExamples: 5 + i });
    expect(ack.accepted).toBe(true);
  }
  await s.server.waitForRound(1);
  return [...s.server.coordinator.globalModel().values()].map((t) => Buffer.from(t.buffer));
}

/** The kernel tensor: `values` at the kept positions of `mask` (default: all six kept). */
function kernel(values: number[], mask?: number[]): SparseTensor {
  const m = mask === undefined ? Mask.full(values.length) : Mask.fromBytes(mask);
  return encodeSparseTensor('dense/kernel', { mask: m, kept: Float32Array.from(values) }, [2, 3], { values: 'f32' });
}

/** A PERSONAL mask part with `data` in it (a well-formed one has none). */
const personalMask = (data: number[]) => ({ encoding: MaskEncoding.PERSONAL, data: Uint8Array.from(data) });

let clean: Buffer[];

beforeAll(async () => {
  const s = await scenario();
  clean = await finish(s);
  await close();
});

async function close(): Promise<void> {
  if (open === undefined) return;
  for (const c of open.clients) c.close();
  await open.server.stop();
  open = undefined;
}

afterEach(close);

interface BadCase {
  name: string;
  /** Added to the scenario's config. */
  config?: Partial<CoordinatorConfigInput>;
  send: (s: Scenario) => Promise<unknown>;
  code: grpc.status;
  message: RegExp;
  reason: string;
}

const member = (s: Scenario) => s.members[0];

/** Another client of the scenario (closed with it), not joined yet. */
function newcomer(s: Scenario): ScriptedClient {
  const c = new ScriptedClient(s.server.grpcAddress);
  s.clients.push(c);
  return c;
}

const cases: BadCase[] = [
  {
    name: 'malformed protobuf bytes (unary)',
    send: (s) => member(s).rawUnary(def.join.path, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])),
    code: grpc.status.INVALID_ARGUMENT,
    message: /malformed JoinRequest/,
    reason: 'malformed',
  },
  {
    name: 'malformed protobuf bytes inside an update stream',
    send: (s) =>
      member(s).pushChunks([{ kind: 'header', header: member(s).header(1, {}, 1) }], [Buffer.from([0x12, 0x09, 0x0a])]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /malformed UpdateChunk/,
    reason: 'malformed',
  },
  {
    name: 'unknown tensor name',
    send: (s) =>
      member(s).push(1, [
        encodeSparseTensor('dense/nope', { mask: Mask.full(1), kept: Float32Array.from([1]) }, [1], { values: 'f32' }),
      ]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /unknown tensor "dense\/nope"/,
    reason: 'unknown_tensor',
  },
  {
    name: 'wrong shape (values for a [4, 5] tensor under a [2, 3] name)',
    send: (s) =>
      member(s).push(1, [
        encodeSparseTensor('dense/kernel', { mask: Mask.full(20), kept: new Float32Array(20).fill(0.1) }, [4, 5], {
          values: 'f32',
        }),
      ]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor "dense\/kernel" \(shape \[2, 3\]\): F32 values: 80 bytes hold 20 values, the mask keeps 6/,
    reason: 'bad_values',
  },
  {
    name: 'mask length not matching the tensor',
    send: (s) =>
      member(s).push(1, [
        {
          name: 'dense/kernel',
          mask: { encoding: MaskEncoding.BITMAP, data: Uint8Array.from([0xff, 0x03]) },
          values: encodeValues(new Float32Array(10), 'f32'),
        },
      ]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor "dense\/kernel" \(shape \[2, 3\]\): BITMAP mask: bitmap has 2 bytes, 6 elements need 1/,
    reason: 'bad_mask',
  },
  {
    name: 'mask popcount not matching the value count',
    send: (s) =>
      member(s).push(1, [
        {
          name: 'dense/kernel',
          mask: { encoding: MaskEncoding.BITMAP, data: Uint8Array.from([0b000111]) },
          values: encodeValues(new Float32Array(4), 'f32'),
        },
      ]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /16 bytes hold 4 values, the mask keeps 3/,
    reason: 'bad_values',
  },
  {
    name: 'NaN value',
    send: (s) => member(s).push(1, [kernel([0, 0, Number.NaN, 0, 0, 0])]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor "dense\/kernel" has a non-finite value \(NaN\) at kept entry 2/,
    reason: 'non_finite',
  },
  {
    name: 'Infinity value',
    send: (s) => member(s).push(1, [kernel([0, 0, 0, 0, 0, Infinity])]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /non-finite value \(Infinity\) at kept entry 5/,
    reason: 'non_finite',
  },
  {
    name: 'L2 norm over the bound',
    send: (s) => member(s).push(1, withBias(kernel([60, 60, 60, 0, 0, 0]))),
    code: grpc.status.INVALID_ARGUMENT,
    message: /update L2 norm 103\.923 exceeds the bound 100/,
    reason: 'norm_bound',
  },
  {
    name: 'more channels_kept entries than the model has tensors',
    send: (s) =>
      member(s).push(1, [kernel([1, 1, 1, 1, 1, 1])], {
        metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.4, channelsKept: [1, 2, 3] },
      }),
    code: grpc.status.INVALID_ARGUMENT,
    message: /metrics\.channels_kept has 3 entries; the model has 2 tensors/,
    reason: 'metrics',
  },
  {
    name: 'oversized message',
    send: (s) =>
      member(s).pushChunks([
        { kind: 'header', header: member(s).header(1, {}, 1) },
        { kind: 'piece', piece: { name: 'dense/kernel', index: 0, total: 1, data: new Uint8Array(MAX_MESSAGE + 1024) } },
      ]),
    code: grpc.status.RESOURCE_EXHAUSTED,
    message: /UpdateChunk: message of \d+ bytes is larger than the limit of 65536/,
    reason: 'too_large',
  },
  {
    name: 'message beyond the transport hard cap (twice the limit)',
    send: (s) =>
      member(s).pushChunks([
        { kind: 'header', header: member(s).header(1, {}, 1) },
        { kind: 'piece', piece: { name: 'dense/kernel', index: 0, total: 1, data: new Uint8Array(3 * MAX_MESSAGE) } },
      ]),
    code: grpc.status.RESOURCE_EXHAUSTED,
    message: /larger than max/,
    reason: 'stream_closed',
  },
  {
    name: 'tensor larger than the model allows (many small pieces)',
    send: (s) =>
      member(s).pushChunks([
        { kind: 'header', header: member(s).header(1, {}, 1) },
        ...Array.from({ length: 40 }, (_, index) => ({
          kind: 'piece' as const,
          piece: { name: 'dense/kernel', index, total: 40, data: new Uint8Array(1000) },
        })),
      ]),
    code: grpc.status.RESOURCE_EXHAUSTED,
    message: /tensor piece "dense\/kernel": tensor exceeds \d+ bytes/,
    reason: 'too_large',
  },
  {
    name: 'unknown client',
    send: (s) => member(s).push(1, [kernel([0, 0, 0, 0, 0, 0])], { clientId: 'c999' }),
    code: grpc.status.UNAUTHENTICATED,
    message: /unknown client "c999"/,
    reason: 'unknown_client',
  },
  {
    name: 'missing token',
    send: (s) => member(s).push(1, [kernel([0, 0, 0, 0, 0, 0])], { clientToken: '' }),
    code: grpc.status.UNAUTHENTICATED,
    message: /client_token is missing/,
    reason: 'missing_token',
  },
  {
    name: 'wrong token',
    send: (s) => member(s).push(1, [kernel([0, 0, 0, 0, 0, 0])], { clientToken: 'not-the-token' }),
    code: grpc.status.UNAUTHENTICATED,
    message: /wrong client_token for client "c\d+"/,
    reason: 'wrong_token',
  },
  {
    name: 'wrong token on pull',
    send: (s) => member(s).pull({ clientToken: 'nope' }),
    code: grpc.status.UNAUTHENTICATED,
    message: /wrong client_token/,
    reason: 'wrong_token',
  },
  {
    name: 'wrong enrollment token',
    send: (s) => member(s).join('guess'),
    code: grpc.status.UNAUTHENTICATED,
    message: /enrollment token is not valid/,
    reason: 'bad_enrollment_token',
  },
  {
    name: 'joins from one address beyond its rate',
    config: { joins: { perPeer: { burst: 4, perSecond: 0.001 } } },
    send: async (s) => {
      await newcomer(s).join(); // the fourth join of this address
      return newcomer(s).join();
    },
    code: grpc.status.RESOURCE_EXHAUSTED,
    message: /too many joins from 127\.0\.0\.1: at most 4 at once, then 0\.001 per second \(joins\.perPeer\); retry in \d+ ms/,
    reason: 'join_rate',
  },
  {
    name: 'a join beyond the maximum number of clients',
    config: { joins: { maxClients: 3 } },
    send: (s) => newcomer(s).join(),
    code: grpc.status.RESOURCE_EXHAUSTED,
    message: /the coordinator has 3 clients enrolled, its limit \(joins\.maxClients\)/,
    reason: 'max_clients',
  },
  {
    name: 'a push for another client id (own token)',
    send: (s) => s.outsider.push(1, s.outsider.encode(good[0]), { clientId: member(s).id }),
    code: grpc.status.UNAUTHENTICATED,
    message: /wrong client_token for client "c\d+"/,
    reason: 'wrong_token',
  },
  {
    name: "a token replayed after its client's Leave",
    send: async (s) => {
      const token = s.outsider.token;
      await s.outsider.unary(def.leave, { ...s.outsider.credentials(), reason: 'done' });
      return s.outsider.unary(def.heartbeat, { ...s.outsider.credentials(), clientToken: token });
    },
    code: grpc.status.UNAUTHENTICATED,
    message: /client "c\d+" has left/,
    reason: 'client_left',
  },
  {
    name: 'a join without the enrollment token',
    send: (s) => newcomer(s).join(''),
    code: grpc.status.UNAUTHENTICATED,
    message: /enrollment token is not valid/,
    reason: 'bad_enrollment_token',
  },
  {
    name: 'wrong protocol version',
    send: (s) => member(s).push(1, [kernel([0, 0, 0, 0, 0, 0])], { protocolVersion: PROTOCOL_VERSION + 1 }),
    code: grpc.status.FAILED_PRECONDITION,
    message: new RegExp(`protocol_version ${PROTOCOL_VERSION + 1} is not supported`),
    reason: 'protocol_version',
  },
  {
    name: 'upload for a round the client is not a member of',
    send: (s) => s.outsider.push(1, s.outsider.encode(good[0])),
    code: grpc.status.FAILED_PRECONDITION,
    message: /client c\d+ is not a member of round 1/,
    reason: 'not_member',
  },
  {
    name: 'upload for a round that is not open',
    send: (s) => member(s).push(2, [kernel([0, 0, 0, 0, 0, 0])]),
    code: grpc.status.FAILED_PRECONDITION,
    message: /round 2 is not open \(round 1 is open\)/,
    reason: 'round_not_open',
  },
  {
    name: 'the same tensor twice',
    send: (s) => {
      const t = kernel([0, 0, 0, 0, 0, 0]);
      return member(s).pushChunks([
        { kind: 'header', header: member(s).header(1, {}, 2) },
        ...splitTensor(t).map((piece) => ({ kind: 'piece' as const, piece })),
        ...splitTensor(t).map((piece) => ({ kind: 'piece' as const, piece })),
      ]);
    },
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor sent twice/,
    reason: 'bad_stream',
  },
  {
    name: 'a new mask while mask_changed is false',
    send: (s) => member(s).push(1, [kernel([1, 1], [1, 1, 0, 0, 0, 0])]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor "dense\/kernel" carries a new mask but mask_changed is false/,
    reason: 'mask_changed',
  },
  {
    name: 'header tensor count not matching the stream',
    send: (s) =>
      member(s).pushChunks([
        { kind: 'header', header: member(s).header(1, {}, 3) },
        ...splitTensor(kernel([0, 0, 0, 0, 0, 0])).map((piece) => ({ kind: 'piece' as const, piece })),
      ]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /header announces 3 tensors, the stream carried 1/,
    reason: 'tensor_count',
  },
  {
    name: 'NaN in the update metrics',
    send: (s) =>
      member(s).push(1, member(s).encode({}), {
        metrics: { loss: Number.NaN, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.4, channelsKept: [] },
      }),
    code: grpc.status.INVALID_ARGUMENT,
    message: /metrics\.loss is NaN; expected a finite number >= 0/,
    reason: 'metrics',
  },
  {
    name: 'Infinity in the update metrics',
    send: (s) =>
      member(s).push(1, member(s).encode({}), {
        metrics: { loss: 1, localAccuracy: Infinity, sparsity: 0, receivedAccuracy: 0.4, channelsKept: [] },
      }),
    code: grpc.status.INVALID_ARGUMENT,
    message: /metrics\.local_accuracy is Infinity; expected a fraction in \[0, 1\]/,
    reason: 'metrics',
  },
  {
    name: 'an update with no tensors',
    send: (s) => member(s).push(1, []),
    code: grpc.status.INVALID_ARGUMENT,
    message: /the update lacks 2 of the model's 2 tensors/,
    reason: 'missing_tensor',
  },
  {
    name: 'a mask that keeps no position',
    send: (s) => member(s).push(1, withBias(kernel([], [0, 0, 0, 0, 0, 0])), { maskChanged: true, newMaskVersion: 1 }),
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor "dense\/kernel" keeps no position/,
    reason: 'empty_mask',
  },
  {
    name: 'every tensor declared personal (the update shares nothing)',
    send: (s) =>
      member(s).push(1, [encodePersonalTensor('dense/kernel', 'f32'), encodePersonalTensor('dense/bias', 'f32')], {
        maskChanged: true,
        newMaskVersion: 1,
      }),
    code: grpc.status.INVALID_ARGUMENT,
    message: /every one of the model's 2 tensors is personal: the update shares nothing/,
    reason: 'all_personal',
  },
  {
    name: 'a PERSONAL mask that carries bytes',
    send: (s) =>
      member(s).push(1, withBias({ ...encodePersonalTensor('dense/kernel', 'f32'), mask: personalMask([0]) }), {
        maskChanged: true,
        newMaskVersion: 1,
      }),
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor "dense\/kernel" \(shape \[2, 3\]\): mask encoding PERSONAL carries 1 bytes, expected none/,
    reason: 'bad_mask',
  },
  {
    name: 'a personal tensor that carries values',
    send: (s) =>
      member(s).push(
        1,
        withBias({ ...encodePersonalTensor('dense/kernel', 'f32'), values: encodeValues(Float32Array.from([1]), 'f32') }),
        {
          maskChanged: true,
          newMaskVersion: 1,
        },
      ),
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor "dense\/kernel" \(shape \[2, 3\]\): F32 values: 4 bytes hold 1 values, the mask keeps 0/,
    reason: 'bad_values',
  },
  {
    name: 'a tensor newly declared personal without mask_changed',
    send: (s) => member(s).push(1, withBias(encodePersonalTensor('dense/kernel', 'f32'))),
    code: grpc.status.INVALID_ARGUMENT,
    message: /tensor "dense\/kernel" carries a new mask but mask_changed is false/,
    reason: 'mask_changed',
  },
  {
    name: 'a retry with other content while the round is open',
    send: async (s) => {
      await member(s).push(1, member(s).encode(good[0]), { numExamples: 5 });
      return member(s).push(1, member(s).encode(good[1]), { numExamples: 5 });
    },
    code: grpc.status.FAILED_PRECONDITION,
    message: /already reported an update for round 1, and this one differs from it/,
    reason: 'retry_mismatch',
  },
  {
    name: 'a retry with other content after the round committed',
    send: async (s) => {
      for (const [i, m] of s.members.entries()) await m.push(1, m.encode(good[i]), { numExamples: 5 + i });
      await s.server.waitForRound(1);
      return member(s).push(1, member(s).encode(good[0]), { numExamples: 6 });
    },
    code: grpc.status.FAILED_PRECONDITION,
    message: /already reported an update for round 1, and this one differs from it/,
    reason: 'retry_mismatch',
  },
  {
    name: 'an unknown value encoding',
    send: (s) =>
      member(s).push(1, [
        {
          name: 'dense/kernel',
          mask: { encoding: MaskEncoding.FULL, data: new Uint8Array(0) },
          values: { encoding: 9 as ValueEncoding, data: new Uint8Array(24), scale: 0 },
        },
      ]),
    code: grpc.status.INVALID_ARGUMENT,
    message: /unknown value encoding/,
    reason: 'bad_values',
  },
];

describe('bad input over loopback gRPC', () => {
  it('the clean run commits a model different from the initial one', () => {
    const initial = [...toyModel().initial.values()].map((t) => Buffer.from(t.buffer));
    expect(Buffer.concat(clean).equals(Buffer.concat(initial))).toBe(false);
  });

  for (const c of cases) {
    it(`${c.name} -> ${grpc.status[c.code]}, model unchanged`, async () => {
      const s = await scenario(c.config);
      const err: CallError = await expectCallError(() => c.send(s));
      expect(grpc.status[err.code]).toBe(grpc.status[c.code]);
      expect(err.details).toMatch(c.message);
      const reject = s.log.lines().find((l) => l.event === 'reject');
      expect(reject).toMatchObject({ reason: c.reason });
      expect(reject).toHaveProperty('clientId');
      const after = await finish(s);
      expect(Buffer.concat(after).equals(Buffer.concat(clean))).toBe(true);
      const metrics = await s.server.metrics.registry.getSingleMetricAsString('subfed_rejected_requests_total');
      expect(metrics).toContain(`reason="${c.reason}"`);
    });
  }
});
