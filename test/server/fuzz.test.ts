// Fuzzing the coordinator's stream handling (server/grpc.ts) with fast-check:
// in-process, thousands of chunk sequences through the PushUpdate and
// PullTask handlers (valid and broken headers, pieces with out-of-range
// indices and huge totals, mangled tensor bytes, malformed messages); then,
// over real loopback gRPC, raw bytes on every method. Each call must end in
// a gRPC status the protocol names (never INTERNAL or UNKNOWN), nothing may
// crash or hang (cases are bounded by numRuns), and the model must be
// bit-identical at the end: no case completes a round.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSparseTensor } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import {
  PROTOCOL_VERSION,
  createCoordinatorDefinition,
  splitTensor,
  type Malformed,
  type TaskChunk,
  type UpdateAck,
  type UpdateChunk,
} from '../../proto/rpc.js';
import { parseConfig } from '../../server/config.js';
import { Coordinator } from '../../server/coordinator.js';
import { createGrpcHandlers } from '../../server/grpc.js';
import { startCoordinator, uploadLimits, type CoordinatorHandle } from '../../server/main.js';
import { CoordinatorMetrics } from '../../server/metrics.js';
import { StreamGuard } from '../../server/streams.js';
import { ENROLL, ScriptedClient, joinClients, memoryLogger, toyModel, type Joined } from './harness.js';

const RUNS = 2000;
/** The codes a refusal may carry; anything else (INTERNAL, UNKNOWN) is a bug. */
const REFUSALS = [
  grpc.status.INVALID_ARGUMENT,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.UNAUTHENTICATED,
  grpc.status.DEADLINE_EXCEEDED,
];

const modelBytes = (coord: Coordinator) => Buffer.concat([...coord.globalModel().values()].map((t) => Buffer.from(t.buffer)));

function kernel(values: number[], mask = [1, 1, 1, 1, 1, 1]) {
  const m = Mask.fromBytes(mask);
  return encodeSparseTensor('dense/kernel', { mask: m, kept: m.gather(Float32Array.from(values)) }, [2, 3], { values: 'f32' });
}
const bias = encodeSparseTensor('dense/bias', { mask: Mask.full(3), kept: new Float32Array(3) }, [3], { values: 'f32' });

