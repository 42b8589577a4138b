import type { Logger } from 'pino';
import type * as M from '../proto/messages.js';
import { codecs } from '../proto/schema.js';
import { PROTOCOL_VERSION, type WireDirection } from '../proto/rpc.js';
import type { CoordinatorConfig } from './config.js';
import { CoordinatorError, exhausted, precondition } from './errors.js';
import { createAggregator, type Aggregator } from './aggregate.js';
import type { CoordinatorMetrics } from './metrics.js';
import type { MaskMap, TensorMap, TensorSpec } from './model.js';
import { cloneTensors, totalElements, validateInitialModel } from './model.js';
import type { ClientState } from './liveness.js';
import { PeerRateLimiter } from './limits.js';
import { Registry, type ClientRecord, type ClientView } from './registry.js';
import { Round, quorumCount, sampleMembers, type AdoptedMasks, type UploadReceipt } from './rounds.js';
import { CoordinatorStore, type RoundSummary } from './store.js';
import { masksAfter, uploadDigest, validateUpdate } from './validate.js';
import { encodeTaskTensor, requestedValueEncoding, type TaskLayout } from './wire.js';

export type CoordinatorPhase = 'waiting' | 'open' | 'finished';

/** How a call ended, for the byte accounting: see recordCall. */
export type CallOutcome = 'accepted' | 'retry' | 'refused';

export interface CoordinatorStatus {
  phase: CoordinatorPhase;
  /** Last committed round (0 = none yet). */
  lastCommittedRound: number;
  totalRounds: number;
  /** The open round, if any. */
  round: { id: number; attempt: number; members: number; reported: number; quorum: number; deadlineAt: number } | null;
  clientsRegistered: number;
  clientsActive: number;
}

/** A task ready to send: header plus the tensors (already encoded, not yet chunked). */
export interface PreparedTask {
  header: M.TaskHeader;
  tensors: M.SparseTensor[];
}

type RoundListener = (summary: RoundSummary) => void;

/** A registered client, as the dashboard's table lists it. */
export interface ClientInfo {
  readonly id: string;
  readonly name: string;
  readonly numExamples: number;
  /** false once it left. */
  readonly active: boolean;
  readonly state: ClientState;
  readonly lastSeenAt: number | null;
}

export interface CoordinatorDeps {
  logger: Logger;
  metrics: CoordinatorMetrics;
  /** The clock (epoch ms) for liveness and round times; Date.now unless a test drives it. */
  now?: (() => number) | undefined;
}

/** Node timers cap at 2^31-1 ms; a longer delay would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The coordinator's state machine, independent of the transport: registry,
 * round lifecycle (sample, deadline, quorum, commit or abandon) and the
 * intersection aggregate. It delegates: validateUpdate checks an update,
 * IntersectionAggregator folds it, and Registry and Round change their own
 * records. gRPC and HTTP are thin layers over this class; tests drive it
 * directly too.
 *
 * Liveness (see liveness.ts): a round samples only alive clients. A member
 * that goes stale during its round stays awaited (it may be training, or
 * training slowly); a member that leaves or goes gone is no longer awaited, so
 * the round commits as soon as every member still awaited has reported, and
 * the deadline's quorum counts the reporters plus the members still awaited.
 */
