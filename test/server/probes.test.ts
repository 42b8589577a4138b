// The standard probes, seen by generic clients that know nothing of subfed:
// grpc.health.v1 (built from the health.proto that grpc-health-check ships)
// and server reflection (the reflection.proto @grpc/reflection ships; the
// descriptors it returns decoded with protobufjs's descriptor.proto).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProto } from 'grpc-health-check';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COORDINATOR_SERVICE, startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import { ENROLL, ScriptedClient, memoryLogger, toyModel } from './harness.js';

const require = createRequire(import.meta.url);
type Loaded = Record<string, Record<string, Record<string, Record<string, grpc.ServiceClientConstructor>>>>;
const load = (file: string) => grpc.loadPackageDefinition(protoLoader.loadSync(file, { enums: String })) as unknown as Loaded;

const HealthClient = load(healthProto).grpc.health.v1.Health;
const ReflectionClient = load(
  join(dirname(require.resolve('@grpc/reflection/package.json')), 'build/proto/grpc/reflection/v1/reflection.proto'),
).grpc.reflection.v1.ServerReflection;
const FileDescriptorProto = protobuf
  .loadSync(join(dirname(require.resolve('protobufjs/package.json')), 'google/protobuf/descriptor.proto'))
  .lookupType('google.protobuf.FileDescriptorProto');

type Status = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

interface HealthStub {
  check(req: { service: string }, done: (err: grpc.ServiceError | null, res?: { status: Status }) => void): void;
  watch(req: { service: string }): grpc.ClientReadableStream<{ status: Status }>;
}

function check(client: grpc.Client, service: string): Promise<Status> {
  return new Promise((resolve, reject) =>
    (client as unknown as HealthStub).check({ service }, (err, res) => (err ? reject(err) : resolve(res!.status))),
  );
}

/** Collects a Watch stream's statuses; `next(status)` resolves once that status has arrived. */
function watch(client: grpc.Client, service: string) {
  const call = (client as unknown as HealthStub).watch({ service });
  const seen: Status[] = [];
  const waiters: { status: Status; resolve: () => void }[] = [];
  call.on('data', (m: { status: Status }) => {
    seen.push(m.status);
    for (const w of waiters.filter((w) => w.status === m.status)) w.resolve();
  });
  call.on('error', () => undefined);
  return {
    seen,
    next: (status: Status) =>
      seen.includes(status) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ status, resolve })),
    cancel: () => call.cancel(),
  };
}

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

/** One request on the reflection stream, its one response. */
function reflect(client: grpc.Client, request: Record<string, string>): Promise<ReflectionResponse> {
  return new Promise((resolve, reject) => {
    const call = (
      client as unknown as { serverReflectionInfo(): grpc.ClientDuplexStream<object, ReflectionResponse> }
    ).serverReflectionInfo();
    call.on('data', (res: ReflectionResponse) => {
      resolve(res);
      call.end();
    });
    call.on('error', reject);
    call.write(request);
  });
}

describe('grpc.health.v1 and server reflection', () => {
  let server: CoordinatorHandle;
  let health: grpc.Client;
  let reflection: grpc.Client;

  beforeAll(async () => {
    server = await startCoordinator({ rounds: 1, fraction: 1, enrollmentToken: ENROLL, http: { enabled: false } }, toyModel(), {
      logger: memoryLogger().logger,
    });
    health = new HealthClient(server.grpcAddress, grpc.credentials.createInsecure());
    reflection = new ReflectionClient(server.grpcAddress, grpc.credentials.createInsecure());
  });

  afterAll(async () => {
    health?.close();
    reflection?.close();
    await server?.stop();
  });

  it('lists the coordinator and health services', async () => {
    const res = await reflect(reflection, { listServices: '' });
    expect(res.listServicesResponse?.service.map((s) => s.name)).toEqual(
      expect.arrayContaining([COORDINATOR_SERVICE, 'grpc.health.v1.Health']),
    );
  });

  it("describes the coordinator's methods and messages from its file descriptor", async () => {
    const res = await reflect(reflection, { fileContainingSymbol: COORDINATOR_SERVICE });
    const files = (res.fileDescriptorResponse?.fileDescriptorProto ?? []).map(
      (bytes) =>
        FileDescriptorProto.toObject(FileDescriptorProto.decode(bytes)) as {
          package: string;
          service?: { name: string; method: { name: string; clientStreaming?: boolean; serverStreaming?: boolean }[] }[];
          messageType?: { name: string; field: { name: string }[] }[];
        },
    );
    const file = files.find((f) => f.package === 'subfed.v1');
    const service = file?.service?.find((s) => s.name === 'Coordinator');
    expect(service?.method.map((m) => m.name)).toEqual(['Join', 'PullTask', 'PushUpdate', 'Heartbeat', 'Leave']);
    expect(service?.method.find((m) => m.name === 'PushUpdate')?.clientStreaming).toBe(true);
    expect(file?.messageType?.find((m) => m.name === 'UpdateMetrics')?.field.map((f) => f.name)).toContain('channels_kept');
  });

  it('answers NOT_FOUND for a symbol it does not have', async () => {
    const res = await reflect(reflection, { fileContainingSymbol: 'subfed.v1.NoSuchThing' });
    expect(res.errorResponse?.errorCode).toBe(grpc.status.NOT_FOUND);
  });

  it('is SERVING while it takes clients, NOT_FOUND for an unknown service, and NOT_SERVING once training is finished', async () => {
    expect(await check(health, '')).toBe('SERVING');
    expect(await check(health, COORDINATOR_SERVICE)).toBe('SERVING');
    await expect(check(health, 'no.such.Service')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });

    const watcher = watch(health, COORDINATOR_SERVICE);
    await watcher.next('SERVING');
    const c = new ScriptedClient(server.grpcAddress);
    await c.join();
    await c.pull();
    await c.push(1, c.encode({ 'dense/kernel': [1, 1, 1, 1, 1, 1] }));
    await server.waitForRound(1);
    await watcher.next('NOT_SERVING');
    expect(watcher.seen).toEqual(['SERVING', 'NOT_SERVING']);
    expect(await check(health, '')).toBe('NOT_SERVING');
    watcher.cancel();
    c.close();
  });
});

describe('grpc.health.v1 on shutdown', () => {
  it('turns NOT_SERVING when the coordinator stops', async () => {
    const server = await startCoordinator(
      { rounds: 5, fraction: 1, enrollmentToken: ENROLL, http: { enabled: false } },
      toyModel(),
      {
        logger: memoryLogger().logger,
      },
    );
    const health = new HealthClient(server.grpcAddress, grpc.credentials.createInsecure());
    const watcher = watch(health, '');
    await watcher.next('SERVING');
    const stopped = server.stop();
    await watcher.next('NOT_SERVING');
    watcher.cancel();
    await stopped;
    health.close();
  });
});
