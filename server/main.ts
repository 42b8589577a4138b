import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import { pino, type Logger } from 'pino';
import { DEFAULT_CHUNK_BYTES, createCoordinatorDefinition, messageLimitOptions, type AssemblyLimits } from '../proto/rpc.js';
import { protoFilePath } from '../proto/schema.js';
import {
  ConfigError,
  configWarnings,
  loadConfigFile,
  loadModelFile,
  parseConfig,
  readTlsFiles,
  type CoordinatorConfig,
  type CoordinatorConfigInput,
} from './config.js';
import { Coordinator } from './coordinator.js';
import { DashboardFeed } from './dashboard.js';
import { createGrpcHandlers, limitMessageSizes } from './grpc.js';
import { createHttpServer } from './http.js';
import { CoordinatorMetrics } from './metrics.js';
import type { TensorMap, TensorSpec } from './model.js';
import { elementCount } from '../proto/shape.js';
import { StreamGuard } from './streams.js';

export interface CoordinatorHandle {
  readonly grpcPort: number;
  /** `host:port` for clients. */
  readonly grpcAddress: string;
  /** null when HTTP is disabled. */
  readonly httpPort: number | null;
  /** `host:port` of the HTTP API and dashboard; null when HTTP is disabled. */
  readonly httpAddress: string | null;
  readonly coordinator: Coordinator;
  readonly metrics: CoordinatorMetrics;
  /** Open PullTask/PushUpdate streams and the bytes they hold (the limits of `streams`). */
  readonly streams: StreamGuard;
  /** Resolves once `round` is committed (immediately if it already is). */
  waitForRound(round: number): Promise<void>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Defaults to a pino logger at the configured level, on stdout. */
  logger?: Logger;
  /** The coordinator's clock (epoch ms); tests drive liveness with it. */
  now?: () => number;
}

/**
 * Upload limits from the model size: no honest update is larger than every
 * value as f32 plus the largest mask encoding (at most ~5 bytes per element
 * for index gaps), so anything beyond that is refused as RESOURCE_EXHAUSTED
 * before it is buffered.
 */
export function uploadLimits(manifest: readonly TensorSpec[]): AssemblyLimits {
  let largest = 0;
  let total = 0;
  for (const spec of manifest) {
    const bytes = 9 * elementCount(spec.shape) + 1024;
    largest = Math.max(largest, bytes);
    total += bytes;
  }
  return {
    maxTensors: manifest.length,
    maxTensorBytes: largest,
    maxTotalBytes: total,
    maxPieces: Math.max(4096, Math.ceil(largest / 1024)),
  };
}

/** The full name of the coordinator's gRPC service, as health checks and reflection name it. */
export const COORDINATOR_SERVICE = 'subfed.v1.Coordinator';

let reflectedProtos: protoLoader.PackageDefinition | undefined;

/** subfed.v1 and grpc.health.v1 as descriptors, for server reflection (parsed once per process). */
function reflectedDefinitions(): protoLoader.PackageDefinition {
  // keepCase: the descriptors carry the .proto's own field names (snake_case), as a generic client expects.
  reflectedProtos ??= {
    ...protoLoader.loadSync(protoFilePath(), { keepCase: true }),
    ...protoLoader.loadSync(healthProtoPath, { keepCase: true }),
  };
  return reflectedProtos;
}

