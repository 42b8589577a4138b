import type { Logger } from 'pino';
import type * as M from '../proto/messages.js';
import { PROTOCOL_VERSION } from '../proto/rpc.js';
import type { CoordinatorConfig } from './config.js';
import { CoordinatorError, invalid, precondition } from './errors.js';
import { IntersectionAggregator } from './aggregate.js';
import type { Mask } from '../proto/mask.js';
import type { CoordinatorMetrics } from './metrics.js';
import type { MaskMap, TensorMap, TensorSpec } from './model.js';
import { cloneTensors, totalElements, validateInitialModel } from './model.js';
import { Registry, type ClientRecord } from './registry.js';
import { Round, quorumCount, sampleMembers, type UploadReceipt } from './rounds.js';
import { CoordinatorStore, type MaskChange, type RoundSummary } from './store.js';
import { decodeUpdateTensor, encodeTaskTensor, requestedValueEncoding, type DecodedUpdateTensor } from './wire.js';

export type CoordinatorPhase = 'waiting' | 'open' | 'finished';

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

interface PendingMasks {
  version: number;
  masks: MaskMap;
}

type RoundListener = (summary: RoundSummary) => void;

/** A registered client, as the dashboard's table lists it. */
export interface ClientInfo {
  readonly id: string;
  readonly name: string;
  readonly numExamples: number;
  /** false once it left. */
  readonly active: boolean;
}

/**
 * The coordinator's state machine, independent of the transport: registry,
 * round lifecycle (sample, deadline, quorum, commit or abandon), validation of
 * whole updates and the intersection aggregate. gRPC and HTTP are thin layers
 * over this class; tests drive it directly too.
 */
