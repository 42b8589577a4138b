/**
 * CSV data: a header row, then one example per row, every column a numeric
 * feature except the label column (named `label` unless told otherwise), whose
 * cells are class numbers. Parsing (quotes, CRLF, a BOM) is csv-parse's,
 * streamed, so a large file never sits in memory as text. Every error names
 * the file, the line and, for a cell, the column.
 */
import { createReadStream } from 'node:fs';
import { CsvError, parse } from 'csv-parse';
import { featureStatistics, validateDataset, type FeatureDataset } from './dataset.js';
import { DataFileError } from './errors.js';

export const DEFAULT_LABEL_COLUMN = 'label';

export interface ReadCsvOptions {
  /** The header name of the label column. */
  readonly labelColumn: string;
  /** Labels must be below this. */
  readonly numClasses: number;
  readonly name: string;
}

/** A plain decimal number, as people and spreadsheets write them (no hex, no blanks, no NaN). */
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * Reads one or more CSV files with the same header into one dataset. Its
 * normalisation is the rows' own feature statistics; a data folder replaces
 * it with its training split's (see client/data/folder.ts).
 */
export async function readCsvFiles(files: readonly string[], opts: ReadCsvOptions): Promise<FeatureDataset> {
  if (files.length === 0) throw new RangeError('readCsvFiles: no CSV files given');
  let header: { file: string; names: readonly string[]; labelIndex: number } | undefined;
  const rows = new RowBuffer();
  const labels: number[] = [];
  for (const file of files) {
    let fileHeader: readonly string[] | undefined;
    for await (const { line, fields } of csvRecords(file)) {
      if (fileHeader === undefined) {
        fileHeader = fields;
        header ??= { file, names: fields, labelIndex: labelColumnOf(file, fields, opts.labelColumn) };
        if (header.file !== file) sameHeader(file, fields, header);
        continue;
      }
      const { names, labelIndex } = header!;
      if (fields.length !== names.length) {
        throw new DataFileError(
          file,
          'ragged-row',
          `line ${line}: ${fields.length} field(s), but the header has ${names.length} columns`,
        );
      }
      const row = rows.next(names.length - 1);
      let j = 0;
      for (let c = 0; c < fields.length; c++) {
        if (c === labelIndex) labels.push(labelCell(file, line, c, names[c], fields[c], opts.numClasses));
        else row[j++] = featureCell(file, line, c, names[c], fields[c]);
      }
    }
    if (fileHeader === undefined) throw new DataFileError(file, 'no-rows', 'empty: no header row and no data');
  }
  const { names, labelIndex } = header!;
  if (labels.length === 0) {
    throw new DataFileError(files.length === 1 ? files[0] : files.join(', '), 'no-rows', 'a header row and no data rows');
  }
  const features = rows.values();
  const featureCount = names.length - 1;
  const dataset: FeatureDataset = {
    kind: 'features',
    features,
    featureCount,
    featureNames: names.filter((_, c) => c !== labelIndex),
    normalization: featureStatistics({ features, featureCount, count: labels.length }),
    labels: Uint8Array.from(labels),
    count: labels.length,
    numClasses: opts.numClasses,
    name: opts.name,
  };
  validateDataset(dataset);
  return dataset;
}

/** The records of a CSV file with the line each ends on; a quoting error names its line. */
async function* csvRecords(file: string): AsyncGenerator<{ line: number; fields: string[] }> {
  const parser = createReadStream(file).pipe(
    parse({ bom: true, trim: true, skip_empty_lines: true, info: true, relax_column_count: true }),
  );
  try {
    for await (const item of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      yield { line: item.info.lines, fields: item.record };
    }
  } catch (err) {
    if (err instanceof CsvError) {
      const line = (err as CsvError & { lines?: number }).lines;
      const at = line === undefined || /\bline \d+/.test(err.message) ? '' : `line ${line}: `;
      throw new DataFileError(file, 'ragged-row', `${at}${err.message}`);
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== undefined) throw new DataFileError(file, 'unreadable', `cannot read: ${code === 'ENOENT' ? 'file not found' : code}`);
    throw err;
  } finally {
    parser.destroy();
  }
}

