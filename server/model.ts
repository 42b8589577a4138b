/**
 * The server's view of a model: an ordered manifest of named float32 tensors.
 * The coordinator never knows layers or frameworks, only names, shapes and
 * which tensors a client may prune element-wise.
 */

import type { TensorSpec } from '../proto/messages.js';
import type { MaskMap, TensorMap } from '../proto/codec.js';
import { elementCount } from '../proto/shape.js';

export type { MaskMap, TensorMap, TensorSpec };

export function totalElements(manifest: readonly TensorSpec[]): number {
  let n = 0;
  for (const spec of manifest) n += elementCount(spec.shape);
  return n;
}

/** Checks that `initial` holds exactly the manifest's tensors with matching sizes and finite values. */
export function validateInitialModel(manifest: readonly TensorSpec[], initial: TensorMap): void {
  if (manifest.length === 0) throw new Error('manifest: expected at least one tensor, got none');
  const seen = new Set<string>();
  for (const spec of manifest) {
    if (seen.has(spec.name)) throw new Error(`manifest: tensor "${spec.name}" is listed twice`);
    seen.add(spec.name);
    for (const d of spec.shape) {
      if (!Number.isInteger(d) || d <= 0) {
        throw new Error(`manifest: tensor "${spec.name}" has invalid shape [${spec.shape.join(', ')}]`);
      }
    }
    const values = initial.get(spec.name);
    if (values === undefined) throw new Error(`initial model: tensor "${spec.name}" is missing`);
    const expected = elementCount(spec.shape);
    if (values.length !== expected) {
      throw new Error(
        `initial model: tensor "${spec.name}" has ${values.length} values, shape [${spec.shape.join(', ')}] needs ${expected}`,
      );
    }
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i])) {
        throw new Error(`initial model: tensor "${spec.name}" has a non-finite value at index ${i}`);
      }
    }
  }
  for (const name of initial.keys()) {
    if (!seen.has(name)) throw new Error(`initial model: tensor "${name}" is not in the manifest`);
  }
}

export function cloneTensors(tensors: TensorMap): TensorMap {
  const out: TensorMap = new Map();
  for (const [name, values] of tensors) out.set(name, values.slice());
  return out;
}
