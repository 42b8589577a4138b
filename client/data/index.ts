export type { Dataset } from './dataset.js';
export { subset, labelCounts, imageSize, validateDataset, DatasetError } from './dataset.js';
export { DataFileError, DatasetNotFoundError, type DataFileProblem } from './errors.js';
export { readMaybeGzip, isGzip, type FileBytes } from './files.js';
export { readIdx, idxDataset, idxMagic, parseIdxImages, parseIdxLabels, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, type IdxOptions } from './idx.js';
export { readCifar10, cifar10Dataset, parseCifar10, CIFAR10_RECORD_BYTES, CIFAR10_CLASSES } from './cifar10.js';
export { readDatasetFiles, detectFormat, type DataFormat, type ReadDataOptions } from './detect.js';
export { syntheticDataset, type SyntheticOptions } from './synthetic.js';
