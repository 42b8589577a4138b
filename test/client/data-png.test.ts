/** A folder of PNG images per class: labels from folder names, colour handling, and every broken file named. */
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';
import { withChannels, type Dataset, type ImageDataset } from '../../client/data/dataset.js';
import { DataFileError, DataFolderError, type DataFileProblem } from '../../client/data/errors.js';
import { fitDataToModel } from '../../client/data/fit.js';
import { detectDataFolder, loadClientData } from '../../client/data/folder.js';
import { decodePng } from '../../client/data/png.js';
import { pngImage, tempDir } from '../fixtures/data-files.js';

const tmp = tempDir('subfed-png-');
afterAll(() => tmp.cleanup());

/** A grey 4x3 image whose pixels encode `value` (so copies are traceable). */
const grey = (value: number, width = 4, height = 3): Uint8Array =>
  pngImage(width, height, (x, y) => {
    const v = (value + x + 10 * y) % 256;
    return [v, v, v, 255];
  });

const images = (ds: Dataset): ImageDataset => {
  if (ds.kind !== 'images') throw new Error(`expected images, got ${ds.kind}`);
  return ds;
};

async function failure(read: Promise<unknown>): Promise<Error> {
  const err = await read.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Error);
  return err as Error;
}

async function fileProblem(read: Promise<unknown>): Promise<{ file: string; problem: DataFileProblem; message: string }> {
  const err = await failure(read);
  expect(err).toBeInstanceOf(DataFileError);
  const e = err as DataFileError;
  return { file: e.file, problem: e.problem, message: e.message };
}

