import type { FastifyPluginCallback } from 'fastify';
import type { Coordinator } from './coordinator.js';
import { CLIENT_STATES, type ClientState } from './liveness.js';
import type { ClientHistory, ClientView } from './registry.js';

/** One registered client as `/api/clients` lists it: the registry's view, with its history flattened in. */
export type ClientRow = Omit<ClientView, 'history'> & ClientHistory;

const nullable = (type: 'integer' | 'number') => ({ type: [type, 'null'] }) as const;

export const clientRowSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    state: { type: 'string', enum: CLIENT_STATES },
    lastSeenAt: nullable('integer'),
    numExamples: { type: 'integer' },
    roundsTaken: { type: 'integer' },
    lastRound: nullable('integer'),
    sparsity: nullable('number'),
    localAccuracy: nullable('number'),
    bytesUp: { type: 'integer' },
    bytesDown: { type: 'integer' },
  },
  required: [
    'id',
    'name',
    'state',
    'lastSeenAt',
    'numExamples',
    'roundsTaken',
    'lastRound',
    'sparsity',
    'localAccuracy',
    'bytesUp',
    'bytesDown',
  ],
} as const;

interface ClientsQuery {
  state?: ClientState;
  limit: number;
  offset: number;
}

/**
 * `GET /api/clients`: every registered client in join order, with its state
 * (alive, stale, gone, left) at the time of the request (`now` in the answer,
 * so "seen 12 s ago" needs no clock of the caller's), filtered by `state` and
 * paged by `offset`/`limit`; `total` counts the filtered clients before paging.
 */
export const clientRoutes: FastifyPluginCallback<{ coordinator: Coordinator }> = (app, { coordinator: coord }, done) => {
  app.get<{ Querystring: ClientsQuery }>(
    '/api/clients',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: {
            state: { type: 'string', enum: CLIENT_STATES },
            limit: { type: 'integer', minimum: 1, maximum: 10_000, default: 1000 },
            offset: { type: 'integer', minimum: 0, default: 0 },
          },
          additionalProperties: false,
        },
        response: {
          200: {
            type: 'object',
            properties: {
              now: { type: 'integer' },
              total: { type: 'integer' },
              clients: { type: 'array', items: clientRowSchema },
            },
            required: ['now', 'total', 'clients'],
          },
        },
      },
    },
    (req, reply) => {
      const { now, clients } = coord.listClients();
      const { state, limit, offset } = req.query;
      const matching = state === undefined ? clients : clients.filter((c) => c.state === state);
      const rows: ClientRow[] = matching.slice(offset, offset + limit).map((c) => ({
        id: c.id,
        name: c.name,
        state: c.state,
        lastSeenAt: c.lastSeenAt,
        numExamples: c.numExamples,
        ...c.history,
      }));
      return reply.send({ now, total: matching.length, clients: rows });
    },
  );
  done();
};