export class Coordinator {
  readonly manifest: readonly TensorSpec[];
  readonly #specs: Map<string, TensorSpec>;
  readonly #config: CoordinatorConfig;
  readonly #log: Logger;
  readonly #metrics: CoordinatorMetrics;
  readonly #now: () => number;
  readonly #store: CoordinatorStore;
  readonly #registry: Registry;
  readonly #aggregator: Aggregator;
  readonly #global: TensorMap;
  readonly #denseBytes: number;
  readonly #configJson: string;
  readonly #listeners = new Set<RoundListener>();
  readonly #changeListeners = new Set<() => void>();
  /** Join attempts per peer address; undefined when `joins.perPeer` is off. */
  readonly #joinRate: PeerRateLimiter | undefined;
  #lastRound: number;
  #round: Round | null = null;
  /** Attempt number of the next round to open: counts abandoned attempts of the current round id. */
  #nextAttempt = 0;
  /** Receipts of the last committed round, so a retry after the commit gets its ack again. */
  #lastReceipts: ReadonlyMap<string, UploadReceipt> = new Map();
  #timer: NodeJS.Timeout | undefined;
  /** Fires when the open round's first awaited member would turn gone. */
  #livenessTimer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(config: CoordinatorConfig, model: { manifest: readonly TensorSpec[]; initial: TensorMap }, deps: CoordinatorDeps) {
    validateInitialModel(model.manifest, model.initial);
    this.manifest = model.manifest.map((t) => ({ name: t.name, shape: [...t.shape], prunable: t.prunable }));
    this.#specs = new Map(this.manifest.map((t) => [t.name, t]));
    this.#config = config;
    this.#log = deps.logger;
    this.#metrics = deps.metrics;
    // Looked up at each call, so a test that fakes Date after construction still drives it.
    this.#now = deps.now ?? (() => Date.now());
    this.#denseBytes = 4 * totalElements(this.manifest);
    this.#configJson = JSON.stringify(config.training);
    this.#joinRate = config.joins.perPeer === 'off' ? undefined : new PeerRateLimiter(config.joins.perPeer);
    this.#store = new CoordinatorStore(config.sqlite, this.manifest);
    let state;
    try {
      state = this.#store.loadOrInit(model.initial);
    } catch (err) {
      this.#store.close();
      throw err;
    }
    this.#global = state.global;
    this.#lastRound = state.lastRound;
    this.#registry = new Registry(config.enrollmentToken, config.liveness, this.#now());
    for (const c of state.clients) this.#registry.restore(c);
    this.#restoreHistory();
    this.#aggregator = createAggregator(this.manifest, config.aggregation);
    this.#metrics.clientsRegistered.set(this.#registry.activeCount());
    this.#metrics.observeClientStates(() => this.#registry.countByState(this.#now()));
    this.#metrics.lastCommittedRound.set(state.lastRound);
    if (state.lastRound > 0 || state.clients.length > 0) {
      this.#log.info(
        { event: 'resume', lastRound: state.lastRound, clients: state.clients.length },
        `resumed after round ${state.lastRound} with ${state.clients.length} clients`,
      );
    }
    this.#maybeOpenRound();
  }

  /** Rebuilds each client's history from the stored rounds, a page at a time (newest first). */
  #restoreHistory(): void {
    const page = 1000;
    for (let before: number | undefined; ;) {
      const rounds = this.#store.listRounds(page, before);
      for (const summary of rounds) this.#registry.recordCommitted(summary);
      if (rounds.length < page) return;
      before = rounds[rounds.length - 1].round;
    }
  }

  // ------------------------------------------------------------------ queries

  status(): CoordinatorStatus {
    const r = this.#round;
    return {
      phase: this.#phase(),
      lastCommittedRound: this.#lastRound,
      totalRounds: this.#config.rounds,
      round:
        r === null
          ? null
          : {
              id: r.id,
              attempt: r.attempt,
              members: r.members.size,
              reported: r.reported,
              quorum: this.#quorum(r, this.#now()),
              deadlineAt: r.deadlineAt,
            },
      clientsRegistered: this.#registry.size,
      clientsActive: this.#registry.activeCount(),
    };
  }

  /** Every registered client in join order, with its state at `now` (also returned, so callers can tell "seen ago"). */
  listClients(): { now: number; clients: ClientView[] } {
    const now = this.#now();
    return { now, clients: this.#registry.views(now) };
  }

  /** Every registered client in join order, for the dashboard's table. */
  clients(): ClientInfo[] {
    return this.listClients().clients.map((c) => ({
      id: c.id,
      name: c.name,
      numExamples: c.numExamples,
      active: c.state !== 'left',
      state: c.state,
      lastSeenAt: c.lastSeenAt,
    }));
  }

  /**
   * Called after anything status() or clients() report may have changed: a
   * join or leave, a round opened, an update accepted, a round committed or
   * abandoned (after onRoundCommitted's listeners).
   */
  onChange(listener: () => void): () => void {
    this.#changeListeners.add(listener);
    return () => this.#changeListeners.delete(listener);
  }

  #changed(): void {
    for (const listener of this.#changeListeners) listener();
  }

  /** A copy of the global model. */
  globalModel(): TensorMap {
    return cloneTensors(this.#global);
  }

  /** The name a client joined under (under mutual TLS, its certificate's CN); undefined for an unknown id. */
  clientName(clientId: string): string | undefined {
    return this.#registry.get(clientId)?.name;
  }

  /** The masks the server holds for a client (tensors absent = all kept). */
  clientMasks(clientId: string): { version: number; masks: MaskMap } | undefined {
    const c = this.#registry.get(clientId);
    if (c === undefined) return undefined;
    return { version: c.maskVersion, masks: new Map(c.masks) };
  }

  /** The open round's members (empty when none is open). */
  members(): string[] {
    return this.#round === null ? [] : [...this.#round.members];
  }

  rounds(limit: number, before?: number): RoundSummary[] {
    return this.#store.listRounds(limit, before);
  }

  /** Called after every commit, inside the call that completed the round. */
  onRoundCommitted(listener: RoundListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #phase(): CoordinatorPhase {
    if (this.#round !== null) return 'open';
    return this.#lastRound >= this.#config.rounds ? 'finished' : 'waiting';
  }

  /** Members of `r` it still waits for: not reported, not left, not gone. */
  #awaited(r: Round, now: number): string[] {
    return r.awaited((id) => this.#registry.awaits(id, now));
  }

  /** Reports needed at the deadline: the quorum fraction of the reporters plus the members still awaited. */
  #quorum(r: Round, now: number): number {
    return quorumCount(this.#config.quorum, r.reported + this.#awaited(r, now).length);
  }

  // ------------------------------------------------------------------ calls

  #checkProtocol(version: number): void {
    if (version !== PROTOCOL_VERSION) {
      throw precondition(
        'protocol_version',
        `protocol_version ${version} is not supported; this coordinator speaks ${PROTOCOL_VERSION}`,
      );
    }
  }

  /**
   * Identifies the caller and records that it is alive. Every call is also a
   * moment to act on what the clock now says about the others (an open round
   * whose awaited members all went gone closes here, not only on its timer).
   */
  #authenticate(req: M.Credentials): ClientRecord {
    this.#checkProtocol(req.protocolVersion);
    const client = this.#registry.authenticate(req.clientId, req.clientToken);
    const now = this.#now();
    const before = this.#registry.touch(client.id, now);
    if (before !== 'alive') {
      this.#log.info({ event: 'client_back', clientId: client.id, was: before }, `client ${client.id} is back (was ${before})`);
      // One more alive client may be what a round needs to open.
      this.#maybeOpenRound();
    }
    if (this.#round !== null) this.#settle(this.#round);
    return client;
  }

  /**
   * Enrolls a client. `peer` is the caller's address (gRPC): its join
   * attempts, good token or not, are rate-limited per address (joins.perPeer);
   * in-process callers pass none. Then the token, then joins.maxClients.
   */
  join(req: M.JoinRequest, peer?: string): M.JoinResponse {
    this.#checkProtocol(req.protocolVersion);
    const now = this.#now();
    const perPeer = this.#config.joins.perPeer;
    const wait = peer === undefined || this.#joinRate === undefined ? 0 : this.#joinRate.take(peer, now);
    if (wait > 0 && perPeer !== 'off') {
      throw exhausted(
        'join_rate',
        `too many joins from ${peer}: at most ${perPeer.burst} at once, then ${perPeer.perSecond} per second (joins.perPeer); retry in ${wait} ms`,
        wait,
      );
    }
    const { record, token } = this.#registry.enroll(
      req.enrollmentToken,
      req.clientName,
      req.numExamples,
      now,
      this.#config.joins.maxClients,
    );
    this.#store.saveClient(record);
    this.#metrics.clientsRegistered.set(this.#registry.activeCount());
    this.#log.info({ event: 'join', clientId: record.id, name: req.clientName }, `client ${record.id} joined`);
    this.#maybeOpenRound();
    this.#changed();
    return {
      protocolVersion: PROTOCOL_VERSION,
      clientId: record.id,
      clientToken: token,
      manifest: this.manifest.map((t) => ({ name: t.name, shape: [...t.shape], prunable: t.prunable })),
      configJson: this.#configJson,
    };
  }

  heartbeat(req: M.HeartbeatRequest): M.HeartbeatResponse {
    const client = this.#authenticate(req);
    const r = this.#round;
    return {
      currentRound: r?.id ?? this.#lastRound,
      taskAvailable: r !== null && r.members.has(client.id) && !r.hasReported(client.id),
      finished: this.#phase() === 'finished',
    };
  }

  /**
   * A client leaves for good. If it was awaited in the open round, the round
   * stops waiting for it: it may commit now, with the members that reported.
   */
  leave(req: M.LeaveRequest): M.LeaveResponse {
    const client = this.#authenticate(req);
    this.#store.saveClient(this.#registry.leave(client.id));
    this.#metrics.clientsRegistered.set(this.#registry.activeCount());
    this.#log.info({ event: 'leave', clientId: client.id, reason: req.reason }, `client ${client.id} left`);
    if (this.#round !== null) this.#settle(this.#round);
    this.#changed();
    return {};
  }

  /**
   * The client's task: global values at its own kept positions, or the dense
   * model when its declared mask version is not the one the server holds.
   * Once every configured round is committed, the answer says `finished`; it
   * keeps the usual retryAfterMs so a client that predates the flag polls at
   * the configured pace rather than spinning.
   */
  task(req: M.TaskRequest): PreparedTask {
    const client = this.#authenticate(req);
    const r = this.#round;
    const noTask = (): PreparedTask => ({
      header: {
        protocolVersion: PROTOCOL_VERSION,
        hasTask: false,
        retryAfterMs: this.#config.retryAfterMs,
        roundId: r?.id ?? this.#lastRound,
        configJson: '',
        dense: false,
        maskVersion: client.maskVersion,
        tensorCount: 0,
        finished: this.#phase() === 'finished',
      },
      tensors: [],
    });
    if (r === null || !r.members.has(client.id) || r.hasReported(client.id)) return noTask();
    const encoding = requestedValueEncoding(req.valueEncoding);
    const layout: TaskLayout =
      req.maskVersion === 0 || req.maskVersion !== client.maskVersion
        ? { kind: 'dense' }
        : { kind: 'sparse', masks: client.masks };
    const tensors: M.SparseTensor[] = [];
    for (const spec of this.manifest) {
      const values = this.#global.get(spec.name) as Float32Array;
      tensors.push(encodeTaskTensor(spec, values, layout, encoding));
    }
    r.countDense('down', this.#denseBytes);
    this.#metrics.denseEquivalentBytes.inc({ direction: 'down' }, this.#denseBytes);
    return {
      header: {
        protocolVersion: PROTOCOL_VERSION,
        hasTask: true,
        retryAfterMs: 0,
        roundId: r.id,
        configJson: this.#configJson,
        dense: layout.kind === 'dense',
        maskVersion: client.maskVersion,
        tensorCount: tensors.length,
        finished: false,
      },
      tensors,
    };
  }

  /**
   * Checks the header before any tensor is read: protocol, identity, round,
   * membership. Returns the receipt of the client's upload accepted earlier
   * for this round, if any: this upload is then a retry, acknowledged only if
   * it is the same update (pushUpdate compares them).
   */
  checkUpdateHeader(header: M.UpdateHeader): { client: ClientRecord; receipt: UploadReceipt | undefined } {
    const client = this.#authenticate(header);
    const r = this.#round;
    if (header.roundId === this.#lastRound && this.#lastReceipts.has(client.id)) {
      // A retry whose first attempt completed the round (the ack was lost on the way).
      return { client, receipt: this.#lastReceipts.get(client.id) };
    }
    if (r === null || header.roundId !== r.id) {
      if (header.roundId <= this.#lastRound) {
        throw precondition('round_closed', `round ${header.roundId} is closed (last committed round is ${this.#lastRound})`);
      }
      throw precondition(
        'round_not_open',
        `round ${header.roundId} is not open (${r === null ? 'no round is open' : `round ${r.id} is open`})`,
      );
    }
    if (!r.members.has(client.id)) {
      throw precondition('not_member', `client ${client.id} is not a member of round ${r.id}`);
    }
    return { client, receipt: r.receiptOf(client.id) };
  }

  /**
   * Validates a whole update (validateUpdate), then folds it. Nothing is
   * applied unless every check passes. A retry of an accepted upload (the ack
   * was lost) gets the same ack and is not folded again, but only when it is
   * the same update (uploadDigest): one with other content is refused with
   * FAILED_PRECONDITION, since it would never be applied.
   *
   * `wire`: the bytes the upload call read (the gRPC handler's count; absent
   * for a caller with no wire). An accepted upload's call (those bytes up, the
   * ack down) is counted into its round here, before the round can commit:
   * counted when the call ends, the upload that completes a round would land
   * after the commit, outside the round it belongs to, and its ack too. The
   * handler then reports the call with recordUploadCall.
   */
  pushUpdate(header: M.UpdateHeader, tensors: readonly M.SparseTensor[], wire?: { readonly upBytes: number }): M.UpdateAck {
    const { client, receipt } = this.checkUpdateHeader(header);
    const digest = uploadDigest(header, tensors);
    if (receipt !== undefined) {
      if (receipt.digest !== digest) {
        throw precondition(
          'retry_mismatch',
          `client ${client.id} already reported an update for round ${header.roundId}, and this one differs from it; ` +
            'a retry must resend the same update',
        );
      }
      return { ...receipt.ack };
    }
    const r = this.#round as Round;
    const update = validateUpdate(header, tensors, {
      specs: this.#specs,
      limits: this.#config,
      held: { maskVersion: client.maskVersion, masks: client.masks },
    });
    this.#aggregator.add(update);
    if (update.clippedFrom !== null) {
      this.#metrics.updatesClipped.inc();
      this.#log.warn(
        { event: 'clipped', clientId: client.id, round: r.id, norm: update.clippedFrom, bound: this.#config.updateNormBound },
        `update of ${client.id} for round ${r.id} clipped from L2 norm ${update.clippedFrom.toPrecision(6)} to ${this.#config.updateNormBound}`,
      );
    }
    const change = update.maskChange;
    const maskVersion = change.kind === 'changed' ? change.version : client.maskVersion;
    const ack = { accepted: true as const, message: `update for round ${r.id} accepted`, maskVersion };
    r.accept(
      client.id,
      { ack, digest },
      update.metrics,
      change.kind === 'changed'
        ? { kind: 'changed', version: change.version, masks: masksAfter(client.masks, update) }
        : { kind: 'unchanged' },
    );
    if (wire !== undefined) {
      r.addTraffic(client.id, 'up', wire.upBytes);
      r.addTraffic(client.id, 'down', codecs.UpdateAck.encode(ack).length);
    }
    r.countDense('up', this.#denseBytes);
    this.#metrics.denseEquivalentBytes.inc({ direction: 'up' }, this.#denseBytes);
    this.#metrics.updatesAccepted.inc();
    this.#metrics.roundReporters.set(r.reported);
    this.#settle(r);
    // A commit inside settle already told the listeners.
    if (this.#round === r) this.#changed();
    return { ...ack };
  }

  // ------------------------------------------------------------------ wire accounting

  /**
   * The bytes of one finished call, by outcome. Only accepted calls count as
   * a round member's traffic (what the round reports as moved): the repeat of
   * an accepted upload and a refused or cut-off call are counted apart, in
   * `subfed_call_bytes_total`, so retries do not inflate the traffic.
   */
  recordCall(clientId: string | undefined, outcome: CallOutcome, bytes: { up: number; down: number }): void {
    this.#countCallBytes(outcome, bytes);
    if (outcome === 'accepted') {
      this.#recordTraffic('up', clientId, bytes.up);
      this.#recordTraffic('down', clientId, bytes.down);
    }
  }

  /**
   * recordCall for an acknowledged PushUpdate call (accepted, or the repeat of
   * an accepted upload): pushUpdate already put an accepted upload and its ack
   * into the round's traffic, so only the call's bytes by outcome are counted
   * here. A refused upload goes through recordCall like any refused call.
   */
  recordUploadCall(outcome: Exclude<CallOutcome, 'refused'>, bytes: { up: number; down: number }): void {
    this.#countCallBytes(outcome, bytes);
  }

  #countCallBytes(outcome: CallOutcome, bytes: { up: number; down: number }): void {
    for (const direction of ['up', 'down'] as const) {
      if (bytes[direction] > 0) this.#metrics.callBytes.inc({ direction, outcome }, bytes[direction]);
    }
  }

  /** Bytes a client moved; counted into the open round when the client is a member. */
  #recordTraffic(direction: WireDirection, clientId: string | undefined, bytes: number): void {
    const r = this.#round;
    if (clientId === undefined || bytes === 0 || r === null || !r.members.has(clientId)) return;
    r.addTraffic(clientId, direction, bytes);
  }

  /** Counts a refused request (metrics + one log line with client id and reason). */
  recordReject(clientId: string | undefined, err: CoordinatorError | { reason: string; message: string; code: string }): void {
    this.#metrics.rejected.inc({ reason: err.reason });
    // A refusal is the client's fault (warn); 'internal' is ours (error).
    this.#log[err.reason === 'internal' ? 'error' : 'warn'](
      { event: 'reject', clientId: clientId ?? null, code: err.code, reason: err.reason },
      `rejected request from ${clientId ?? 'unknown client'}: ${err.message}`,
    );
  }

  // ------------------------------------------------------------------ round lifecycle

  #maybeOpenRound(): void {
    if (this.#stopped || this.#round !== null) return;
    if (this.#lastRound >= this.#config.rounds) return;
    // minClients gates the start on enrolments, as it always did; liveness only narrows whom a round samples.
    if (this.#registry.activeCount() < this.#config.minClients) return;
    const now = this.#now();
    const alive = this.#registry.sampleable(now);
    // Nobody to sample: the next client to call (and so turn alive) opens the round.
    if (alive.length === 0) return;
    const id = this.#lastRound + 1;
    const attempt = this.#nextAttempt;
    const members = sampleMembers(alive, this.#config.fraction, this.#config.seed, id, attempt);
    const r = new Round(id, attempt, members, now, this.#config.roundDeadlineMs);
    this.#round = r;
    this.#aggregator.reset();
    this.#timer = setTimeout(() => this.#onDeadline(r), this.#config.roundDeadlineMs);
    this.#watchAwaited(r, members, now);
    this.#metrics.openRound.set(id);
    this.#metrics.roundMembers.set(members.length);
    this.#metrics.roundReporters.set(0);
    const { stale, gone } = this.#registry.countByState(now);
    this.#log.info(
      { event: 'round_open', round: id, attempt, members: members.length, stale, gone },
      `round ${id} open (attempt ${attempt}) with ${members.length} members` +
        (stale + gone > 0 ? `; ${stale} stale and ${gone} gone clients not sampled` : ''),
    );
  }

  /**
   * Closes `r` early when it waits for nobody: commits when someone reported,
   * abandons (and resamples) when every member left or went gone without a
   * report. Otherwise arms the check for the next member that could go gone.
   */
  #settle(r: Round): void {
    if (this.#round !== r || this.#stopped) return;
    const now = this.#now();
    const awaited = this.#awaited(r, now);
    if (awaited.length > 0) {
      this.#watchAwaited(r, awaited, now);
      return;
    }
    if (r.reported > 0) this.#commit(r);
    else this.#abandon(r, 0);
  }

  /**
   * Arms one timer at the moment the first of `awaited` would turn gone (if
   * that comes before the deadline, which decides otherwise). A member that
   * calls in the meantime only makes the timer early: it finds nobody gone and
   * re-arms.
   */
  #watchAwaited(r: Round, awaited: readonly string[], now: number): void {
    clearTimeout(this.#livenessTimer);
    this.#livenessTimer = undefined;
    let first = Infinity;
    for (const id of awaited) first = Math.min(first, this.#registry.goneAt(id));
    if (first >= r.deadlineAt) return;
    const delay = Math.min(Math.max(first - now, 1), MAX_TIMER_MS);
    this.#livenessTimer = setTimeout(() => this.#settle(r), delay);
  }

  #onDeadline(r: Round): void {
    if (this.#round !== r || this.#stopped) return;
    const need = this.#quorum(r, this.#now());
    if (r.reported >= need) {
      this.#commit(r);
      return;
    }
    this.#abandon(r, need);
  }

  #abandon(r: Round, need: number): void {
    this.#closeRound();
    this.#store.saveMasks(this.#adoptMasks(r));
    this.#aggregator.reset();
    this.#metrics.roundsAbandoned.inc();
    this.#clearRoundGauges();
    const why =
      need === 0
        ? `every member left or is gone, ${r.reported} of ${r.members.size} reported`
        : `${r.reported} of ${r.members.size} reported, quorum ${need}`;
    this.#log.warn(
      { event: 'round_abandoned', round: r.id, attempt: r.attempt, reported: r.reported, quorum: need },
      `round ${r.id} attempt ${r.attempt} abandoned: ${why}; resampling`,
    );
    this.#nextAttempt = r.attempt + 1;
    this.#maybeOpenRound();
    this.#changed();
  }

  #clearRoundGauges(): void {
    this.#metrics.openRound.set(0);
    this.#metrics.roundMembers.set(0);
    this.#metrics.roundReporters.set(0);
  }

  #closeRound(): void {
    clearTimeout(this.#timer);
    clearTimeout(this.#livenessTimer);
    this.#livenessTimer = undefined;
    this.#round = null;
  }

  /** The reporters' new masks become the registry's; returns them for the store. */
  #adoptMasks(r: Round): AdoptedMasks[] {
    const changes: AdoptedMasks[] = [];
    for (const change of r.adoptedMasks) {
      if (this.#registry.get(change.clientId) === undefined) continue;
      this.#registry.adoptMasks(change.clientId, change.version, change.masks);
      changes.push(change);
    }
    return changes;
  }

  #commit(r: Round): void {
    this.#closeRound();
    const t0 = process.hrtime.bigint();
    this.#aggregator.commit(this.#global);
    const aggregationSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const changes = this.#adoptMasks(r);
    const summary: RoundSummary = {
      round: r.id,
      attempts: r.attempt + 1,
      committedAt: this.#now(),
      members: [...r.members],
      reporters: [...r.receipts.keys()],
      metrics: Object.fromEntries(r.metrics),
      bytesUp: r.bytesUp,
      bytesDown: r.bytesDown,
      traffic: Object.fromEntries([...r.traffic].map(([id, t]) => [id, { up: t.up, down: t.down }])),
      denseBytesUp: r.denseBytesUp,
      denseBytesDown: r.denseBytesDown,
      aggregationSeconds,
    };
    this.#store.commitRound(summary, this.#global, changes);
    this.#registry.recordCommitted(summary);
    this.#lastRound = r.id;
    this.#lastReceipts = r.receipts;
    this.#nextAttempt = 0;
    this.#metrics.roundsCommitted.inc();
    this.#metrics.aggregationSeconds.observe(aggregationSeconds);
    this.#metrics.lastCommittedRound.set(r.id);
    this.#clearRoundGauges();
    const reports = [...r.metrics.values()];
    if (reports.length > 0) {
      const mean = (f: (m: (typeof reports)[number]) => number) => reports.reduce((sum, m) => sum + f(m), 0) / reports.length;
      this.#metrics.accuracy.set(
        { model: 'trained' },
        mean((m) => m.localAccuracy),
      );
      this.#metrics.accuracy.set(
        { model: 'received' },
        mean((m) => m.receivedAccuracy),
      );
    }
    this.#log.info(
      {
        event: 'round_commit',
        round: r.id,
        attempts: summary.attempts,
        members: r.members.size,
        reported: r.reported,
        bytesUp: r.bytesUp,
        bytesDown: r.bytesDown,
        denseBytesUp: r.denseBytesUp,
        denseBytesDown: r.denseBytesDown,
        aggregationSeconds,
      },
      `round ${r.id} committed with ${r.reported}/${r.members.size} reports`,
    );
    for (const listener of this.#listeners) listener(summary);
    if (this.#lastRound >= this.#config.rounds) {
      this.#log.info({ event: 'finished', rounds: this.#lastRound }, `all ${this.#lastRound} rounds committed`);
    }
    this.#maybeOpenRound();
    this.#changed();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#livenessTimer);
    this.#store.close();
  }
}
