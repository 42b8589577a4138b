import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { DEFAULT_CHUNK_BYTES, createCoordinatorDefinition, messageLimitOptions, type AssemblyLimits } from '../proto/rpc.js';
import { loadConfigFile, loadModelFile, parseConfig, type CoordinatorConfig, type CoordinatorConfigInput } from './config.js';
import { Coordinator } from './coordinator.js';
import { createGrpcHandlers, limitMessageSizes } from './grpc.js';
import { createHttpServer } from './http.js';
import { CoordinatorMetrics } from './metrics.js';
import type { TensorMap, TensorSpec } from './model.js';
import { elementCount } from './model.js';

export interface CoordinatorHandle {
  readonly grpcPort: number;
  /** `host:port` for clients. */
  readonly grpcAddress: string;
  /** null when HTTP is disabled. */
  readonly httpPort: number | null;
  readonly coordinator: Coordinator;
  readonly metrics: CoordinatorMetrics;
  /** Resolves once `round` is committed (immediately if it already is). */
  waitForRound(round: number): Promise<void>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Defaults to a pino logger at the configured level, on stdout. */
  logger?: Logger;
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

/** Starts a coordinator (gRPC + HTTP) in this process. The sim and tests use this; the CLI uses runServer. */
export async function startCoordinator(
  configInput: CoordinatorConfigInput | CoordinatorConfig,
  model: { manifest: readonly TensorSpec[]; initial: TensorMap },
  options: StartOptions = {},
): Promise<CoordinatorHandle> {
  const config = parseConfig(configInput);
  const logger = options.logger ?? pino({ level: config.logLevel, base: { service: 'subfed-coordinator' } });
  const metrics = new CoordinatorMetrics();
  const coordinator = new Coordinator(config, model, { logger, metrics });

  const counted = createCoordinatorDefinition((direction, clientId, bytes) => {
    metrics.bytes.inc({ direction }, bytes);
    coordinator.recordWire(direction, clientId, bytes);
  });
  const definition = limitMessageSizes(counted, config.grpc.maxMessageBytes);
  const server = new grpc.Server({
    ...messageLimitOptions(config.grpc.maxMessageBytes),
    // Hard cap; the configured limit is enforced (and logged) by limitMessageSizes.
    'grpc.max_receive_message_length': 2 * config.grpc.maxMessageBytes,
  });
  server.addService(
    definition,
    createGrpcHandlers(coordinator, {
      limits: uploadLimits(coordinator.manifest),
      chunkBytes: Math.min(DEFAULT_CHUNK_BYTES, Math.max(1024, config.grpc.maxMessageBytes - 4096)),
    }),
  );
  const credentials =
    config.tls === undefined
      ? grpc.ServerCredentials.createInsecure()
      : grpc.ServerCredentials.createSsl(
          null,
          [{ private_key: readFileSync(config.tls.key), cert_chain: readFileSync(config.tls.cert) }],
          false,
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

  let http: ReturnType<typeof createHttpServer> | null = null;
  let httpPort: number | null = null;
  if (config.http.enabled) {
    http = createHttpServer(coordinator, metrics, logger);
    try {
      await http.listen({ host: config.http.host, port: config.http.port });
    } catch (err) {
      server.forceShutdown();
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
    coordinator,
    metrics,
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
        coordinator.stop();
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
    throw new Error(`${configPath}: model: expected a path to a model JSON file, got nothing`);
  }
  const model = loadModelFile(config.model);
  const handle = await startCoordinator(config, model);
  const shutdown = () => {
    void handle.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  return handle;
}
