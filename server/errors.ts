/**
 * Why the coordinator refused a request. Transport-neutral: the gRPC layer maps
 * `code` to a status, metrics count `reason`, and `message` names the problem.
 */
export type RejectCode =
  | 'INVALID_ARGUMENT'
  | 'UNAUTHENTICATED'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  /** A stream that made no progress for streams.idleMs. */
  | 'DEADLINE_EXCEEDED';

export class CoordinatorError extends Error {
  readonly code: RejectCode;
  /** Short stable tag for metrics labels and logs, e.g. `unknown_tensor`. */
  readonly reason: string;

  /**
   * For a refusal that passes (a rate or a capacity): when to try again. The
   * gRPC layer sends it as `grpc-retry-pushback-ms`, and subfed's client
   * retries such a refusal after that long.
   */
  readonly retryAfterMs: number | undefined;

  constructor(code: RejectCode, reason: string, message: string, retryAfterMs?: number) {
    super(message);
    this.name = 'CoordinatorError';
    this.code = code;
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

export const invalid = (reason: string, message: string): CoordinatorError =>
  new CoordinatorError('INVALID_ARGUMENT', reason, message);
export const unauthenticated = (reason: string, message: string): CoordinatorError =>
  new CoordinatorError('UNAUTHENTICATED', reason, message);
export const precondition = (reason: string, message: string): CoordinatorError =>
  new CoordinatorError('FAILED_PRECONDITION', reason, message);
export const exhausted = (reason: string, message: string, retryAfterMs?: number): CoordinatorError =>
  new CoordinatorError('RESOURCE_EXHAUSTED', reason, message, retryAfterMs);
