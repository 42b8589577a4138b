/**
 * A data folder meets its model: the model is known only once the coordinator
 * has answered (or the saved state named it), after the data was read. Image
 * channels convert (grey <-> RGB, for PNG folders); anything else that does not
 * fit is an error saying both sides, before any training starts.
 */
import { describeShape, exampleShape, withChannels, type Dataset } from './dataset.js';
import { DataFolderError } from './errors.js';
import type { ClientDataSplits } from './folder.js';

/** What the data must match of a model. */
export interface ModelInput {
  readonly name: string;
  /** height, width, channels. */
  readonly inputShape: readonly [number, number, number];
  readonly numClasses: number;
}

export interface FittedData {
  readonly train: Dataset;
  readonly test: Dataset;
  /** Set when image channels were converted to the model's. */
  readonly converted: { readonly from: number; readonly to: number } | undefined;
}

/** The splits to fit; only the folder of the layout is read (for messages). */
export type DataToFit = Pick<ClientDataSplits, 'train' | 'test'> & { readonly layout: Pick<ClientDataSplits['layout'], 'folder'> };

export function fitDataToModel(data: DataToFit, model: ModelInput): FittedData {
  const folder = data.layout.folder;
  const [h, w, c] = model.inputShape;
  const train = data.train;
  const fail = (message: string): never => {
    throw new DataFolderError(folder, 'does-not-fit-model', `'${folder}': ${message}`);
  };
  if (train.numClasses > model.numClasses) {
    fail(`labels go up to ${train.numClasses - 1}, model ${model.name} has ${model.numClasses} classes`);
  }
  switch (train.kind) {
    case 'images': {
      if (train.height !== h || train.width !== w) {
        fail(
          `holds ${describeShape(exampleShape(train))}, model ${model.name} takes ${h}x${w}x${c} (height x width x channels); ` +
            'resize the images (subfed does not)',
        );
      }
      const convertible = (from: number): boolean => from === c || (from === 1 && c === 3) || (from === 3 && c === 1);
      const test = data.test;
      if (test.kind !== 'images') return fail('train and test hold different kinds of data');
      for (const ds of [train, test]) {
        if (!convertible(ds.channels)) fail(`holds ${ds.channels}-channel images, model ${model.name} takes ${c} channel(s)`);
      }
      const fitted = { train: withChannels(train, c), test: withChannels(test, c) };
      return { ...fitted, converted: train.channels !== c ? { from: train.channels, to: c } : undefined };
    }
    case 'features': {
      const inputs = h * w * c;
      if (train.featureCount !== inputs) {
        fail(
          `has ${train.featureCount} feature column(s) besides the label, model ${model.name} takes ${inputs} inputs (${h}x${w}x${c}); ` +
            'a CSV needs exactly as many feature columns as the model has inputs',
        );
      }
      return { train, test: data.test, converted: undefined };
    }
  }
}
