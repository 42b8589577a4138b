/**
 * The live dashboard: a feed that condenses a coordinator's round history and
 * status into what the page draws (one point per committed round, one row per
 * client), and the fastify routes that serve the page, its assets (shipped in
 * the package, chart.js from its own package: no CDN) and a server-sent-events
 * stream of the feed. `subfed server` serves it at `/`; `subfed sim --dashboard`
 * serves the same page, the feed following each algorithm's coordinator in turn.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fastifySSE, type SSEReplyInterface } from '@fastify/sse';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type RawServerDefault } from 'fastify';
import type { Logger } from 'pino';
import { packageRoot } from '../proto/package-root.js';
import type { ClientInfo, Coordinator, CoordinatorStatus } from './coordinator.js';
import type { ClientState } from './liveness.js';
import { snapshotSchema } from './http-schemas.js';
import { totalElements } from './model.js';
import type { RoundSummary } from './store.js';

/** One committed round, as the charts draw it. Means are over the round's reporters (null: none reported it). */
export interface RoundPoint {
  readonly round: number;
  readonly committedAt: number;
  /** Attempts it took (abandoned attempts + 1). */
  readonly attempts: number;
  readonly members: number;
  readonly reporters: number;
  /** Members that did not report before the commit. */
  readonly dropouts: number;
  /** Accuracy on each reporter's own test data after its local training. */
  readonly accuracy: number | null;
  /** The same for the model as received, before local training. */
  readonly receivedAccuracy: number | null;
  /** Pruned share of the parameters. */
  readonly sparsity: number | null;
  /** Channels kept per BatchNorm layer, mean over the reporters that prune channels; null for other models. */
  readonly channelsKept: number[] | null;
  /** Wire bytes of the round, both directions. */
  readonly bytes: number;
  /** What dense float32 FedAvg would have moved for the same tasks and updates. */
  readonly denseBytes: number;
  /** Totals from the first round on, so the curve stays right when old points are dropped. */
  readonly cumulativeBytes: number;
  readonly cumulativeDenseBytes: number;
}

/**
 * One client, as the table lists it. New columns (liveness: state, last seen)
 * are new fields here and in clientRowSchema, and one entry in the page's column list.
 */
export interface ClientRow {
  readonly id: string;
  readonly name: string;
  readonly active: boolean;
  /** Liveness when the feed last looked (see server/liveness.ts). */
  readonly state: ClientState;
  /** Its last call to the coordinator (epoch ms); null = none since the coordinator started. */
  readonly lastSeenAt: number | null;
  readonly numExamples: number;
  /** Rounds it reported in. */
  rounds: number;
  lastRound: number | null;
  /** From its latest report. */
  sparsity: number | null;
  accuracy: number | null;
  bytesUp: number;
  bytesDown: number;
}

export interface DashboardSnapshot {
  readonly title: string;
  /** null before a coordinator is attached (a simulation still loading its data). */
  readonly status: CoordinatorStatus | null;
  readonly model: { readonly tensors: number; readonly parameters: number } | null;
  readonly rounds: readonly RoundPoint[];
  readonly clients: readonly ClientRow[];
}

/** What the event stream carries: a snapshot first (and whenever the feed follows another coordinator), then changes. */
export type DashboardEvent =
  | { readonly kind: 'snapshot'; readonly snapshot: DashboardSnapshot }
  | { readonly kind: 'status'; readonly status: CoordinatorStatus }
  | { readonly kind: 'round'; readonly round: RoundPoint; readonly clients: readonly ClientRow[] }
  | { readonly kind: 'clients'; readonly clients: readonly ClientRow[] };

/** Oldest points beyond this are dropped (a run of weeks must not grow the page without bound). */
export const MAX_ROUND_POINTS = 5000;

/** How often the feed looks for clients whose silence changed their state (alive, stale, gone). */
export const LIVENESS_POLL_MS = 2000;

const mean = (values: readonly number[]): number | null =>
  values.length === 0 ? null : values.reduce((s, v) => s + v, 0) / values.length;

/** Condenses a committed round; `before` = the previous point, for the running totals. */
export function roundPoint(s: RoundSummary, before: RoundPoint | undefined): RoundPoint {
  const reports = s.reporters.flatMap((id) => (s.metrics[id] === undefined ? [] : [s.metrics[id]]));
  const channels = reports.flatMap((m) => (m.channelsKept !== undefined && m.channelsKept.length > 0 ? [m.channelsKept] : []));
  const layers = channels.length === 0 ? 0 : Math.min(...channels.map((c) => c.length));
  const bytes = s.bytesUp + s.bytesDown;
  const denseBytes = s.denseBytesUp + s.denseBytesDown;
  return {
    round: s.round,
    committedAt: s.committedAt,
    attempts: s.attempts,
    members: s.members.length,
    reporters: s.reporters.length,
    dropouts: s.members.length - s.reporters.length,
    accuracy: mean(reports.map((m) => m.localAccuracy)),
    receivedAccuracy: mean(reports.map((m) => m.receivedAccuracy)),
    sparsity: mean(reports.map((m) => m.sparsity)),
    channelsKept:
      layers === 0
        ? null
        : Array.from({ length: layers }, (_, l) => channels.reduce((sum, c) => sum + c[l], 0) / channels.length),
    bytes,
    denseBytes,
    cumulativeBytes: (before?.cumulativeBytes ?? 0) + bytes,
    cumulativeDenseBytes: (before?.cumulativeDenseBytes ?? 0) + denseBytes,
  };
}