function labelColumnOf(file: string, names: readonly string[], labelColumn: string): number {
  for (let c = 0; c < names.length; c++) {
    if (names[c] === '') throw new DataFileError(file, 'bad-header', `line 1: column ${c + 1} has no name in the header`);
    const again = names.indexOf(names[c], c + 1);
    if (again >= 0) {
      throw new DataFileError(file, 'bad-header', `line 1: columns ${c + 1} and ${again + 1} are both named '${names[c]}'`);
    }
  }
  const index = names.indexOf(labelColumn);
  if (index < 0) {
    const shown = names.length > 8 ? `${names.slice(0, 8).join(', ')}, ...` : names.join(', ');
    throw new DataFileError(
      file,
      'bad-header',
      `line 1: no column named '${labelColumn}' in the header (${shown}); the first row must name the columns, ` +
        `and the label column is '${DEFAULT_LABEL_COLUMN}' unless --label-column (labelColumn) names another`,
    );
  }
  if (names.length < 2) throw new DataFileError(file, 'bad-header', `line 1: only the label column; no feature columns`);
  return index;
}

function sameHeader(file: string, names: readonly string[], first: { file: string; names: readonly string[] }): void {
  if (names.length === first.names.length && names.every((n, c) => n === first.names[c])) return;
  const c = names.findIndex((n, i) => n !== first.names[i]);
  throw new DataFileError(
    file,
    'bad-header',
    `line 1: the header differs from ${first.file}'s at column ${c + 1} ('${names[c] ?? ''}' vs '${first.names[c] ?? ''}'): every CSV file of a split needs the same columns`,
  );
}

function cellAt(line: number, c: number, name: string): string {
  return `line ${line}, column ${c + 1} ('${name}')`;
}

function featureCell(file: string, line: number, c: number, name: string, cell: string): number {
  const value = NUMBER.test(cell) ? Math.fround(Number(cell)) : Number.NaN;
  if (Number.isFinite(value)) return value;
  const what = cell === '' ? 'an empty cell' : NUMBER.test(cell) ? `${cell} is beyond float32` : `'${cell}' is not a number`;
  throw new DataFileError(file, 'bad-cell', `${cellAt(line, c, name)}: ${what}; every feature cell must be a finite number`);
}

function labelCell(file: string, line: number, c: number, name: string, cell: string, numClasses: number): number {
  const value = NUMBER.test(cell) ? Number(cell) : Number.NaN;
  if (!Number.isInteger(value)) {
    const what = cell === '' ? 'an empty label' : `'${cell}' is not a class number`;
    throw new DataFileError(file, 'bad-cell', `${cellAt(line, c, name)}: ${what}; labels are class numbers 0..${numClasses - 1}`);
  }
  if (value < 0 || value >= numClasses) {
    throw new DataFileError(
      file,
      'label-out-of-range',
      `${cellAt(line, c, name)}: label ${value} is out of range: labels are class numbers 0..${numClasses - 1}`,
    );
  }
  return value;
}

/** Rows of float32 features, grown by doubling. */
class RowBuffer {
  #values = new Float32Array(0);
  #used = 0;

  /** A view of the next row, `width` values (filled by the caller). */
  next(width: number): Float32Array {
    if (this.#used + width > this.#values.length) {
      const grown = new Float32Array(Math.max(1024 * width, 2 * this.#values.length));
      grown.set(this.#values.subarray(0, this.#used));
      this.#values = grown;
    }
    const row = this.#values.subarray(this.#used, this.#used + width);
    this.#used += width;
    return row;
  }

  /** Every row so far, trimmed to size. */
  values(): Float32Array {
    return this.#values.slice(0, this.#used);
  }
}