describe('server stream handling, in process', () => {
  // Four members of round 1; only the first sends (so no case can complete the round).
  const config = parseConfig({ rounds: 1, fraction: 1, minClients: 4, enrollmentToken: ENROLL, updateNormBound: 100 });
  const coord = new Coordinator(config, toyModel(), { logger: memoryLogger().logger, metrics: new CoordinatorMetrics() });
  const clients: Joined[] = joinClients(coord, 4);
  const before = modelBytes(coord);
  const streams = new StreamGuard({ perClient: 64, total: 64, idleMs: 60_000, maxBufferedBytes: 1 << 20 });
  const handlers = createGrpcHandlers(coord, { limits: uploadLimits(coord.manifest), chunkBytes: 16, streams });
  afterAll(() => coord.stop());

  const sender = clients[0];
  const headerArb = fc.record({
    protocolVersion: fc.oneof(fc.constant(PROTOCOL_VERSION), fc.nat()),
    clientId: fc.oneof(fc.constant(sender.id), fc.constantFrom('', 'c9', clients[1].id)),
    clientToken: fc.oneof(fc.constant(sender.token), fc.string({ maxLength: 4 })),
    roundId: fc.oneof(fc.constant(1), fc.nat()),
    numExamples: fc.oneof(fc.constant(10), fc.nat(), fc.constant(2 ** 32 - 1)),
    baseMaskVersion: fc.oneof(fc.constant(0), fc.nat()),
    maskChanged: fc.boolean(),
    newMaskVersion: fc.nat(),
    metrics: fc.oneof(
      fc.constant(null),
      fc.record({
        loss: fc.double(),
        localAccuracy: fc.double(),
        sparsity: fc.double(),
        receivedAccuracy: fc.double(),
        channelsKept: fc.array(fc.nat(), { maxLength: 4 }),
      }),
    ),
    tensorCount: fc.oneof(fc.constant(2), fc.nat({ max: 5 }), fc.constant(2 ** 32 - 1)),
  });
  /** Pieces of valid tensors (maybe mangled), or made up: names, indices and totals anywhere in range. */
  const validPieces = fc
    .tuple(
      fc.array(fc.double({ min: -10, max: 10, noNaN: true }), { minLength: 6, maxLength: 6 }),
      fc.array(fc.constantFrom(0, 1), { minLength: 6, maxLength: 6 }),
    )
    .map(([values, mask]) =>
      [...splitTensor(kernel(values, mask), 16), ...splitTensor(bias, 16)].map((piece) => ({ kind: 'piece' as const, piece })),
    );
  const madePiece = fc.record({
    name: fc.constantFrom('dense/kernel', 'dense/bias', 'nope', ''),
    index: fc.oneof(fc.nat({ max: 4 }), fc.constant(2 ** 32 - 1)),
    total: fc.oneof(fc.nat({ max: 4 }), fc.constant(2 ** 32 - 1)),
    data: fc.uint8Array({ maxLength: 64 }),
  });
  const malformedChunk: fc.Arbitrary<Malformed> = fc.constantFrom(
    { malformed: true as const, error: 'UpdateChunk: undecodable protobuf (fuzz)' },
    { malformed: true as const, error: 'message of 9999999 bytes is larger than the limit', oversized: 9999999 } as Malformed,
  );
  const chunkArb: fc.Arbitrary<UpdateChunk | Malformed> = fc.oneof(
    { weight: 4, arbitrary: madePiece.map((piece) => ({ kind: 'piece' as const, piece })) },
    { weight: 1, arbitrary: headerArb.map((header) => ({ kind: 'header' as const, header })) },
    { weight: 1, arbitrary: malformedChunk },
  );
  /** A header that passes (new masks, no metrics), so that the accepting path and then retries are fuzzed too. */
  const validHeader = fc.constant({
    protocolVersion: PROTOCOL_VERSION,
    clientId: sender.id,
    clientToken: sender.token,
    roundId: 1,
    numExamples: 10,
    baseMaskVersion: 0,
    maskChanged: true,
    newMaskVersion: 1,
    metrics: null,
    tensorCount: 2,
  });
  const sequenceArb = fc
    .tuple(
      fc.oneof(
        fc.oneof(validHeader, headerArb).map((header) => [{ kind: 'header', header }] as (UpdateChunk | Malformed)[]),
        fc.array(chunkArb, { maxLength: 1 }),
      ),
      fc.oneof(validPieces, fc.array(chunkArb, { maxLength: 12 })),
      fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 3 }),
    )
    .map(([head, tail, flips]) => {
      const chunks = [...head, ...tail];
      // Mangle some piece bytes: truncated varints, lengths that overrun.
      for (const [at, value] of flips) {
        const c = chunks[at % Math.max(chunks.length, 1)] as UpdateChunk | undefined;
        if (c?.kind === 'piece' && c.piece.data.length > 0) {
          const data = Uint8Array.from(c.piece.data);
          data[value % data.length] = value;
          chunks[at % chunks.length] = { kind: 'piece', piece: { ...c.piece, data } };
        }
      }
      return chunks;
    });

  /** Runs one upload through the handler: a fake call that yields `chunks` and records the answer. */
  function upload(
    chunks: (UpdateChunk | Malformed)[],
  ): Promise<{ err: Partial<grpc.StatusObject> | null; ack: UpdateAck | undefined }> {
    return new Promise((resolve) => {
      // An async iterable of the chunks, as grpc-js's readable call is.
      const items = chunks[Symbol.iterator]();
      const call = {
        [Symbol.asyncIterator]: () => ({
          next: () => Promise.resolve(items.next()),
          return: () => Promise.resolve({ done: true as const, value: undefined }),
        }),
      };
      handlers.pushUpdate(call as never, (err, ack) => resolve({ err, ack: ack ?? undefined }));
    });
  }

  it(`PushUpdate: every chunk sequence ends in an ack or a protocol refusal (${RUNS} cases)`, async () => {
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(sequenceArb, async (chunks) => {
        const { err, ack } = await upload(chunks);
        const outcome = err === null ? `ok:${String(ack?.accepted)}` : grpc.status[err.code ?? -1];
        seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
        if (err !== null) expect(REFUSALS).toContain(err.code);
        else expect(ack?.accepted).toBe(true);
      }),
      { numRuns: RUNS },
    );
    console.log(`PushUpdate fuzz outcomes: ${JSON.stringify(Object.fromEntries(seen))}`);
    expect(streams.stats()).toMatchObject({ open: 0, buffered: 0 });
    expect(modelBytes(coord).equals(before)).toBe(true);
  });

  it(`PullTask: every request ends in a task or a protocol refusal (${RUNS} cases)`, async () => {
    const requestArb = fc.oneof(
      fc.record({
        protocolVersion: fc.oneof(fc.constant(PROTOCOL_VERSION), fc.nat()),
        clientId: fc.constantFrom(...clients.map((c) => c.id), '', 'c99'),
        clientToken: fc.oneof(fc.constantFrom(...clients.map((c) => c.token)), fc.string({ maxLength: 3 })),
        maskVersion: fc.oneof(fc.nat({ max: 3 }), fc.constant(2 ** 32 - 1)),
        valueEncoding: fc.integer({ min: -1, max: 6 }),
      }),
      malformedChunk,
    );
    await fc.assert(
      fc.asyncProperty(requestArb, async (request) => {
        const result = await new Promise<{ code: grpc.status | 'ok'; chunks: number }>((resolve) => {
          const call = Object.assign(new EventEmitter(), {
            request,
            cancelled: false,
            written: 0,
            write(_chunk: TaskChunk, cb: () => void) {
              this.written++;
              cb();
              return true;
            },
            end() {
              resolve({ code: 'ok', chunks: this.written });
            },
          });
          call.on('error', (e: Partial<grpc.StatusObject>) =>
            resolve({ code: e.code ?? grpc.status.UNKNOWN, chunks: call.written }),
          );
          handlers.pullTask(call as never);
        });
        if (result.code !== 'ok') expect(REFUSALS).toContain(result.code);
        else expect(result.chunks).toBeGreaterThanOrEqual(1);
      }),
      { numRuns: RUNS },
    );
    expect(streams.stats()).toMatchObject({ open: 0, buffered: 0 });
    expect(modelBytes(coord).equals(before)).toBe(true);
  });
});

