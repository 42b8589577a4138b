import Fastify, { LogController } from 'fastify';
import type { Logger } from 'pino';
import type { Coordinator } from './coordinator.js';
import type { CoordinatorMetrics } from './metrics.js';

const roundSummarySchema = {
  type: 'object',
  properties: {
    round: { type: 'integer' },
    attempts: { type: 'integer' },
    committedAt: { type: 'integer' },
    members: { type: 'array', items: { type: 'string' } },
    reporters: { type: 'array', items: { type: 'string' } },
    metrics: {
      type: 'object',
      additionalProperties: {
        type: 'object',
        properties: {
          numExamples: { type: 'number' },
          loss: { type: 'number' },
          localAccuracy: { type: 'number' },
          sparsity: { type: 'number' },
          receivedAccuracy: { type: 'number' },
        },
      },
    },
    bytesUp: { type: 'integer' },
    bytesDown: { type: 'integer' },
    traffic: {
      type: 'object',
      additionalProperties: { type: 'object', properties: { up: { type: 'integer' }, down: { type: 'integer' } } },
    },
    denseBytesUp: { type: 'integer' },
    denseBytesDown: { type: 'integer' },
    aggregationSeconds: { type: 'number' },
  },
} as const;

const statusSchema = {
  type: 'object',
  properties: {
    phase: { type: 'string', enum: ['waiting', 'open', 'finished'] },
    lastCommittedRound: { type: 'integer' },
    totalRounds: { type: 'integer' },
    round: {
      type: ['object', 'null'],
      properties: {
        id: { type: 'integer' },
        attempt: { type: 'integer' },
        members: { type: 'integer' },
        reported: { type: 'integer' },
        quorum: { type: 'integer' },
        deadlineAt: { type: 'integer' },
      },
    },
    clientsRegistered: { type: 'integer' },
    clientsActive: { type: 'integer' },
  },
} as const;

/**
 * Health, Prometheus metrics and a read-only JSON API, on a port of its own
 * (127.0.0.1 unless configured). Every route declares its schema, so a bad
 * query is a 400 naming the field.
 */
export function createHttpServer(coord: Coordinator, metrics: CoordinatorMetrics, logger: Logger) {
  const app = Fastify({
    loggerInstance: logger,
    // Rounds and refusals are logged by the coordinator; one line per HTTP request would drown them.
    logController: new LogController({ disableRequestLogging: true }),
    // Unknown query fields are an error, not silently dropped.
    ajv: { customOptions: { removeAdditional: false } },
  });

  app.get(
    '/healthz',
    { schema: { response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } } },
    (_req, reply) => reply.send({ status: 'ok' }),
  );

  app.get('/metrics', { schema: { response: { 200: { type: 'string' } } } }, async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return await metrics.registry.metrics();
  });

  app.get('/api/status', { schema: { response: { 200: statusSchema } } }, (_req, reply) => reply.send(coord.status()));

  app.get<{ Querystring: { limit: number; before?: number } }>(
    '/api/rounds',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 50 },
            before: { type: 'integer', minimum: 1 },
          },
          additionalProperties: false,
        },
        response: {
          200: { type: 'object', properties: { rounds: { type: 'array', items: roundSummarySchema } } },
        },
      },
    },
    (req, reply) => reply.send({ rounds: coord.rounds(req.query.limit, req.query.before) }),
  );

  return app;
}
