import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CLIENT_STATES, type ClientState } from './liveness.js';

/** The coordinator's Prometheus metrics, on a registry of its own (several coordinators may share a process). */
export class CoordinatorMetrics {
  readonly registry = new Registry();

  /**
   * @param processMetrics also export prom-client's default process metrics (CPU, memory,
   *   event loop, GC): for a coordinator that serves /metrics, not for the many a simulation starts.
   */
  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics === true) collectDefaultMetrics({ register: this.registry });
  }

  readonly lastCommittedRound = new Gauge({
    name: 'subfed_round_committed',
    help: 'Last committed round (0 before the first commit)',
    registers: [this.registry],
  });
  readonly openRound = new Gauge({
    name: 'subfed_round_open',
    help: 'The round open now (0 when none is)',
    registers: [this.registry],
  });
  readonly roundMembers = new Gauge({
    name: 'subfed_round_members',
    help: 'Members sampled for the open round',
    registers: [this.registry],
  });
  readonly roundReporters = new Gauge({
    name: 'subfed_round_reporters',
    help: 'Members of the open round whose update was accepted',
    registers: [this.registry],
  });
  readonly accuracy = new Gauge({
    name: 'subfed_accuracy',
    help: "Mean over the last committed round's reporters of their accuracy on their own test data: of the model as received (model=received) or after local training (model=trained)",
    labelNames: ['model'] as const,
    registers: [this.registry],
  });
  readonly roundsCommitted = new Counter({
    name: 'subfed_rounds_committed_total',
    help: 'Rounds committed',
    registers: [this.registry],
  });
  readonly roundsAbandoned = new Counter({
    name: 'subfed_rounds_abandoned_total',
    help: 'Round attempts abandoned at the deadline without a quorum',
    registers: [this.registry],
  });
  readonly clientsRegistered = new Gauge({
    name: 'subfed_clients_registered',
    help: 'Active registered clients',
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: 'subfed_wire_bytes_total',
    help: 'Bytes on the wire, by direction (up = client to server)',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  readonly callBytes = new Counter({
    name: 'subfed_call_bytes_total',
    help: 'Bytes of calls by outcome: accepted (the call succeeded, the first time), retry (the repeat of an upload accepted before), refused (refused, failed or cut off)',
    labelNames: ['direction', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly denseEquivalentBytes = new Counter({
    name: 'subfed_dense_equivalent_bytes_total',
    help: 'Bytes dense float32 FedAvg would have moved for the same tasks and updates',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  readonly aggregationSeconds = new Histogram({
    name: 'subfed_aggregation_seconds',
    help: 'Time to apply a round (commit of the intersection average)',
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [this.registry],
  });
  readonly updatesAccepted = new Counter({
    name: 'subfed_updates_accepted_total',
    help: 'Updates folded into a round',
    registers: [this.registry],
  });
  readonly updatesClipped = new Counter({
    name: 'subfed_updates_clipped_total',
    help: 'Accepted updates whose delta was scaled down to updateNormBound (updateNormMode clip)',
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: 'subfed_rejected_requests_total',
    help: 'Requests refused, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly streamsOpen = new Gauge({
    name: 'subfed_streams_open',
    help: 'PullTask and PushUpdate streams open now (streams.total caps them)',
    registers: [this.registry],
  });
  readonly streamBufferedBytes = new Gauge({
    name: 'subfed_stream_buffered_bytes',
    help: 'Bytes the open streams hold: upload pieces until the update is folded, prepared tasks until sent (streams.maxBufferedBytes caps them)',
    registers: [this.registry],
  });

  #clientStates: (() => Record<ClientState, number>) | undefined;
  /** Read at every scrape: states follow the clock, so a value set at the last event would go stale itself. */
  readonly clients = new Gauge({
    name: 'subfed_clients',
    help: 'Registered clients by state: alive, stale (silent, not sampled), gone (silent longer, not awaited), left',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const counts = this.#clientStates?.();
      if (counts === undefined) return;
      for (const state of CLIENT_STATES) this.clients.set({ state }, counts[state]);
    },
  });

  /** Where the `subfed_clients` gauge reads its counts (the coordinator's registry). */
  observeClientStates(source: () => Record<ClientState, number>): void {
    this.#clientStates = source;
  }
}
