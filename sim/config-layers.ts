/**
 * A config assembled from layers (a preset, an experiment file, flags,
 * `--set`, a sweep cell), each overriding the one before, which remembers
 * which layer set each field, so that a validation error names where the bad
 * value came from: `experiment.json: partition.alpha: expected a positive
 * number, got -1`, `--set 'training.lr=-1': training.lr: ...`.
 *
 * Overriding: objects merge field by field (`training: {lr: 0.05}` keeps the
 * other training fields), except a tagged object (one with `kind`) given with
 * another kind, which replaces the old one whole (`partition: {kind: "iid"}`
 * drops the shards' sizes); arrays and scalars replace.
 */
import { readFileSync } from 'node:fs';
import { describeValue } from '../proto/zod-issues.js';

export type ConfigObject = Record<string, unknown>;

/** A bad file, field path or value; the message names the file, flag or field. */
export class ConfigLayerError extends Error {
  override readonly name = 'ConfigLayerError';
}

export function isPlainObject(value: unknown): value is ConfigObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** 'partition.alpha' -> ['partition', 'alpha']; algorithm names keep their dashes ('algorithmConfigs.subfedavg-un.target'). */
export function parseFieldPath(text: string, where: string): string[] {
  const path = text.split('.');
  if (text.trim() === '' || path.some((key) => !/^[A-Za-z0-9_-]+$/.test(key))) {
    throw new ConfigLayerError(`${where}: expected a field path like training.lr or partition.alpha, got '${text}'`);
  }
  return path;
}

export function formatFieldPath(path: readonly PropertyKey[]): string {
  return path.map(String).join('.');
}

/** The value at `path`, or undefined. */
export function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let current = value;
  for (const key of path) {
    if (!isPlainObject(current)) return undefined;
    current = current[key as string];
  }
  return current;
}

/** `{a: {b: value}}` for the path ['a', 'b']. */
function nested(path: readonly string[], value: unknown): ConfigObject {
  let patch: unknown = value;
  for (let i = path.length - 1; i >= 0; i--) patch = { [path[i]]: patch };
  return patch as ConfigObject;
}

function replacesWhole(old: unknown, value: unknown): boolean {
  if (!isPlainObject(old) || !isPlainObject(value)) return true;
  return 'kind' in old && 'kind' in value && old.kind !== value.kind;
}

export class LayeredConfig {
  readonly #value: ConfigObject = {};
  /** Dotted path -> the layer that set it last. */
  readonly #sources = new Map<string, string>();

  /** Lays `patch` over what is there; `source` names the layer in errors (a file, `--lr '0.1'`). */
  overlay(patch: ConfigObject, source: string): void {
    this.#merge(this.#value, patch, [], source);
  }

  /** Sets one field (a path of keys; missing objects on the way are created), as `overlay` would. */
  set(path: readonly string[], value: unknown, source: string): void {
    let current: unknown = this.#value;
    for (let i = 0; i < path.length - 1; i++) {
      const next = (current as ConfigObject)[path[i]];
      if (next !== undefined && !isPlainObject(next)) {
        throw new ConfigLayerError(
          `${source}: cannot set ${formatFieldPath(path)}: ${formatFieldPath(path.slice(0, i + 1))} holds ${describeValue(next)}, not an object`,
        );
      }
      current = next ?? {};
    }
    this.overlay(nested(path, value), source);
  }

  /** A copy of the assembled value. */
  get value(): ConfigObject {
    return structuredClone(this.#value);
  }

  /** The layer that set the field at `path`, or the object holding it; undefined when none did. */
  sourceOf(path: readonly PropertyKey[]): string | undefined {
    for (let i = path.length; i >= 1; i--) {
      const source = this.#sources.get(formatFieldPath(path.slice(0, i)));
      if (source !== undefined) return source;
    }
    return undefined;
  }

  #merge(target: ConfigObject, patch: ConfigObject, at: string[], source: string): void {
    for (const [key, value] of Object.entries(patch)) {
      const path = [...at, key];
      const old = target[key];
      if (isPlainObject(value) && !replacesWhole(old, value)) {
        this.#merge(old as ConfigObject, value, path, source);
        continue;
      }
      target[key] = structuredClone(value);
      const dotted = formatFieldPath(path);
      for (const known of [...this.#sources.keys()]) if (known.startsWith(`${dotted}.`)) this.#sources.delete(known);
      this.#sources.set(dotted, source);
    }
  }
}

/** A JSON file holding an object; errors name the file. */
export function readJsonObject(file: string, what: string): ConfigObject {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigLayerError(`${file}: cannot read ${what} (${(err as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigLayerError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(json)) throw new ConfigLayerError(`${file}: expected a JSON object (${what}), got ${describeValue(json)}`);
  return json;
}

/** A `--set` value: JSON when it reads as JSON (`0.05`, `true`, `{"kind":"iid"}`), else the text itself (`mnist`). */
export function parseSetValue(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
