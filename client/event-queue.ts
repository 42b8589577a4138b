/**
 * Events that happen beside the run's own steps (a heartbeat failing while the
 * client trains), queued until the run's stream can yield them: at its next
 * step, or at once while it awaits a long step through `during`.
 */
import type { ClientEvent } from './events.js';

export class EventQueue {
  readonly #items: ClientEvent[] = [];
  #wake: (() => void) | undefined;

  push(event: ClientEvent): void {
    this.#items.push(event);
    this.#wake?.();
  }

  /** The queued events, oldest first. */
  *drain(): Generator<ClientEvent, void> {
    while (this.#items.length > 0) yield this.#items.shift()!;
  }

  /** Yields queued events as they come while `work` runs; then its result (or its error). */
  async *during<T>(work: Promise<T>): AsyncGenerator<ClientEvent, T> {
    let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
    void work.then(
      (value) => {
        outcome = { ok: true, value };
        this.#wake?.();
      },
      (error: unknown) => {
        outcome = { ok: false, error };
        this.#wake?.();
      },
    );
    for (;;) {
      yield* this.drain();
      if (outcome !== undefined) break;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }
}