describe('raw bytes over loopback gRPC', () => {
  const def = createCoordinatorDefinition();
  let server: CoordinatorHandle;
  let member: ScriptedClient;
  let before: Buffer;

  beforeAll(async () => {
    server = await startCoordinator(
      {
        rounds: 1,
        fraction: 1,
        minClients: 2,
        enrollmentToken: ENROLL,
        http: { enabled: false },
        grpc: { maxMessageBytes: 64 * 1024 },
        joins: { perPeer: 'off' },
      },
      toyModel(),
      { logger: memoryLogger().logger },
    );
    member = new ScriptedClient(server.grpcAddress);
    await member.join();
    await new ScriptedClient(server.grpcAddress).join();
    before = modelBytes(server.coordinator);
  });
  afterAll(async () => {
    member.close();
    await server.stop();
  });

  const bytesArb = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc.constantFrom(
      Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), // a length of 2^32-1
      Uint8Array.from([0x08, ...new Array<number>(11).fill(0xff), 0x01]), // a varint that overflows
      Uint8Array.from([0x12, 0x05, 0x22, 0x03]), // a piece cut short
    ),
  );

  /** The status a call of `path` with raw request messages ends with. */
  function rawCall(kind: 'unary' | 'server' | 'client', path: string, messages: Uint8Array[]): Promise<grpc.status> {
    const id = (b: Buffer) => b;
    return new Promise((resolve) => {
      const done = (err: grpc.ServiceError | null) => resolve(err?.code ?? grpc.status.OK);
      if (kind === 'unary') {
        member.grpc.makeUnaryRequest(path, id, id, Buffer.from(messages[0] ?? []), done);
      } else if (kind === 'server') {
        const call = member.grpc.makeServerStreamRequest(path, id, id, Buffer.from(messages[0] ?? []));
        call.on('data', () => undefined);
        call.on('error', () => undefined);
        call.on('status', (s: grpc.StatusObject) => resolve(s.code));
      } else {
        const call = member.grpc.makeClientStreamRequest(path, id, id, done);
        call.on('error', () => undefined);
        for (const m of messages) call.write(Buffer.from(m));
        call.end();
      }
    });
  }

  it('every method answers random and crafted bytes with a protocol status (300 cases), and the model is unchanged', async () => {
    const header = () => def.pushUpdate.requestSerialize({ kind: 'header', header: member.header(1, {}, 2) });
    const callArb = fc.oneof(
      fc
        .tuple(fc.constantFrom(def.join.path, def.heartbeat.path, def.leave.path), bytesArb)
        .map(([path, b]) => ['unary', path, [b]] as const),
      bytesArb.map((b) => ['server', def.pullTask.path, [b]] as const),
      fc
        .tuple(fc.boolean(), fc.array(bytesArb, { maxLength: 4 }))
        .map(([withHeader, rest]) => ['client', def.pushUpdate.path, withHeader ? [header(), ...rest] : rest] as const),
    );
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(callArb, async ([kind, path, messages]) => {
        const code = await rawCall(kind, path, [...messages]);
        const name = `${path.split('/').pop()}:${grpc.status[code]}`;
        seen.set(name, (seen.get(name) ?? 0) + 1);
        // OK only where random bytes happen to decode to a valid request (e.g. an empty heartbeat is not).
        expect([...REFUSALS, grpc.status.OK]).toContain(code);
      }),
      { numRuns: 300 },
    );
    console.log(`raw gRPC fuzz outcomes: ${JSON.stringify(Object.fromEntries(seen))}`);
    expect(server.streams.stats()).toMatchObject({ open: 0, buffered: 0 });
    expect(modelBytes(server.coordinator).equals(before)).toBe(true);
    // Still serving: the member pulls its task.
    expect((await member.pull()).header.hasTask).toBe(true);
  });
});
