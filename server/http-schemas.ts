// JSON schemas of the HTTP API's responses: fastify validates queries against
// them and serializes responses through them (a field missing here is dropped).

export const roundSummarySchema = {
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
          channelsKept: { type: 'array', items: { type: 'integer' } },
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

export const statusSchema = {
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

const nullableNumber = { type: ['number', 'null'] } as const;

export const roundPointSchema = {
  type: 'object',
  properties: {
    round: { type: 'integer' },
    committedAt: { type: 'integer' },
    attempts: { type: 'integer' },
    members: { type: 'integer' },
    reporters: { type: 'integer' },
    dropouts: { type: 'integer' },
    accuracy: nullableNumber,
    receivedAccuracy: nullableNumber,
    sparsity: nullableNumber,
    channelsKept: { type: ['array', 'null'], items: { type: 'number' } },
    bytes: { type: 'integer' },
    denseBytes: { type: 'integer' },
    cumulativeBytes: { type: 'integer' },
    cumulativeDenseBytes: { type: 'integer' },
  },
} as const;

export const clientRowSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    active: { type: 'boolean' },
    state: { type: 'string', enum: ['alive', 'stale', 'gone', 'left'] },
    lastSeenAt: { type: ['integer', 'null'] },
    numExamples: { type: 'integer' },
    rounds: { type: 'integer' },
    lastRound: { type: ['integer', 'null'] },
    sparsity: nullableNumber,
    accuracy: nullableNumber,
    bytesUp: { type: 'integer' },
    bytesDown: { type: 'integer' },
  },
} as const;

export const snapshotSchema = {
  type: 'object',
  properties: {
    title: { type: 'string' },
    status: { anyOf: [statusSchema, { type: 'null' }] },
    model: {
      type: ['object', 'null'],
      properties: { tensors: { type: 'integer' }, parameters: { type: 'integer' } },
    },
    rounds: { type: 'array', items: roundPointSchema },
    clients: { type: 'array', items: clientRowSchema },
  },
} as const;
