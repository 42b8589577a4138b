/** CSV data: numeric features plus a label column; every bad file, line and cell named. */
import { afterAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import type { Dataset, FeatureDataset } from '../../client/data/dataset.js';
import { DataFileError, DataFolderError, type DataFileProblem } from '../../client/data/errors.js';
import { fitDataToModel } from '../../client/data/fit.js';
import { detectDataFolder, loadClientData } from '../../client/data/folder.js';
import { createModel } from '../../client/model.js';
import { evaluate, trainLocal } from '../../client/train.js';
import { csvText, tempDir } from '../fixtures/data-files.js';

const tmp = tempDir('subfed-csv-');
afterAll(() => tmp.cleanup());

const features = (ds: Dataset): FeatureDataset => {
  if (ds.kind !== 'features') throw new Error(`expected features, got ${ds.kind}`);
  return ds;
};

async function fileProblem(read: Promise<unknown>): Promise<{ file: string; problem: DataFileProblem; message: string }> {
  const err = await read.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DataFileError);
  const e = err as DataFileError;
  return { file: e.file, problem: e.problem, message: e.message };
}

describe('CSV data', () => {
  it('reads numeric features and the label column, standardised by the training split', async () => {
    tmp.write(
      'split/train/a.csv',
      csvText([
        ['height', 'label', 'weight'],
        [1, 0, 10],
        [3, 1, 30],
      ]),
    );
    tmp.write(
      'split/train/b.csv',
      csvText([
        ['height', 'label', 'weight'],
        [5, 2, 50],
      ]),
    );
    tmp.write('split/test/t.csv', new TextEncoder().encode('\ufeffheight,label,weight\r\n"7",3,70\r\n\r\n'));
    const folder = `${tmp.dir}/split`;
    expect(await detectDataFolder(folder)).toMatchObject({
      kind: 'split',
      train: { kind: 'csv', files: [`${folder}/train/a.csv`, `${folder}/train/b.csv`] },
      test: { kind: 'csv', files: [`${folder}/test/t.csv`] },
    });
    const { train, test } = await loadClientData(folder, 0);
    const [tr, te] = [features(train), features(test)];
    expect([tr.count, tr.featureCount, tr.featureNames, [...tr.features], [...tr.labels]]).toEqual([
      3,
      2,
      ['height', 'weight'],
      [1, 10, 3, 30, 5, 50],
      [0, 1, 2],
    ]);
    expect([te.count, [...te.features], [...te.labels]]).toEqual([1, [7, 70], [3]]);
    // the training split's statistics, for both splits (the test split is data the model has not seen)
    expect(tr.normalization.mean).toEqual([3, 30]);
    expect(tr.normalization.std.map((s) => s.toFixed(4))).toEqual(
      [Math.sqrt(8 / 3), Math.sqrt(800 / 3)].map((s) => s.toFixed(4)),
    );
    expect(te.normalization).toEqual(tr.normalization);
  });

  it('takes the label column by name, and holds out a seeded test share of a pooled folder', async () => {
    const rows = Array.from({ length: 20 }, (_, i) => [i % 2, i, 5]); // y, x, a constant
    tmp.write('pooled/data.csv', csvText([['y', 'x', 'const'], ...rows]));
    const folder = `${tmp.dir}/pooled`;
    expect((await fileProblem(loadClientData(folder, 1))).message).toMatch(
      /line 1: no column named 'label' in the header \(y, x, const\)/,
    );
    const { train, test } = await loadClientData(folder, 1, { labelColumn: 'y' });
    const [tr, te] = [features(train), features(test)];
    expect([tr.count, te.count, tr.featureNames]).toEqual([16, 4, ['x', 'const']]);
    // a constant feature standardises to 0, not to a division by zero
    expect(tr.normalization.std[1]).toBe(1);
    expect(
      [...tr.features.filter((_, i) => i % 2 === 0), ...te.features.filter((_, i) => i % 2 === 0)].sort((a, b) => a - b),
    ).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('feeds the mlp when it has 784 feature columns, and says the counts when not', async () => {
    await initBackend('cpu', { logger: { info: () => {} } });
    const header = [...Array.from({ length: 784 }, (_, i) => `p${i}`), 'label'];
    const rows = Array.from({ length: 30 }, (_, r) => [...Array.from({ length: 784 }, (_, i) => ((i + r) % 7) * (r % 3)), r % 3]);
    tmp.write('wide/data.csv', csvText([header, ...rows]));
    const data = await loadClientData(`${tmp.dir}/wide`, 2);
    const model = createModel('mlp', 1);
    try {
      const fitted = fitDataToModel(data, model);
      expect(fitted.converted).toBeUndefined();
      const history = await trainLocal(model, fitted.train, { epochs: 2, batchSize: 8, lr: 0.05, momentum: 0.5, seed: 1 });
      expect(history).toHaveLength(2);
      expect(Number.isFinite(evaluate(model, fitted.test).loss)).toBe(true);

      tmp.write(
        'narrow/data.csv',
        csvText([
          ['a', 'b', 'c', 'label'],
          [1, 2, 3, 0],
          [4, 5, 6, 1],
        ]),
      );
      const narrow = await loadClientData(`${tmp.dir}/narrow`, 2);
      expect(() => fitDataToModel(narrow, model)).toThrow(DataFolderError);
      expect(() => fitDataToModel(narrow, model)).toThrow(
        `'${tmp.dir}/narrow': has 3 feature column(s) besides the label, model mlp takes 784 inputs (28x28x1); ` +
          'a CSV needs exactly as many feature columns as the model has inputs',
      );
    } finally {
      model.dispose();
    }
  });

  it('names the file, the line and the column at fault', async () => {
    const cases: [string, string, DataFileProblem, string][] = [
      [
        'word',
        'a,b,label\n1,2,0\n3,abc,1\n',
        'bad-cell',
        "line 3, column 2 ('b'): 'abc' is not a number; every feature cell must be a finite number",
      ],
      [
        'empty-cell',
        'a,b,label\n1,,0\n',
        'bad-cell',
        "line 2, column 2 ('b'): an empty cell; every feature cell must be a finite number",
      ],
      [
        'nan',
        'a,b,label\n1,NaN,0\n',
        'bad-cell',
        "line 2, column 2 ('b'): 'NaN' is not a number; every feature cell must be a finite number",
      ],
      [
        'huge',
        'a,b,label\n1,1e39,0\n',
        'bad-cell',
        "line 2, column 2 ('b'): 1e39 is beyond float32; every feature cell must be a finite number",
      ],
      ['ragged', 'a,b,label\n1,2,0\n\n4,5\n', 'ragged-row', 'line 4: 2 field(s), but the header has 3 columns'],
      ['long-row', 'a,b,label\n1,2,0,9\n', 'ragged-row', 'line 2: 4 field(s), but the header has 3 columns'],
      [
        'high-label',
        'a,b,label\n1,2,0\n1,2,12\n',
        'label-out-of-range',
        "line 3, column 3 ('label'): label 12 is out of range: labels are class numbers 0..9",
      ],
      [
        'negative-label',
        'a,b,label\n1,2,-1\n',
        'label-out-of-range',
        "line 2, column 3 ('label'): label -1 is out of range: labels are class numbers 0..9",
      ],
      [
        'fraction-label',
        'label,a\n2.5,1\n',
        'bad-cell',
        "line 2, column 1 ('label'): '2.5' is not a class number; labels are class numbers 0..9",
      ],
      [
        'named-label',
        'label,a\ncat,1\n',
        'bad-cell',
        "line 2, column 1 ('label'): 'cat' is not a class number; labels are class numbers 0..9",
      ],
      ['quote', 'a,label\n"1,0\n', 'ragged-row', 'Quote Not Closed: the parsing is finished with an opening quote at line 2'],
      ['twice', 'a,a,label\n1,2,0\n', 'bad-header', "line 1: columns 1 and 2 are both named 'a'"],
      ['unnamed', ',a,label\n0,1,2\n', 'bad-header', 'line 1: column 1 has no name in the header'],
      ['only-label', 'label\n1\n', 'bad-header', 'line 1: only the label column; no feature columns'],
      ['header-only', 'a,label\n', 'no-rows', 'a header row and no data rows'],
      ['blank', '\n\n', 'no-rows', 'empty: no header row and no data'],
    ];
    for (const [name, text, problem, detail] of cases) {
      const file = tmp.write(`bad/${name}/data.csv`, new TextEncoder().encode(text));
      expect(await fileProblem(loadClientData(`${tmp.dir}/bad/${name}`, 0)), name).toEqual({
        file,
        problem,
        message: `${file}: ${detail}`,
      });
    }
    // a second file with other columns
    tmp.write(
      'headers/a.csv',
      csvText([
        ['a', 'b', 'label'],
        [1, 2, 0],
      ]),
    );
    const other = tmp.write(
      'headers/b.csv',
      csvText([
        ['a', 'c', 'label'],
        [1, 2, 0],
      ]),
    );
    expect(await fileProblem(loadClientData(`${tmp.dir}/headers`, 0))).toMatchObject({
      file: other,
      problem: 'bad-header',
      message: `${other}: line 1: the header differs from ${tmp.dir}/headers/a.csv's at column 2 ('c' vs 'b'): every CSV file of a split needs the same columns`,
    });
    // CSV next to something else
    tmp.write(
      'mixed/a.csv',
      csvText([
        ['a', 'label'],
        [1, 0],
      ]),
    );
    tmp.write('mixed/notes.txt', new TextEncoder().encode('hi')); // a document: not data, no conflict
    tmp.write('mixed/batch.bin', new Uint8Array(8));
    await expect(detectDataFolder(`${tmp.dir}/mixed`)).rejects.toThrow(
      `'${tmp.dir}/mixed' holds CSV files (${tmp.dir}/mixed/a.csv) and other files (${tmp.dir}/mixed/batch.bin): keep one format per folder`,
    );
    // train/ as CSV, test/ as images
    tmp.write(
      'two-formats/train/a.csv',
      csvText([
        ['a', 'label'],
        [1, 0],
      ]),
    );
    tmp.write('two-formats/test/images-idx3-ubyte', new Uint8Array([0, 0, 8, 3]));
    await expect(detectDataFolder(`${tmp.dir}/two-formats`)).rejects.toThrow(
      `'${tmp.dir}/two-formats': train/ holds CSV files but test/ holds IDX or CIFAR-10 files`,
    );
  });
});
