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
  | 'unknown-format';

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
export type DataFolderProblem = 'not-a-folder' | 'no-data-files' | 'half-split' | 'too-few-examples';

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
