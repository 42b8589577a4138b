import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { labelCounts } from '../../client/data/dataset.js';
import { DataFileError, type DataFileProblem } from '../../client/data/errors.js';
import { readIdx } from '../../client/data/idx.js';
import { gzip, idxImages, idxLabels, tempDir } from '../fixtures/data-files.js';

const SYSTEM_DIR = '/usr/share/datasets/fashion-mnist';
const EMBEDDED_DIR = join(import.meta.dirname, '..', '..', 'data', 'fashion-mnist-test');
const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** Runs `read`, expecting a DataFileError about `file` with `problem`; returns its message. */
async function failure(read: Promise<unknown>, file: string, problem: DataFileProblem): Promise<string> {
  const err = await read.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DataFileError);
  const e = err as DataFileError;
  expect(e.problem).toBe(problem);
  expect(e.file).toBe(file);
  expect(e.message.startsWith(`${file}: `)).toBe(true);
  return e.message;
}

describe('readIdx on real data', () => {
  // Debian's dataset-fashion-mnist is installed here and in CI; a missing package should fail loudly, not skip.
  it('reads the full Fashion-MNIST test split from the system package', async () => {
    const ds = await readIdx(join(SYSTEM_DIR, 't10k-images-idx3-ubyte.gz'), join(SYSTEM_DIR, 't10k-labels-idx1-ubyte.gz'));
    expect([ds.count, ds.height, ds.width, ds.channels, ds.numClasses]).toEqual([10_000, 28, 28, 1, 10]);
    expect(ds.images.length).toBe(10_000 * 784);
    expect(labelCounts(ds)).toEqual(new Array(10).fill(1000));
    // Fashion-MNIST's first test image is an ankle boot (class 9).
    expect(ds.labels[0]).toBe(9);
  });

  it('reads the embedded copy, identical to the system one when both exist', async () => {
    const ds = await readIdx(join(EMBEDDED_DIR, 't10k-images-idx3-ubyte.gz'), join(EMBEDDED_DIR, 't10k-labels-idx1-ubyte.gz'), {
      name: 'embedded',
    });
    expect(ds.count).toBe(10_000);
    expect(ds.name).toBe('embedded');
    expect(labelCounts(ds)).toEqual(new Array(10).fill(1000));
    if (existsSync(SYSTEM_DIR)) {
      const sys = await readIdx(join(SYSTEM_DIR, 't10k-images-idx3-ubyte.gz'), join(SYSTEM_DIR, 't10k-labels-idx1-ubyte.gz'));
      expect(Buffer.from(ds.images).equals(Buffer.from(sys.images))).toBe(true);
      expect(Buffer.from(ds.labels).equals(Buffer.from(sys.labels))).toBe(true);
    }
  });
});

describe('readIdx on generated files', () => {
  const images = idxImages(3, 2, 2);
  const labels = idxLabels([4, 0, 9]);

  it('reads raw files and keeps pixels in file order', async () => {
    const ds = await readIdx(tmp.write('raw-images', images), tmp.write('raw-labels', labels));
    expect([ds.count, ds.height, ds.width]).toEqual([3, 2, 2]);
    expect([...ds.images]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect([...ds.labels]).toEqual([4, 0, 9]);
  });

  it('detects gzip by content, not by name', async () => {
    const a = await readIdx(tmp.write('gz-named-plain', gzip(images)), tmp.write('labels.gz', labels));
    expect([...a.images]).toEqual([...images.subarray(16)]);
    expect([...a.labels]).toEqual([4, 0, 9]);
  });

  it('reports a truncated images file with the declared and actual sizes', async () => {
    const file = tmp.write('t10k-images-idx3-ubyte.gz', gzip(images.subarray(0, 16 + 5)));
    const msg = await failure(readIdx(file, tmp.write('l-ok', labels)), file, 'truncated');
    expect(msg).toContain('header says 3 images of 2x2 (12 bytes) but only 5 follow');
  });

  it('reports a file shorter than the header', async () => {
    const file = tmp.write('short-header', images.subarray(0, 10));
    expect(await failure(readIdx(file, tmp.write('l-ok2', labels)), file, 'truncated')).toContain('16-byte IDX3 header');
  });

  it('reports a truncated labels file', async () => {
    const file = tmp.write('short-labels', labels.subarray(0, 9));
    expect(await failure(readIdx(tmp.write('i-ok', images), file), file, 'truncated')).toContain(
      'header says 3 labels (3 bytes) but only 1 follow',
    );
  });

  it('reports trailing bytes after the declared images', async () => {
    const file = tmp.write('long-images', Uint8Array.from([...images, 1, 2]));
    expect(await failure(readIdx(file, tmp.write('l-ok3', labels)), file, 'trailing-bytes')).toContain('2 extra');
  });

  it('reports a wrong magic number, and spots swapped arguments', async () => {
    const bad = images.slice();
    bad[3] = 0x04;
    const file = tmp.write('bad-magic', bad);
    const msg = await failure(readIdx(file, tmp.write('l-ok4', labels)), file, 'bad-magic');
    expect(msg).toContain('wrong magic number 0x00000804, expected 0x00000803');

    const labelsFile = tmp.write('swapped-labels', labels);
    const swapped = await failure(readIdx(labelsFile, tmp.write('swapped-images', images)), labelsFile, 'bad-magic');
    expect(swapped).toMatch(/labels file; images and labels swapped/);
  });

  it('reports garbage that is neither gzip nor IDX as a wrong magic number', async () => {
    const file = tmp.write('garbage.gz', new TextEncoder().encode('<html>404 Not Found</html>'));
    expect(await failure(readIdx(file, tmp.write('l-ok5', labels)), file, 'bad-magic')).toContain('not an IDX file');
  });

  it('reports a gzip stream that does not inflate', async () => {
    const z = gzip(images);
    const file = tmp.write('cut.gz', z.subarray(0, z.length - 20));
    expect(await failure(readIdx(file, tmp.write('l-ok6', labels)), file, 'bad-gzip')).toContain('does not inflate');
  });

  it('reports an image/label count mismatch naming both files', async () => {
    const imagesFile = tmp.write('three-images', images);
    const labelsFile = tmp.write('two-labels', idxLabels([1, 2]));
    const msg = await failure(readIdx(imagesFile, labelsFile), labelsFile, 'count-mismatch');
    expect(msg).toContain(`has 2 labels but ${imagesFile} has 3 images`);
  });

  it('reports a label out of range with its value and index', async () => {
    const file = tmp.write('label-10', idxLabels([1, 10, 2]));
    const msg = await failure(readIdx(tmp.write('i-ok7', images), file), file, 'label-out-of-range');
    expect(msg).toContain('label 10 at index 1 is out of range: labels must be below 10');
    // A dataset with more classes accepts it.
    const ds = await readIdx(tmp.write('i-ok8', images), file, { numClasses: 26 });
    expect(ds.numClasses).toBe(26);
  });

  it('reports a missing file by path', async () => {
    const missing = join(tmp.dir, 'nope-idx3-ubyte.gz');
    expect(await failure(readIdx(missing, tmp.write('l-ok9', labels)), missing, 'unreadable')).toContain('file not found');
  });
});
