/**
 * A model as plain arrays, independent of tfjs: what export, distillation and
 * prediction pass around. Its architecture is a zoo family's chain of layers
 * (client/model.ts), possibly with other widths (a compact export, a student).
 */
import type { Dataset } from '../data/dataset.js';
import { normalizationFor } from '../train.js';
import { createModelFromArchitecture, type Architecture, type Model } from '../model.js';
import type { ModelName } from '../model-names.js';
import type { MaskMap, TensorMap } from '../prune.js';

export interface PortableModel {
  /** The zoo model it derives from (its layer names and forward pass). */
  readonly family: ModelName;
  readonly architecture: Architecture;
  /** Parameters by zoo name (conv1.weight, bn1.bias, fc1.weight, ...). */
  readonly weights: TensorMap;
  /** BatchNorm running statistics (bn1.running_mean, bn1.running_var, ...). */
  readonly personal: TensorMap;
  /** Which entries are kept (pruning); all ones for a dense model. Fine-tuning keeps pruned entries at zero. */
  readonly masks: MaskMap;
  /** What the model takes and the standardisation it was trained with. */
  readonly input: InputEncoding;
}

/**
 * The model's input: images, standardised per channel after pixel/255 (the
 * client's image data), or rows of features, each standardised with the training
 * split's statistics (CSV data).
 */
export type InputEncoding =
  | { readonly kind: 'images'; readonly mean: readonly number[]; readonly std: readonly number[] }
  | { readonly kind: 'features'; readonly mean: readonly number[]; readonly std: readonly number[] };

/** The input encoding a model trained on `data` (as client/train.ts feeds it) expects. */
export function inputEncodingOf(data: Dataset): InputEncoding {
  switch (data.kind) {
    case 'images': {
      const { mean, std } = normalizationFor(data);
      return { kind: 'images', mean: [...mean], std: [...std] };
    }
    case 'features':
      return { kind: 'features', mean: [...data.normalization.mean], std: [...data.normalization.std] };
  }
}

/** `data` standardised as `input` says (a copy sharing the examples), or an error when the kinds differ. */
export function withInputEncoding<D extends Dataset>(data: D, input: InputEncoding, where: string): D {
  if (data.kind !== input.kind) throw new Error(`${where}: the model takes ${input.kind}, the data holds ${data.kind}`);
  return { ...data, normalization: { mean: input.mean, std: input.std } };
}

/** A tfjs Model holding `portable`'s values (dispose it when done). */
export function instantiate(portable: PortableModel, seed = 0): Model {
  const model = createModelFromArchitecture(portable.family, portable.architecture, seed);
  try {
    model.setWeights(new Map(portable.weights));
    model.setPersonal(new Map(portable.personal));
    return model;
  } catch (err) {
    model.dispose();
    throw err;
  }
}

/** Number of parameter values (BatchNorm running statistics are not parameters). */
export function parameterTotal(portable: Pick<PortableModel, 'weights'>): number {
  let n = 0;
  for (const w of portable.weights.values()) n += w.length;
  return n;
}

/** Number of parameter values the masks keep. */
export function keptParameterTotal(portable: Pick<PortableModel, 'weights' | 'masks'>): number {
  let n = 0;
  for (const [name, w] of portable.weights) n += portable.masks.get(name)?.keptCount ?? w.length;
  return n;
}

/** Per layer, its width: conv output channels or dense units. */
export function layerWidths(architecture: Architecture): { name: string; width: number }[] {
  return architecture.layers.map((l) => ({ name: l.name, width: l.kind === 'conv' ? l.outC : l.outputs }));
}
