/**
 * The simulator's log: pino, readable lines on a terminal (pino-pretty) and
 * one JSON object per line otherwise (a file, a pipe, CI), on stderr; stdout
 * carries only the results table.
 */
import { pino, type Logger } from 'pino';
import pinoPretty from 'pino-pretty';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/** A logger on stderr at `level`: pretty on a terminal, JSON lines otherwise. */
export function createSimLogger(level: LogLevel, stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr): Logger {
  const options = { level, base: { service: 'subfed-sim' } };
  if (stream.isTTY !== true) return pino(options, stream);
  return pino(
    options,
    pinoPretty({ colorize: true, sync: true, destination: stream, translateTime: 'HH:MM:ss', ignore: 'pid,hostname,service' }),
  );
}
