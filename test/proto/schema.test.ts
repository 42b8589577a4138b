import { describe, expect, it } from 'vitest';
import type * as M from '../../proto/messages.js';
import { MaskEncoding, ValueEncoding } from '../../proto/messages.js';
import { createCoordinatorDefinition, attributeTo, isMalformed, wireSize, PROTOCOL_VERSION } from '../../proto/rpc.js';
import { codecs, protoFilePath } from '../../proto/schema.js';

const cred = { protocolVersion: PROTOCOL_VERSION, clientId: 'c-1', clientToken: 'tok' };
const bytes = (...b: number[]) => Buffer.from(b);

// One fully populated sample per message: a field the TS types have but the
// schema lacks is dropped on encode, a schema field missing from the types
// shows up on decode; either way toEqual fails.
const samples: { [K in keyof typeof codecs]: M.TensorSpec | object } = {
  TensorSpec: { name: 'conv1/kernel', shape: [3, 3, 1, 8], prunable: true } satisfies M.TensorSpec,
  SparseTensor: {
    name: 'w',
    mask: { encoding: MaskEncoding.BITMAP, data: bytes(5) },
    values: { encoding: ValueEncoding.INT8, data: bytes(1, 2), scale: 0.5 },
  } satisfies M.SparseTensor,
  TensorPiece: { name: 'w', index: 1, total: 3, data: bytes(9, 9) } satisfies M.TensorPiece,
  JoinRequest: { protocolVersion: 1, enrollmentToken: 'e', clientName: 'n', numExamples: 600 } satisfies M.JoinRequest,
  JoinResponse: {
    protocolVersion: 1,
    clientId: 'c-1',
    clientToken: 't',
    manifest: [{ name: 'b', shape: [8], prunable: false }],
    configJson: '{"epochs":5}',
  } satisfies M.JoinResponse,
  TaskRequest: { ...cred, maskVersion: 4, valueEncoding: ValueEncoding.F16 } satisfies M.TaskRequest,
  TaskChunk: {
    kind: 'header',
    header: {
      protocolVersion: 1,
      hasTask: true,
      retryAfterMs: 10,
      roundId: 2,
      configJson: '{}',
      dense: true,
      maskVersion: 3,
      tensorCount: 4,
      finished: true,
    },
  } satisfies M.TaskChunk,
  UpdateChunk: {
    kind: 'header',
    header: {
      ...cred,
      roundId: 2,
      numExamples: 100,
      baseMaskVersion: 3,
      maskChanged: true,
      newMaskVersion: 4,
      metrics: { loss: 0.25, localAccuracy: 0.5, sparsity: 0.125, receivedAccuracy: 0.75, channelsKept: [6, 12] },
      tensorCount: 6,
    },
  } satisfies M.UpdateChunk,
  UpdateAck: { accepted: true, message: 'ok', maskVersion: 4 } satisfies M.UpdateAck,
  HeartbeatRequest: cred satisfies M.HeartbeatRequest,
  HeartbeatResponse: { currentRound: 7, taskAvailable: true, finished: true } satisfies M.HeartbeatResponse,
  LeaveRequest: { ...cred, reason: 'done' } satisfies M.LeaveRequest,
  LeaveResponse: {} satisfies M.LeaveResponse,
};

describe('subfed.v1 schema', () => {
  it('finds the .proto from the sources', () => {
    expect(protoFilePath()).toMatch(/proto[/\\]subfed\.proto$/);
  });

  it('round-trips a full sample of every message, field for field', () => {
    for (const [name, sample] of Object.entries(samples)) {
      const codec = codecs[name as keyof typeof codecs] as { encode(m: object): Buffer; decode(b: Uint8Array): unknown };
      expect(codec.decode(codec.encode(sample)), name).toEqual(sample);
    }
  });

  it('decodes a piece chunk with the oneof discriminator', () => {
    // A sender in another language writes only the field; the decoder names it in `kind`.
    const piece = { name: 'w', index: 0, total: 1, data: bytes(1) };
    const sent = { piece } as unknown as M.UpdateChunk;
    expect(codecs.UpdateChunk.decode(codecs.UpdateChunk.encode(sent))).toEqual({ kind: 'piece', piece });
  });

  it('turns undecodable bytes into Malformed instead of throwing', () => {
    const garbage = codecs.JoinRequest.decode(bytes(0x0a, 0xff, 0xff, 0xff));
    expect(isMalformed(garbage)).toBe(true);
    expect(isMalformed(garbage) && garbage.error).toMatch(/^JoinRequest: undecodable protobuf/);
    const empty = codecs.TaskChunk.decode(bytes());
    expect(isMalformed(empty) && empty.error).toBe('TaskChunk: neither header nor piece is set');
  });
});

describe('counted service definition', () => {
  it('counts every message with its direction and client', () => {
    const seen: [string, string | undefined, number][] = [];
    const def = createCoordinatorDefinition((direction, clientId, n) => seen.push([direction, clientId, n]));
    const req = { ...cred, maskVersion: 0, valueEncoding: ValueEncoding.F32 };
    const up = def.pullTask.requestSerialize(req);
    def.pullTask.requestDeserialize(up);
    const chunk = attributeTo<M.TaskChunk>(
      { kind: 'piece', piece: { name: 'w', index: 0, total: 1, data: bytes(1, 2, 3) } },
      'c-9',
    );
    const down = def.pullTask.responseSerialize(chunk);
    const header: M.UpdateChunk = { kind: 'header', header: (samples.UpdateChunk as { header: M.UpdateHeader }).header };
    const headerBytes = def.pushUpdate.requestSerialize(header);
    expect(seen).toEqual([
      ['up', 'c-1', up.length],
      ['up', 'c-1', up.length],
      ['down', 'c-9', down.length],
      ['up', 'c-1', headerBytes.length],
    ]);
    expect(wireSize(chunk)).toBe(down.length);
    expect(def.pullTask.path).toBe('/subfed.v1.Coordinator/PullTask');
    expect(def.pushUpdate.requestStream && !def.pushUpdate.responseStream).toBe(true);
  });

  it('deserializers never throw', () => {
    const def = createCoordinatorDefinition();
    for (const m of Object.values(def)) {
      expect(isMalformed(m.requestDeserialize(bytes(0xff, 0xff)))).toBe(true);
      expect(isMalformed(m.responseDeserialize(bytes(0x0a, 0x05, 0x01)))).toBe(true);
    }
  });
});
