/**
 * The zoo's model names, apart from the models themselves (client/model.ts) so
 * that a command's help can list them without loading tfjs.
 */
export type ModelName = 'mlp' | 'lenet5-mnist' | 'lenet5-cifar' | 'lenet5-bn-mnist' | 'lenet5-bn-cifar';
export const MODEL_NAMES: readonly ModelName[] = ['mlp', 'lenet5-mnist', 'lenet5-cifar', 'lenet5-bn-mnist', 'lenet5-bn-cifar'];

export function isModelName(name: string): name is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(name);
}