/** Starts a coordinator (gRPC + HTTP) in this process. The sim and tests use this; the CLI uses runServer. */
export async function startCoordinator(
  configInput: CoordinatorConfigInput | CoordinatorConfig,
  model: { manifest: readonly TensorSpec[]; initial: TensorMap },
  options: StartOptions = {},
): Promise<CoordinatorHandle> {
  const config = parseConfig(configInput);
  const logger = options.logger ?? pino({ level: config.logLevel, base: { service: 'subfed-coordinator' } });
  // Read before anything starts, so a missing file is one clear error.
  const tls = config.tls === undefined ? undefined : readTlsFiles(config.tls);
  const uploadBytes = uploadLimits(model.manifest).maxTotalBytes;
  if (config.streams.maxBufferedBytes < uploadBytes) {
    throw new ConfigError(
      `streams.maxBufferedBytes: ${config.streams.maxBufferedBytes} bytes cannot hold one upload of this model ` +
        `(up to ${uploadBytes} bytes); raise it`,
    );
  }
  const metrics = new CoordinatorMetrics({ processMetrics: config.http.enabled });
  const coordinator = new Coordinator(config, model, { logger, metrics, now: options.now });

  // Every message, whatever became of its call; the handlers count each call's bytes by outcome (recordCall).
  const counted = createCoordinatorDefinition((direction, _clientId, bytes) => metrics.bytes.inc({ direction }, bytes));
  const definition = limitMessageSizes(counted, config.grpc.maxMessageBytes);
  const server = new grpc.Server({
    ...messageLimitOptions(config.grpc.maxMessageBytes),
    // Hard cap; the configured limit is enforced (and logged) by limitMessageSizes.
    'grpc.max_receive_message_length': 2 * config.grpc.maxMessageBytes,
  });
  const limits = uploadLimits(coordinator.manifest);
  const streams = new StreamGuard(config.streams, (s) => {
    metrics.streamsOpen.set(s.open);
    metrics.streamBufferedBytes.set(s.buffered);
  });
  server.addService(
    definition,
    createGrpcHandlers(coordinator, {
      limits,
      chunkBytes: Math.min(DEFAULT_CHUNK_BYTES, Math.max(1024, config.grpc.maxMessageBytes - 4096)),
      streams,
      clientCertificates: tls?.clientCa !== undefined,
    }),
  );
  // The standard probes: grpc.health.v1 (SERVING while clients are taken, NOT_SERVING once
  // training is finished or the server is shutting down) and server reflection.
  const health = new HealthImplementation();
  let serving: ServingStatus | undefined;
  const setServing = (status: ServingStatus): void => {
    if (status === serving) return;
    serving = status;
    health.setStatus('', status);
    health.setStatus(COORDINATOR_SERVICE, status);
  };
  setServing(coordinator.status().phase === 'finished' ? 'NOT_SERVING' : 'SERVING');
  const offHealth = coordinator.onChange(() => {
    if (coordinator.status().phase === 'finished') setServing('NOT_SERVING');
  });
  health.addToServer(server);
  new ReflectionService(reflectedDefinitions()).addToServer(server);

  const credentials =
    tls === undefined
      ? grpc.ServerCredentials.createInsecure()
      : // With clientCa, grpc-js refuses a client without a certificate that CA signed (mutual TLS).
        grpc.ServerCredentials.createSsl(
          tls.clientCa ?? null,
          [{ private_key: tls.key, cert_chain: tls.cert }],
          tls.clientCa !== undefined,
        );
  let grpcPort: number;
  try {
    grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${config.grpc.host}:${config.grpc.port}`, credentials, (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
  } catch (err) {
    coordinator.stop();
    throw new Error(`grpc: cannot listen on ${config.grpc.host}:${config.grpc.port} (${(err as Error).message})`);
  }

  let http: Awaited<ReturnType<typeof createHttpServer>> | null = null;
  let httpPort: number | null = null;
  const feed = new DashboardFeed();
  if (config.http.enabled) {
    feed.attach(coordinator, 'coordinator');
    try {
      http = await createHttpServer(coordinator, metrics, feed, logger);
      await http.listen({ host: config.http.host, port: config.http.port });
    } catch (err) {
      server.forceShutdown();
      await http?.close();
      coordinator.stop();
      throw new Error(`http: cannot listen on ${config.http.host}:${config.http.port} (${(err as Error).message})`);
    }
    const address = http.server.address();
    httpPort = typeof address === 'object' && address !== null ? address.port : null;
  }
  logger.info(
    { event: 'listening', grpcPort, httpPort, tls: config.tls !== undefined },
    `coordinator listening: gRPC ${config.grpc.host}:${grpcPort}, HTTP ${httpPort ?? 'off'}`,
  );

  let stopped: Promise<void> | undefined;
  return {
    grpcPort,
    grpcAddress: `${config.grpc.host}:${grpcPort}`,
    httpPort,
    httpAddress: httpPort === null ? null : `${config.http.host}:${httpPort}`,
    coordinator,
    metrics,
    streams,
    waitForRound(round: number): Promise<void> {
      if (coordinator.status().lastCommittedRound >= round) return Promise.resolve();
      return new Promise((resolve) => {
        const off = coordinator.onRoundCommitted((s) => {
          if (s.round >= round) {
            off();
            resolve();
          }
        });
      });
    },
    stop(): Promise<void> {
      stopped ??= (async () => {
        offHealth();
        setServing('NOT_SERVING');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 2000);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        if (http !== null) await http.close();
        feed.detach();
        coordinator.stop();
        const s = coordinator.status();
        logger.info(
          { event: 'shutdown', lastCommittedRound: s.lastCommittedRound, totalRounds: s.totalRounds, phase: s.phase },
          `coordinator stopped after round ${s.lastCommittedRound} of ${s.totalRounds}`,
        );
      })();
      return stopped;
    },
  };
}

/**
 * `subfed server --config <file.json>`: starts the coordinator from a config
 * file (which must name a model file) and stops cleanly on SIGINT/SIGTERM.
 */
export async function runServer(configPath: string): Promise<CoordinatorHandle> {
  const config = loadConfigFile(configPath);
  if (config.model === undefined) {
    throw new ConfigError(`${configPath}: model: expected a path to a model JSON file, got nothing`);
  }
  const model = loadModelFile(config.model);
  const logger = pino({ level: config.logLevel, base: { service: 'subfed-coordinator' } });
  for (const warning of configWarnings(config))
    logger.warn({ event: 'config-warning', config: configPath }, `${configPath}: ${warning}`);
  const handle = await startCoordinator(config, model, { logger });
  const shutdown = (signal: NodeJS.Signals) => {
    logger.info({ event: 'signal', signal }, `${signal}: shutting down`);
    void handle.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  return handle;
}