export class Coordinator {
  readonly manifest: readonly TensorSpec[];
  readonly #specs: Map<string, TensorSpec>;
  readonly #config: CoordinatorConfig;
  readonly #log: Logger;
  readonly #metrics: CoordinatorMetrics;
  readonly #store: CoordinatorStore;
  readonly #registry: Registry;
  readonly #aggregator: IntersectionAggregator;
  readonly #global: TensorMap;
  readonly #denseBytes: number;
  readonly #configJson: string;
  readonly #listeners = new Set<RoundListener>();
  readonly #changeListeners = new Set<() => void>();
  #lastRound: number;
  #round: Round | null = null;
  #pending = new Map<string, PendingMasks>();
  /** Receipts of the last committed round, so a retry after the commit gets its ack again. */
  #lastReceipts: ReadonlyMap<string, UploadReceipt> = new Map();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(
    config: CoordinatorConfig,
    model: { manifest: readonly TensorSpec[]; initial: TensorMap },
    deps: { logger: Logger; metrics: CoordinatorMetrics },
  ) {
    validateInitialModel(model.manifest, model.initial);
    this.manifest = model.manifest.map((t) => ({ name: t.name, shape: [...t.shape], prunable: t.prunable }));
    this.#specs = new Map(this.manifest.map((t) => [t.name, t]));
    this.#config = config;
    this.#log = deps.logger;
    this.#metrics = deps.metrics;
    this.#denseBytes = 4 * totalElements(this.manifest);
    this.#configJson = JSON.stringify(config.training);
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
    this.#registry = new Registry(config.enrollmentToken);
    for (const c of state.clients) this.#registry.restore(c);
    this.#aggregator = new IntersectionAggregator(this.manifest);
    this.#metrics.clientsRegistered.set(this.#registry.activeCount());
    this.#metrics.lastCommittedRound.set(state.lastRound);
    if (state.lastRound > 0 || state.clients.length > 0) {
      this.#log.info(
        { event: 'resume', lastRound: state.lastRound, clients: state.clients.length },
        `resumed after round ${state.lastRound} with ${state.clients.length} clients`,
      );
    }
    this.#maybeOpenRound();
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
              quorum: quorumCount(this.#config.quorum, r.members.size),
              deadlineAt: r.deadlineAt,
            },
      clientsRegistered: this.#registry.size,
      clientsActive: this.#registry.activeCount(),
    };
  }

  /** A copy of the global model. */
  globalModel(): TensorMap {
    return cloneTensors(this.#global);
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

  /** Every registered client, in join order. */
  clients(): ClientInfo[] {
    return [...this.#registry.all()]
      .sort((a, b) => a.seq - b.seq)
      .map((c) => ({ id: c.id, name: c.name, numExamples: c.numExamples, active: c.active }));
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

  /** Called after every commit, inside the call that completed the round. */
  onRoundCommitted(listener: RoundListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #phase(): CoordinatorPhase {
    if (this.#round !== null) return 'open';
    return this.#lastRound >= this.#config.rounds ? 'finished' : 'waiting';
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

  #authenticate(req: M.Credentials): ClientRecord {
    this.#checkProtocol(req.protocolVersion);
    return this.#registry.authenticate(req.clientId, req.clientToken);
  }

  join(req: M.JoinRequest): M.JoinResponse {
    this.#checkProtocol(req.protocolVersion);
    const { record, token } = this.#registry.enroll(req.enrollmentToken, req.clientName, req.numExamples);
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
      taskAvailable: r !== null && r.members.has(client.id) && !r.receipts.has(client.id),
      finished: this.#phase() === 'finished',
    };
  }

  leave(req: M.LeaveRequest): M.LeaveResponse {
    const client = this.#authenticate(req);
    client.active = false;
    this.#store.saveClient(client);
    this.#metrics.clientsRegistered.set(this.#registry.activeCount());
    this.#log.info({ event: 'leave', clientId: client.id, reason: req.reason }, `client ${client.id} left`);
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
    if (r === null || !r.members.has(client.id) || r.receipts.has(client.id)) return noTask();
    const encoding = requestedValueEncoding(req.valueEncoding);
    const dense = req.maskVersion === 0 || req.maskVersion !== client.maskVersion;
    const tensors: M.SparseTensor[] = [];
    for (const spec of this.manifest) {
      const values = this.#global.get(spec.name) as Float32Array;
      tensors.push(encodeTaskTensor(spec, values, dense, client.masks.get(spec.name) ?? null, encoding));
    }
    r.denseBytesDown += this.#denseBytes;
    this.#metrics.denseEquivalentBytes.inc({ direction: 'down' }, this.#denseBytes);
    return {
      header: {
        protocolVersion: PROTOCOL_VERSION,
        hasTask: true,
        retryAfterMs: 0,
        roundId: r.id,
        configJson: this.#configJson,
        dense,
        maskVersion: client.maskVersion,
        tensorCount: tensors.length,
        finished: false,
      },
      tensors,
    };
  }

  /**
   * Checks the header before any tensor is read: protocol, identity, round,
   * membership. Returns the receipt of an earlier identical upload (retry).
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
    return { client, receipt: r.receipts.get(client.id) };
  }

  /**
   * Validates a whole update, then folds it. Nothing is applied unless every
   * check passes. A retry of an accepted upload gets the same receipt and is
   * not folded again.
   */
  pushUpdate(header: M.UpdateHeader, tensors: readonly M.SparseTensor[]): M.UpdateAck {
    const { client, receipt } = this.checkUpdateHeader(header);
    if (receipt !== undefined) return { ...receipt };
    const r = this.#round as Round;
    const decoded = this.#validate(client, header, tensors);

    const weight = this.#config.weighting === 'examples' ? header.numExamples : 1;
    const newMasks = new Map<string, Mask>(client.masks);
    for (const t of decoded) {
      if (t.mask === null) newMasks.delete(t.name);
      else newMasks.set(t.name, t.mask);
      this.#aggregator.foldTensor(t.name, t.values, t.mask === null ? null : t.mask.keptIndices(), weight);
    }
    this.#aggregator.countUpdate();
    const maskVersion = header.maskChanged ? header.newMaskVersion : client.maskVersion;
    if (header.maskChanged) {
      this.#pending.set(client.id, { version: maskVersion, masks: newMasks });
    }
    const ack: UploadReceipt = { accepted: true, message: `update for round ${r.id} accepted`, maskVersion };
    r.receipts.set(client.id, ack);
    const m = header.metrics;
    r.metrics.set(client.id, {
      numExamples: header.numExamples,
      loss: m?.loss ?? 0,
      localAccuracy: m?.localAccuracy ?? 0,
      sparsity: m?.sparsity ?? 0,
      receivedAccuracy: m?.receivedAccuracy ?? 0,
      ...(m !== null && m.channelsKept.length > 0 ? { channelsKept: [...m.channelsKept] } : {}),
    });
    r.denseBytesUp += this.#denseBytes;
    this.#metrics.denseEquivalentBytes.inc({ direction: 'up' }, this.#denseBytes);
    this.#metrics.updatesAccepted.inc();
    this.#metrics.roundReporters.set(r.reported);
    if (r.complete) this.#commit(r);
    else this.#changed();
    return { ...ack };
  }

  #validate(client: ClientRecord, header: M.UpdateHeader, tensors: readonly M.SparseTensor[]): DecodedUpdateTensor[] {
    if (header.tensorCount !== tensors.length) {
      throw invalid('tensor_count', `header announces ${header.tensorCount} tensors, the stream carried ${tensors.length}`);
    }
    if (this.#config.weighting === 'examples' && header.numExamples < 1) {
      throw invalid('num_examples', `num_examples must be at least 1, got ${header.numExamples}`);
    }
    if (header.numExamples > this.#config.maxExamples) {
      throw invalid('num_examples', `num_examples ${header.numExamples} exceeds the limit of ${this.#config.maxExamples}`);
    }
    const channels = header.metrics?.channelsKept.length ?? 0;
    if (channels > this.manifest.length) {
      throw invalid('metrics', `metrics.channels_kept has ${channels} entries; the model has ${this.manifest.length} tensors`);
    }
    if (header.maskChanged && header.newMaskVersion <= client.maskVersion) {
      throw invalid(
        'mask_version',
        `new_mask_version ${header.newMaskVersion} must be greater than the held mask version ${client.maskVersion}`,
      );
    }
    const baseMatches = header.baseMaskVersion === client.maskVersion;
    const seen = new Set<string>();
    const out: DecodedUpdateTensor[] = [];
    let squares = 0;
    for (const t of tensors) {
      const spec = this.#specs.get(t.name);
      if (spec === undefined) throw invalid('unknown_tensor', `unknown tensor "${t.name}"`);
      if (seen.has(t.name)) throw invalid('duplicate_tensor', `tensor "${t.name}" appears more than once`);
      seen.add(t.name);
      const reference = client.masks.get(t.name) ?? null;
      const d = decodeUpdateTensor(t, spec, reference);
      if (d.usesReference && !baseMatches) {
        throw precondition(
          'mask_version_mismatch',
          `tensor "${t.name}" refers to mask version ${header.baseMaskVersion}, the server holds ${client.maskVersion}; pull again`,
        );
      }
      const mask = d.mask === null || d.mask.isFull ? null : d.mask;
      const unchanged = mask === null ? reference === null : reference !== null && mask.equals(reference);
      if (!header.maskChanged && !unchanged) {
        throw invalid('mask_changed', `tensor "${t.name}" carries a new mask but mask_changed is false`);
      }
      const v = d.values;
      for (let i = 0; i < v.length; i++) {
        const x = v[i];
        if (!Number.isFinite(x)) {
          throw invalid('non_finite', `tensor "${t.name}" has a non-finite value (${x}) at kept entry ${i}`);
        }
        squares += x * x;
      }
      // An unchanged mask keeps the held object, whose kept-index list is derived already.
      out.push({ ...d, mask: unchanged ? reference : mask });
    }
    const norm = Math.sqrt(squares);
    if (norm > this.#config.updateNormBound) {
      throw invalid('norm_bound', `update L2 norm ${norm.toPrecision(6)} exceeds the bound ${this.#config.updateNormBound}`);
    }
    return out;
  }

  // ------------------------------------------------------------------ wire accounting

  /** Bytes a client moved; counted into the open round when the client is a member. */
  recordWire(direction: 'up' | 'down', clientId: string | undefined, bytes: number): void {
    const r = this.#round;
    if (clientId === undefined || r === null || !r.members.has(clientId)) return;
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

  #maybeOpenRound(attempt = 0): void {
    if (this.#stopped || this.#round !== null) return;
    if (this.#lastRound >= this.#config.rounds) return;
    const active = this.#registry.activeIds();
    if (active.length < this.#config.minClients) return;
    const id = this.#lastRound + 1;
    const members = sampleMembers(active, this.#config.frac, this.#config.seed, id, attempt);
    const r = new Round(id, attempt, members, Date.now(), this.#config.roundDeadlineMs);
    this.#round = r;
    this.#aggregator.reset();
    this.#pending = new Map();
    this.#timer = setTimeout(() => this.#onDeadline(r), this.#config.roundDeadlineMs);
    this.#metrics.openRound.set(id);
    this.#metrics.roundMembers.set(members.length);
    this.#metrics.roundReporters.set(0);
    this.#log.info(
      { event: 'round_open', round: id, attempt, members: members.length },
      `round ${id} open (attempt ${attempt}) with ${members.length} members`,
    );
  }

  #onDeadline(r: Round): void {
    if (this.#round !== r || this.#stopped) return;
    const need = quorumCount(this.#config.quorum, r.members.size);
    if (r.reported >= need) {
      this.#commit(r);
      return;
    }
    this.#round = null;
    const changes = this.#applyPendingMasks();
    this.#store.saveMasks(changes);
    this.#aggregator.reset();
    this.#metrics.roundsAbandoned.inc();
    this.#clearRoundGauges();
    this.#log.warn(
      { event: 'round_abandoned', round: r.id, attempt: r.attempt, reported: r.reported, quorum: need },
      `round ${r.id} attempt ${r.attempt} abandoned: ${r.reported} of ${r.members.size} reported, quorum ${need}; resampling`,
    );
    this.#maybeOpenRound(r.attempt + 1);
    this.#changed();
  }

  #clearRoundGauges(): void {
    this.#metrics.openRound.set(0);
    this.#metrics.roundMembers.set(0);
    this.#metrics.roundReporters.set(0);
  }

  #applyPendingMasks(): MaskChange[] {
    const changes: MaskChange[] = [];
    for (const [clientId, p] of this.#pending) {
      const c = this.#registry.get(clientId);
      if (c === undefined) continue;
      c.maskVersion = p.version;
      c.masks = p.masks;
      changes.push({ clientId, version: p.version, masks: p.masks });
    }
    this.#pending = new Map();
    return changes;
  }

  #commit(r: Round): void {
    clearTimeout(this.#timer);
    const t0 = process.hrtime.bigint();
    this.#aggregator.commit(this.#global);
    const aggregationSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const changes = this.#applyPendingMasks();
    const summary: RoundSummary = {
      round: r.id,
      attempts: r.attempt + 1,
      committedAt: Date.now(),
      members: [...r.members],
      reporters: [...r.receipts.keys()],
      metrics: Object.fromEntries(r.metrics),
      bytesUp: r.bytesUp,
      bytesDown: r.bytesDown,
      traffic: Object.fromEntries(r.traffic),
      denseBytesUp: r.denseBytesUp,
      denseBytesDown: r.denseBytesDown,
      aggregationSeconds,
    };
    this.#store.commitRound(summary, this.#global, changes);
    this.#lastRound = r.id;
    this.#lastReceipts = r.receipts;
    this.#round = null;
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
    this.#store.close();
  }
}
