/** What is wrong with a data file; lets callers and tests branch without parsing messages. */
export type DataFileProblem =
  | 'unreadable'
  | 'bad-gzip'
  | 'bad-magic'
  | 'truncated'
  | 'trailing-bytes'
  | 'bad-length'
  | 'count-mismatch'
  | 'label-out-of-range'
  | 'unknown-format'
  /** IDX data given as other than one images file and one labels file. */
  | 'wrong-file-count'
  /** An image folder's file that does not start with the PNG signature. */
  | 'not-png'
  /** A PNG that does not decode: truncated, bad checksum, bad chunk. */
  | 'corrupt-png'
  /** An image whose size differs from the folder's first image. */
  | 'wrong-size'
  /** A CSV header without the label column, or with empty or repeated names, or different from the first file's. */
  | 'bad-header'
  /** A CSV cell that is not a finite number (a feature) or a class number (the label). */
  | 'bad-cell'
  /** A CSV row with more or fewer fields than the header, or a quoting error. */
  | 'ragged-row'
  /** A CSV with a header and no data rows. */
  | 'no-rows';

/**
 * A data file that cannot be used. The message always starts with the file's
 * path, so a user reading one line knows which file to look at and why.
 */
export class DataFileError extends Error {
  override readonly name = 'DataFileError';
  constructor(
    readonly file: string,
    readonly problem: DataFileProblem,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

/** A dataset (as a whole: a directory, a set of files) that cannot be found. */
export class DatasetNotFoundError extends Error {
  override readonly name = 'DatasetNotFoundError';
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/** What is wrong with a data folder as a whole (as opposed to one of its files). */
export type DataFolderProblem =
  | 'not-a-folder'
  | 'no-data-files'
  | 'half-split'
  | 'too-few-examples'
  /** Two formats where one is expected: CSV next to other files, or train/ and test/ in different formats. */
  | 'mixed-formats'
  /** A class folder whose name gives no usable label, or that holds a folder. */
  | 'bad-class-folder'
  /** The data does not fit the model: image size, channels, feature count, classes. */
  | 'does-not-fit-model';

/** A data folder whose layout cannot be used; the message quotes the folder. */
export class DataFolderError extends Error {
  override readonly name = 'DataFolderError';
  constructor(
    readonly folder: string,
    readonly problem: DataFolderProblem,
    message: string,
  ) {
    super(message);
  }
}