function emptyRow(c: ClientInfo): ClientRow {
  return {
    id: c.id,
    name: c.name,
    active: c.active,
    state: c.state,
    lastSeenAt: c.lastSeenAt,
    numExamples: c.numExamples,
    rounds: 0,
    lastRound: null,
    sparsity: null,
    accuracy: null,
    bytesUp: 0,
    bytesDown: 0,
  };
}

/**
 * Follows one coordinator at a time and tells its subscribers what changed.
 * Listeners run inside the coordinator's calls, so they must be quick (the
 * event stream only queues a write).
 */
export class DashboardFeed {
  #title = '';
  #coordinator: Coordinator | null = null;
  #unsubscribe: (() => void)[] = [];
  #rounds: RoundPoint[] = [];
  #clients = new Map<string, ClientRow>();
  #registered = -1;
  #active = -1;
  readonly #listeners = new Set<(event: DashboardEvent) => void>();

  constructor(title = 'subfed') {
    this.#title = title;
  }

  /** Follows `coordinator` from now on (dropping the one followed before), starting from its stored history. */
  attach(coordinator: Coordinator, title: string): void {
    this.detach();
    this.#title = title;
    this.#coordinator = coordinator;
    this.#rounds = [];
    this.#clients = new Map(coordinator.clients().map((c) => [c.id, emptyRow(c)]));
    const history: RoundSummary[] = [];
    for (let before: number | undefined; ;) {
      const page = coordinator.rounds(1000, before);
      history.push(...page);
      if (page.length < 1000) break;
      before = page[page.length - 1].round;
    }
    for (const summary of history.reverse()) this.#fold(summary);
    const status = coordinator.status();
    this.#registered = status.clientsRegistered;
    this.#active = status.clientsActive;
    this.#unsubscribe = [
      coordinator.onRoundCommitted((summary) => {
        const changed = this.#fold(summary);
        this.#emit({ kind: 'round', round: this.#rounds[this.#rounds.length - 1], clients: changed });
      }),
      coordinator.onChange(() => this.#onChange(coordinator)),
      this.#watchLiveness(coordinator),
    ];
    this.#emit({ kind: 'snapshot', snapshot: this.snapshot() });
  }

