// Test instrumentation: the largest typed array our code allocates while `fn`
// runs. The global typed-array constructors are swapped for subclasses that
// record their size (modules look the globals up at call time), and put back
// afterwards. `instanceof` still answers for arrays made before the swap.
// Node's own buffers (Buffer.concat, protobufjs's readers) are not seen: only
// what subfed's code allocates with `new XArray(n)` or `XArray.from(...)`.

const KINDS = [
  'Int8Array',
  'Uint8Array',
  'Int16Array',
  'Uint16Array',
  'Int32Array',
  'Uint32Array',
  'Float32Array',
  'Float64Array',
] as const;

type TypedArrayConstructor = Float64ArrayConstructor;

export interface Tracked<T> {
  /** What fn returned, or undefined when it threw. */
  readonly result: T | undefined;
  /** What fn threw, or undefined. */
  readonly error: unknown;
  /** Bytes of the largest typed array allocated meanwhile. */
  readonly largest: number;
}

export function trackAllocations<T>(fn: () => T): Tracked<T> {
  const globals = globalThis as unknown as Record<string, TypedArrayConstructor>;
  const originals = KINDS.map((name) => [name, globals[name]] as const);
  let largest = 0;
  for (const [name, Original] of originals) {
    const width = Original.BYTES_PER_ELEMENT;
    class Counted extends Original {
      constructor(...args: unknown[]) {
        const first = args[0];
        const elements =
          typeof first === 'number'
            ? first
            : first instanceof ArrayBuffer || first instanceof SharedArrayBuffer
              ? 0 // a view over memory that exists already
              : typeof (first as { length?: unknown } | undefined)?.length === 'number'
                ? (first as { length: number }).length
                : 0;
        largest = Math.max(largest, elements * width);
        super(...(args as []));
      }
      static override [Symbol.hasInstance](value: unknown): boolean {
        return value instanceof Original;
      }
    }
    globals[name] = Counted;
  }
  try {
    return { result: fn(), error: undefined, largest };
  } catch (error) {
    return { result: undefined, error, largest };
  } finally {
    for (const [name, Original] of originals) globals[name] = Original;
  }
}
