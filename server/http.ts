import Fastify, { LogController } from 'fastify';
import type { Logger } from 'pino';
import type { Coordinator } from './coordinator.js';
import type { CoordinatorMetrics } from './metrics.js';
import { clientRoutes } from './http-clients.js';
import { registerDashboard, type DashboardFeed } from './dashboard.js';
import { roundSummarySchema, statusSchema } from './http-schemas.js';

/**
 * Health, Prometheus metrics, a read-only JSON API and the live dashboard (at
 * `/`), on a port of its own (127.0.0.1 unless configured). Every route
 * declares its schema, so a bad query is a 400 naming the field.
 */
export async function createHttpServer(coord: Coordinator, metrics: CoordinatorMetrics, feed: DashboardFeed, logger: Logger) {
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

  await registerDashboard(app, feed);
  await app.register(clientRoutes, { coordinator: coord });
  return app;
}