  /** Stops following; the page keeps what it has. */
  detach(): void {
    for (const off of this.#unsubscribe) off();
    this.#unsubscribe = [];
  }

  snapshot(): DashboardSnapshot {
    const c = this.#coordinator;
    return {
      title: this.#title,
      status: c === null ? null : c.status(),
      model: c === null ? null : { tensors: c.manifest.length, parameters: totalElements(c.manifest) },
      rounds: [...this.#rounds],
      clients: [...this.#clients.values()].map((r) => ({ ...r })),
    };
  }

  subscribe(listener: (event: DashboardEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(event: DashboardEvent): void {
    for (const listener of this.#listeners) listener(event);
  }

  /** Adds a committed round; returns the rows it changed. */
  #fold(summary: RoundSummary): ClientRow[] {
    const changed = new Map<string, ClientRow>();
    const row = (id: string): ClientRow | undefined => {
      const r = this.#clients.get(id);
      if (r !== undefined) changed.set(id, r);
      return r;
    };
    for (const [id, t] of Object.entries(summary.traffic)) {
      const r = row(id);
      if (r === undefined) continue;
      r.bytesUp += t.up;
      r.bytesDown += t.down;
    }
    for (const id of summary.reporters) {
      const r = row(id);
      const m = summary.metrics[id];
      if (r === undefined || m === undefined) continue;
      r.rounds += 1;
      r.lastRound = summary.round;
      r.sparsity = m.sparsity;
      r.accuracy = m.localAccuracy;
    }
    this.#rounds.push(roundPoint(summary, this.#rounds[this.#rounds.length - 1]));
    if (this.#rounds.length > MAX_ROUND_POINTS) this.#rounds.splice(0, this.#rounds.length - MAX_ROUND_POINTS);
    return [...changed.values()].map((r) => ({ ...r }));
  }

  #onChange(coordinator: Coordinator): void {
    const status = coordinator.status();
    // Only a join or a leave re-reads the table here: the coordinator calls this after every
    // accepted update, and reading every client each time would cost O(clients) per update.
    // States and last-seen times that move without a join or leave come with the periodic look.
    if (status.clientsRegistered !== this.#registered || status.clientsActive !== this.#active) {
      this.#registered = status.clientsRegistered;
      this.#active = status.clientsActive;
      this.#refreshClients(coordinator);
      this.#emitClients();
    }
    this.#emit({ kind: 'status', status });
  }

  /**
   * Re-reads every client's state and last-seen time. Returns whether a row
   * appeared or changed state: a new last-seen time alone is kept, not sent
   * (it travels with the next table that is sent).
   */
  #refreshClients(coordinator: Coordinator): boolean {
    let changed = false;
    for (const c of coordinator.clients()) {
      const known = this.#clients.get(c.id);
      if (known === undefined) {
        this.#clients.set(c.id, emptyRow(c));
        changed = true;
        continue;
      }
      if (known.active !== c.active || known.state !== c.state) changed = true;
      this.#clients.set(c.id, { ...known, active: c.active, state: c.state, lastSeenAt: c.lastSeenAt });
    }
    return changed;
  }

  #emitClients(): void {
    this.#emit({ kind: 'clients', clients: [...this.#clients.values()].map((r) => ({ ...r })) });
  }

  /**
   * Liveness moves with the clock, with no call to the coordinator: a silent
   * client turns stale, then gone. A periodic look catches that.
   */
  #watchLiveness(coordinator: Coordinator): () => void {
    const timer = setInterval(() => {
      if (this.#refreshClients(coordinator)) this.#emitClients();
    }, LIVENESS_POLL_MS);
    // The dashboard never keeps a process alive by itself.
    timer.unref();
    return () => clearInterval(timer);
  }
}

// ------------------------------------------------------------------ routes

/** The page and its assets, read once: they ship in the package (server/dashboard/), chart.js in its own. */
function loadAssets(): Record<'html' | 'script' | 'style' | 'chart', string> {
  const dir = join(packageRoot(), 'server', 'dashboard');
  // chart.js exports no path to its UMD bundle; it sits next to the CommonJS entry.
  const chartMain = createRequire(import.meta.url).resolve('chart.js');
  return {
    html: readFileSync(join(dir, 'index.html'), 'utf8'),
    script: readFileSync(join(dir, 'dashboard.js'), 'utf8'),
    style: readFileSync(join(dir, 'dashboard.css'), 'utf8'),
    chart: readFileSync(join(dirname(chartMain), 'chart.umd.min.js'), 'utf8'),
  };
}

const noQuery = { type: 'object', properties: {}, additionalProperties: false } as const;
const text = { 200: { type: 'string' } } as const;

/** Adds the dashboard routes to `app`: `/`, its assets, `/api/dashboard` (snapshot) and `/api/events` (SSE). */
export async function registerDashboard<L extends FastifyBaseLogger>(
  app: FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, L>,
  feed: DashboardFeed,
): Promise<void> {
  const assets = loadAssets();
  await app.register(fastifySSE, { heartbeatInterval: 15_000 });

  const asset = (path: string, type: string, body: string) =>
    app.get(path, { schema: { querystring: noQuery, response: text } }, (_req, reply) =>
      reply.header('content-type', type).header('cache-control', 'no-cache').send(body),
    );
  asset('/', 'text/html; charset=utf-8', assets.html);
  asset('/dashboard.js', 'text/javascript; charset=utf-8', assets.script);
  asset('/dashboard.css', 'text/css; charset=utf-8', assets.style);
  asset('/chart.umd.min.js', 'text/javascript; charset=utf-8', assets.chart);

  app.get('/api/dashboard', { schema: { querystring: noQuery, response: { 200: snapshotSchema } } }, (_req, reply) =>
    reply.send(feed.snapshot()),
  );

  const streams = new Set<SSEReplyInterface>();
  // Open event streams would keep close() waiting for ever: end them first.
  app.addHook('preClose', (done) => {
    for (const stream of streams) stream.close();
    done();
  });
  app.get(
    '/api/events',
    {
      sse: 'only',
      schema: {
        querystring: noQuery,
        response: {
          200: {
            description:
              'text/event-stream of DashboardEvent: `snapshot` first, then `status`, `round` and `clients` events as the coordinator moves',
            type: 'string',
          },
        },
      },
    },
    (_req, reply) => {
      const sse = reply.sse;
      sse.keepAlive();
      streams.add(sse);
      // One write after another, in the order the feed produced them.
      let queue = Promise.resolve();
      const send = (event: DashboardEvent): void => {
        queue = queue.then(() => sse.send({ event: event.kind, data: event })).catch(() => undefined);
      };
      const off = feed.subscribe(send);
      sse.onClose(() => {
        off();
        streams.delete(sse);
      });
      send({ kind: 'snapshot', snapshot: feed.snapshot() });
    },
  );
}

export interface DashboardServer {
  /** `host:port` */
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** The dashboard alone on its own HTTP port (for `subfed sim --dashboard`). */
export async function startDashboardServer(
  feed: DashboardFeed,
  options: { host: string; port: number; logger: Logger },
): Promise<DashboardServer> {
  const app = Fastify({
    loggerInstance: options.logger,
    logController: new LogController({ disableRequestLogging: true }),
    ajv: { customOptions: { removeAdditional: false } },
  });
  await registerDashboard(app, feed);
  try {
    await app.listen({ host: options.host, port: options.port });
  } catch (err) {
    await app.close();
    throw new Error(`dashboard: cannot listen on ${options.host}:${options.port} (${(err as Error).message})`);
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  return { address: `${options.host}:${port}`, port, close: () => app.close() };
}