describe('PNG class folders', () => {
  it('labels folders named by number with those numbers, and keeps the pixels', async () => {
    for (let i = 0; i < 3; i++) tmp.write(`digits/0/${i}.png`, grey(i));
    for (let i = 0; i < 2; i++) tmp.write(`digits/7/${i}.png`, grey(100 + i));
    tmp.write('digits/7/.DS_Store', new Uint8Array([0])); // hidden files are not images
    const folder = `${tmp.dir}/digits`;
    const layout = await detectDataFolder(folder);
    expect(layout).toMatchObject({
      kind: 'pooled',
      source: {
        kind: 'png-classes',
        classes: [
          { name: '0', label: 0, files: [0, 1, 2].map((i) => `${folder}/0/${i}.png`) },
          { name: '7', label: 7, files: [0, 1].map((i) => `${folder}/7/${i}.png`) },
        ],
      },
    });
    const { train, test } = await loadClientData(folder, 1);
    const all = [images(train), images(test)];
    expect(all.map((d) => [d.height, d.width, d.channels, d.numClasses])).toEqual([
      [3, 4, 1, 10],
      [3, 4, 1, 10],
    ]);
    expect([...train.labels, ...test.labels].sort()).toEqual([0, 0, 0, 7, 7]);
    // each image's first pixel is its value: the images came through intact and kept their labels
    const firsts = all.flatMap((d) => Array.from(d.labels, (label, i) => [label, d.images[i * 12]]));
    expect(firsts.sort((a, b) => a[1] - b[1])).toEqual([
      [0, 0],
      [0, 1],
      [0, 2],
      [7, 100],
      [7, 101],
    ]);
  });

  it('labels named classes by their sorted names, over train/ and test/ together', async () => {
    tmp.write('pets/train/dog/a.png', grey(1));
    tmp.write('pets/train/cat/a.png', grey(2));
    tmp.write('pets/train/eel/a.png', grey(3));
    tmp.write('pets/test/eel/a.png', grey(4)); // test/ lacks cat and dog: eel is still 2
    const folder = `${tmp.dir}/pets`;
    const layout = await detectDataFolder(folder);
    if (layout.kind !== 'split' || layout.train.kind !== 'png-classes' || layout.test.kind !== 'png-classes') {
      throw new Error('expected a split of PNG class folders');
    }
    expect(layout.train.classes.map((c) => [c.name, c.label])).toEqual([
      ['cat', 0],
      ['dog', 1],
      ['eel', 2],
    ]);
    expect(layout.test.classes.map((c) => [c.name, c.label])).toEqual([['eel', 2]]);
    const { train, test } = await loadClientData(folder, 1);
    expect([...train.labels]).toEqual([0, 1, 2]);
    expect([...test.labels]).toEqual([2]);
  });

  it('makes the set RGB when one image has colour (greys repeated, alpha dropped), and converts to the model', async () => {
    tmp.write('mixed/0/grey.png', grey(50));
    tmp.write(
      'mixed/1/rgba.png',
      pngImage(4, 3, () => [200, 100, 0, 7], 6),
    );
    tmp.write(
      'mixed/1/rgb.png',
      pngImage(4, 3, () => [10, 20, 30, 255], 2),
    );
    tmp.write(
      'mixed/1/grey-alpha.png',
      pngImage(4, 3, () => [90, 90, 90, 128], 4),
    );
    const data = await loadClientData(`${tmp.dir}/mixed`, 3);
    const ds = images(data.train);
    expect(ds.channels).toBe(3);
    const all = [images(data.train), images(data.test)];
    const firstPixels = all.flatMap((d) => Array.from(d.labels, (_, i) => [...d.images.subarray(i * 36, i * 36 + 3)]));
    expect(firstPixels.sort((a, b) => a[0] - b[0])).toEqual([
      [10, 20, 30],
      [50, 50, 50],
      [90, 90, 90],
      [200, 100, 0],
    ]);
    // a grey model takes the luminance
    const fitted = fitDataToModel(data, { name: 'grey-model', inputShape: [3, 4, 1], numClasses: 10 });
    expect(fitted.converted).toEqual({ from: 3, to: 1 });
    const g = images(fitted.train);
    expect(g.channels).toBe(1);
    expect(g.images.length).toBe(g.count * 12);
    expect(withChannels(ds, 1).images[0]).toBe(Math.round(0.299 * ds.images[0] + 0.587 * ds.images[1] + 0.114 * ds.images[2]));
    // a model of another size is an error saying both sizes
    expect(() => fitDataToModel(data, { name: 'mlp', inputShape: [28, 28, 1], numClasses: 10 })).toThrow(
      /holds 3x4x3 images, model mlp takes 28x28x1 \(height x width x channels\); resize the images/,
    );
  });

  it('decodes grey PNGs, 8- and 16-bit, to RGBA bytes and says they are grey', () => {
    const d = decodePng(
      'x.png',
      pngImage(2, 1, (x) => [x * 255, x * 255, x * 255, 255]),
    );
    expect([d.width, d.height, d.grey, d.rgba[0], d.rgba[4]]).toEqual([2, 1, true, 0, 255]);
    const deep = new PNG({ width: 3, height: 1, bitDepth: 16, colorType: 0, inputColorType: 0, inputHasAlpha: false });
    deep.data = Buffer.from(new Uint16Array([0, 32896, 65535]).buffer);
    const options = { bitDepth: 16, colorType: 0, inputColorType: 0, inputHasAlpha: false } as const;
    const d16 = decodePng('deep.png', new Uint8Array(PNG.sync.write(deep, options)));
    expect([d16.grey, d16.rgba[0], d16.rgba[4], d16.rgba[8]]).toEqual([true, 0, 128, 255]);
  });

  it('names the file at fault: not a PNG, truncated, corrupt, another size', async () => {
    const good = grey(9);
    tmp.write('bad-sig/0/a.png', good);
    const notPng = tmp.write('bad-sig/0/b.png', new TextEncoder().encode('hello, I am text'));
    expect(await fileProblem(loadClientData(`${tmp.dir}/bad-sig`, 0))).toEqual({
      file: notPng,
      problem: 'not-png',
      message: `${notPng}: not a PNG image (starts with 68 65 6c 6c 6f 2c 20 49, a PNG with 89 50 4e 47 0d 0a 1a 0a)`,
    });

    const empty = tmp.write('empty-file/0/a.png', new Uint8Array(0));
    expect((await fileProblem(loadClientData(`${tmp.dir}/empty-file`, 0))).message).toBe(
      `${empty}: not a PNG image (starts with nothing: the file is empty, a PNG with 89 50 4e 47 0d 0a 1a 0a)`,
    );

    tmp.write('truncated/0/a.png', good);
    const cut = tmp.write('truncated/1/b.png', good.subarray(0, good.length - 20));
    expect(await fileProblem(loadClientData(`${tmp.dir}/truncated`, 0))).toEqual({
      file: cut,
      problem: 'corrupt-png',
      message: `${cut}: corrupt PNG (truncated: the file ends inside the image data)`,
    });

    const flipped = Uint8Array.from(good);
    flipped[good.length - 20] ^= 0xff; // inside the compressed image data
    const corrupt = tmp.write('corrupt/0/a.png', flipped);
    const c = await fileProblem(loadClientData(`${tmp.dir}/corrupt`, 0));
    expect([c.file, c.problem]).toEqual([corrupt, 'corrupt-png']);
    expect(c.message).toMatch(/^.*corrupt\/0\/a\.png: corrupt PNG \(.+\)$/);

    const first = tmp.write('sizes/0/a.png', grey(1, 4, 3));
    tmp.write('sizes/0/b.png', grey(2, 4, 3));
    const odd = tmp.write('sizes/1/c.png', grey(3, 5, 3));
    expect(await fileProblem(loadClientData(`${tmp.dir}/sizes`, 0))).toEqual({
      file: odd,
      problem: 'wrong-size',
      message: `${odd}: is 5x3 (width x height), but ${first}, the first image, is 4x3: all images must have one size`,
    });
  });

  it('names the class folder at fault', async () => {
    tmp.write('high/3/a.png', grey(1));
    tmp.write('high/12/a.png', grey(1));
    let err = await failure(detectDataFolder(`${tmp.dir}/high`));
    expect(err).toBeInstanceOf(DataFolderError);
    expect(err.message).toBe(`'${tmp.dir}/high/12': label 12 is out of range: class folders named by number must be 0..9`);

    tmp.write('twins/3/a.png', grey(1));
    tmp.write('twins/03/a.png', grey(1));
    expect((await failure(detectDataFolder(`${tmp.dir}/twins`))).message).toBe(
      `'${tmp.dir}/twins': class folders 03 and 3 are both label 3`,
    );

    for (const name of 'abcdefghijk') tmp.write(`many/${name}/a.png`, grey(1));
    expect((await failure(detectDataFolder(`${tmp.dir}/many`))).message).toMatch(
      /has 11 class folders \(a, b, .*, k\); at most 10 classes \(labels 0\.\.9\)$/,
    );

    tmp.write('nested/cat/kittens/a.png', grey(1));
    err = await failure(detectDataFolder(`${tmp.dir}/nested`));
    expect((err as DataFolderError).problem).toBe('bad-class-folder');
    expect(err.message).toBe(`'${tmp.dir}/nested/cat' holds a folder (kittens): a class folder holds only its PNG images`);

    tmp.write('hollow/cat/.keep', new Uint8Array(0));
    tmp.write('hollow/dog/.keep', new Uint8Array(0));
    expect((await failure(loadClientData(`${tmp.dir}/hollow`, 0))).message).toBe(
      `'${tmp.dir}/hollow': every class folder is empty`,
    );

    // PNG files straight in the folder: say where images go
    const loose = tmp.write('loose/a.png', grey(1));
    expect((await fileProblem(loadClientData(`${tmp.dir}/loose`, 0))).message).toBe(
      `${loose}: is a PNG image: images go in one folder per class (<data>/<label>/*.png, or train/<label>/ and test/<label>/)`,
    );
  });
});
