/**
 * The client's log: pino on stderr, readable lines on a terminal (pino-pretty,
 * when installed) and one JSON object per line otherwise (a file, a pipe,
 * journald, CI). Each event of a run is one record: `event` (its kind) and its
 * fields, plus a readable `msg`. Secrets are redacted by path as a second
 * line of defence; the first is that no event carries one.
 */
import { pino, type DestinationStream, type Level, type Logger } from 'pino';
import type { LogLevel } from '../proto/log-levels.js';
import type { ClientEvent, Traffic } from './events.js';

export type { Logger };

/** Field names that hold secrets, wherever they appear in a record. */
const SECRET_PATHS = ['token', 'enrollmentToken', 'clientToken', '*.token', '*.enrollmentToken', '*.clientToken'];

export interface ClientLoggerOptions {
  /** Default stderr. */
  readonly stream?: NodeJS.WritableStream & { readonly isTTY?: boolean };
  /** Default: readable when the stream is a terminal. */
  readonly pretty?: boolean;
}

/** A logger at `level`: pretty on a terminal (when pino-pretty loads), JSON lines otherwise. */
export async function createClientLogger(level: LogLevel, opts: ClientLoggerOptions = {}): Promise<Logger> {
  const stream = opts.stream ?? process.stderr;
  const options = {
    level,
    base: { service: 'subfed-client' },
    redact: { paths: SECRET_PATHS, censor: '[redacted]' },
  };
  if (opts.pretty ?? stream.isTTY === true) {
    const pretty = await loadPretty();
    if (pretty !== undefined) {
      return pino(
        options,
        pretty({
          destination: stream,
          sync: true,
          colorize: stream.isTTY === true,
          translateTime: 'SYS:HH:MM:ss',
          ignore: 'pid,hostname,service',
          // The message says it all on a terminal; the fields are in the JSON form.
          hideObject: true,
        }),
      );
    }
  }
  // stderr written synchronously, so the last lines before an exit are never lost.
  const destination: DestinationStream = stream === process.stderr ? pino.destination({ dest: 2, sync: true }) : stream;
  return pino(options, destination);
}

type PrettyFactory = (options: Record<string, unknown>) => DestinationStream;

/** pino-pretty is an optional dependency: without it, a terminal gets JSON too. */
async function loadPretty(): Promise<PrettyFactory | undefined> {
  try {
    const module = (await import('pino-pretty')) as unknown as { default: PrettyFactory };
    return module.default;
  } catch {
    return undefined;
  }
}

/** Writes one event as one record at its level. */
export function logEvent(logger: Logger, event: ClientEvent): void {
  const { kind, ...fields } = event;
  logger[eventLevel(event)]({ event: kind, ...fields }, eventMessage(event));
}

/** How much an event matters: trouble is a warning, a repeated wait is detail. */
export function eventLevel(event: ClientEvent): Level {
  switch (event.kind) {
    case 'warning':
    case 'reconnecting':
    case 'refused':
    case 'leave-failed':
    case 'heartbeat-failed':
      return 'warn';
    case 'waiting':
      return event.consecutive === 1 ? 'info' : 'debug';
    case 'backend-ready':
    case 'data-loaded':
    case 'data-converted':
    case 'joined':
    case 'resumed':
    case 'training-locally':
    case 'state-restored':
    case 'rejoined':
    case 'heartbeat-restored':
    case 'round-started':
    case 'note':
    case 'trained':
    case 'pushed':
    case 'left':
    case 'finished':
    case 'stopped':
      return 'info';
  }
}

