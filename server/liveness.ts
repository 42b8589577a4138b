/**
 * Who is alive, from when each client last called. A client is `alive` until
 * `staleAfterMs` of silence, then `stale` (not sampled: it may be busy or
 * slow, but new work should go to someone who answers), then `gone` after
 * `goneAfterMs` (not sampled, and no longer awaited by a round it is a member
 * of). Any authenticated call makes it alive again. `off` treats every
 * enrolled client as alive, whatever its silence (the simulator: its idle
 * clients never call between the rounds they are sampled for).
 */
export type LivenessPolicy = 'off' | { readonly staleAfterMs: number; readonly goneAfterMs: number };

export type Liveness = 'alive' | 'stale' | 'gone';

/** A registered client's state as the API and the gauges report it: `left` = it said Leave. */
export type ClientState = Liveness | 'left';

export const CLIENT_STATES: readonly ClientState[] = ['alive', 'stale', 'gone', 'left'];

/** The state after `silentMs` without a call. A clock that went back (negative silence) counts as just seen. */
export function livenessAfter(silentMs: number, policy: LivenessPolicy): Liveness {
  if (policy === 'off') return 'alive';
  if (silentMs >= policy.goneAfterMs) return 'gone';
  if (silentMs >= policy.staleAfterMs) return 'stale';
  return 'alive';
}
