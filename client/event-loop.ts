/**
 * Local training is CPU-bound on the event loop: without a pause, a heartbeat
 * timer, a gRPC keepalive or a Ctrl-C handler waits until the whole round is
 * trained. A loop that awaits `breathe()` once per batch lets them run, at most
 * every `everyMs`, so the pauses cost nothing measurable.
 */
export function eventLoopYielder(everyMs = 20): () => Promise<void> {
  let last = performance.now();
  return async () => {
    if (performance.now() - last < everyMs) return;
    await new Promise<void>((resolve) => schedule(resolve));
    last = performance.now();
  };
}

/** setImmediate (Node: after pending I/O and due timers), else a zero timeout (browsers). */
const schedule: (callback: () => void) => void =
  typeof setImmediate === 'function' ? (callback) => setImmediate(callback) : (callback) => setTimeout(callback, 0);
