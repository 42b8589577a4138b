/**
 * The native training engine: the zoo's layers as our own WebAssembly SIMD kernels
 * (client/kernels/wasm/engine.c), driven per layer from TypeScript, with no tfjs op
 * in a training step. client/train.ts uses it for trainLocal and evaluate whenever it
 * covers the model (see nativePlan); everything else takes the tfjs path.
 */
import { architectureOf, type Model } from '../../model.js';
import { envChoice } from '../../env.js';
import { engine, engineLoadError } from './native.js';
import { deadChannelsLeftOut, planFor, Session, type NetPlan, type SessionOptions } from './net.js';

export { Session, type NetPlan } from './net.js';

export const ENGINE_CHOICES = ['auto', 'native', 'tfjs'] as const;
/** 'auto': native where it covers the model, else tfjs. SUBFED_ENGINE sets the default. */
export type EngineChoice = (typeof ENGINE_CHOICES)[number];

/** The choice given, else SUBFED_ENGINE (an EnvironmentError naming it when it holds another value), else 'auto'. */
export function engineChoice(choice?: EngineChoice): EngineChoice {
  return choice ?? envChoice('SUBFED_ENGINE', ENGINE_CHOICES) ?? 'auto';
}

/**
 * The plan to train `model` natively, or null for the tfjs path: when the choice says
 * tfjs, or (auto) the engine does not cover the model. Forcing 'native' on a model it
 * does not cover throws.
 */
export function nativePlan(model: Model, choice?: EngineChoice): NetPlan | null {
  const chosen = engineChoice(choice);
  if (chosen === 'tfjs') return null;
  const e = engine();
  const plan = e === null ? null : planFor(model);
  if (plan === null && chosen === 'native') {
    throw new Error(
      e === null
        ? `native engine unavailable: ${engineLoadError() ?? 'unknown error'}`
        : `native engine does not cover model ${model.name}`,
    );
  }
  return plan;
}

export function openSession(plan: NetPlan, options: SessionOptions): Session {
  const e = engine();
  if (e === null) throw new Error(`native engine unavailable: ${engineLoadError() ?? 'unknown error'}`);
  return new Session(e, plan, options);
}

/**
 * The plan for `model` holding `weights`, compacted to the channels that can be nonzero:
 * with `masks` (training), channels that are zero and masked everywhere they own; without
 * (inference), channels whose output is zero. Computing fewer channels changes no result.
 * SUBFED_ENGINE_COMPACT=off computes every channel (for comparisons).
 */
export function compactPlan(
  model: Model,
  weights: ReadonlyMap<string, Float32Array>,
  masks?: ReadonlyMap<string, ArrayLike<number>>,
): NetPlan | null {
  const arch = architectureOf(model);
  if (arch === undefined) return null;
  if (process.env.SUBFED_ENGINE_COMPACT === 'off') return planFor(model);
  return planFor(model, deadChannelsLeftOut(arch, weights, masks));
}