/** The readable message of an event. */
export function eventMessage(event: ClientEvent): string {
  switch (event.kind) {
    case 'warning':
      return event.text;
    case 'backend-ready':
      return `tfjs backend: ${event.backend}`;
    case 'data-loaded': {
      const where = event.layout === 'split' ? 'train/ and test/' : 'split 80/20';
      return (
        `data: ${event.trainExamples} training and ${event.testExamples} test examples, ${describeExample(event.shape)}, ` +
        `${FORMAT_WORDS[event.format]} from ${event.folder} (${where})`
      );
    }
    case 'data-converted':
      return `images converted from ${channelWords(event.fromChannels)} to ${channelWords(event.toChannels)} for model ${event.model}`;
    case 'joined':
      return `joined ${event.server} as ${event.clientId} (algorithm ${event.algorithm}, values ${event.values})`;
    case 'resumed':
      return `resuming as ${event.clientId} on ${event.server} (algorithm ${event.algorithm}, values ${event.values})`;
    case 'training-locally':
      return `training locally, no coordinator (algorithm ${event.algorithm}, model ${event.model})`;
    case 'state-restored':
      return `personal state from ${event.stateDir}: round ${event.round}, mask version ${event.maskVersion}`;
    case 'reconnecting':
      return `${event.call}: coordinator unavailable (${event.reason}); retrying in ${(event.delayMs / 1000).toFixed(1)} s`;
    case 'rejoined':
      return `${event.reason}: joined ${event.server} again as ${event.clientId} (was ${event.previousClientId}), personal state kept`;
    case 'heartbeat-failed':
      return `heartbeat failed (${event.reason}); rounds go on (said once until a heartbeat works again)`;
    case 'heartbeat-restored':
      return `heartbeats work again after ${event.failed} failed`;
    case 'waiting':
      return event.consecutive === 1
        ? `no task yet; asking again every ${event.retryAfterMs} ms`
        : `no task yet (${event.consecutive} asks in a row)`;
    case 'round-started':
      return event.received === 'nothing'
        ? `local round ${event.round}: training`
        : `round ${event.round}: received the ${event.received} model`;
    case 'note':
      return `  ${event.text}`;
    case 'trained': {
      const m = event.metrics;
      const channels = m.channelsKept !== undefined ? `, channels [${m.channelsKept.join(', ')}]` : '';
      return (
        `round ${event.round}: loss ${m.loss.toFixed(4)}, accuracy ${pct(m.accuracy)} (received ${pct(m.receivedAccuracy)}), ` +
        `sparsity ${pct(m.sparsity)}${channels}`
      );
    }
    case 'pushed':
      return `round ${event.round}: update accepted (mask version ${event.ack.maskVersion}); up ${event.bytesUp} B, down ${event.bytesDown} B so far${failedAttempts(event)}`;
    case 'refused':
      return `round ${event.round}: update refused (${event.reason}); pulling again`;
    case 'left':
      return `left ${event.server}`;
    case 'leave-failed':
      return `leaving ${event.server} failed (${event.reason}); the identity is forgotten all the same`;
    case 'finished':
      return (
        `training finished after round ${event.lastRound} (${event.roundsTrained} round(s) trained here); ` +
        `state saved in ${event.stateDir}; up ${event.bytesUp} B, down ${event.bytesDown} B${failedAttempts(event)}`
      );
    case 'stopped': {
      const why = event.reason === 'signal' ? 'stopped' : 'round limit reached';
      const saved = event.stateDir === undefined ? 'nothing to save' : `state saved in ${event.stateDir}`;
      return `${why} after ${event.roundsTrained} round(s); ${saved}`;
    }
  }
}

const FORMAT_WORDS: Record<Extract<ClientEvent, { kind: 'data-loaded' }>['format'], string> = {
  binary: 'IDX/CIFAR-10 files',
  'png-classes': 'PNG class folders',
  csv: 'CSV',
};

function describeExample(shape: Extract<ClientEvent, { kind: 'data-loaded' }>['shape']): string {
  switch (shape.kind) {
    case 'images':
      return `${shape.height}x${shape.width}x${shape.channels} images`;
    case 'features':
      return `${shape.features} features`;
  }
}

function channelWords(channels: number): string {
  return channels === 1 ? 'grey' : channels === 3 ? 'RGB' : `${channels} channels`;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

/** What failed attempts moved besides (retries during an outage, refusals), when anything. */
function failedAttempts(t: Traffic): string {
  if (t.failedBytesUp === 0 && t.failedBytesDown === 0) return '';
  return ` (and up ${t.failedBytesUp} B, down ${t.failedBytesDown} B in failed attempts)`;
}
