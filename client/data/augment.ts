/**
 * Seeded image augmentation for local training (the training config's
 * `augmentation`): each epoch trains on a transformed copy of the client's
 * images, so the native engine and the tfjs path see exactly the same pixels.
 *
 * The shift is torchvision's RandomCrop(size, padding=shift) on raw bytes: the
 * image is padded by `shift` black pixels (byte 0, before standardisation) and a
 * window of the original size is cut at a random offset, i.e. the content moves
 * by dx, dy in [-shift, shift]. The flip is RandomHorizontalFlip(0.5). MNIST-like
 * data usually takes { shift: 2 }, CIFAR { shift: 4, flip: true }.
 */
import type { AugmentationConfig } from '../../proto/training-config.js';
import { SeededRandom } from '../../proto/random.js';
import type { ImageDataset } from './dataset.js';

export type { AugmentationConfig };

/**
 * A copy of `data` with every image shifted (and maybe mirrored) by draws from
 * `seed`: the same seed gives the same images. Labels and order are unchanged.
 */
export function augmentImages(data: ImageDataset, augmentation: AugmentationConfig, seed: number): ImageDataset {
  const { shift, flip } = augmentation;
  const { height, width, channels } = data;
  if (shift >= height || shift >= width) {
    throw new Error(
      `augmentation.shift ${shift} does not fit ${data.name}'s ${height}x${width} images (expected less than the side)`,
    );
  }
  const size = height * width * channels;
  const rowBytes = width * channels;
  const out = new Uint8Array(data.images.length);
  const rng = new SeededRandom(seed);
  for (let i = 0; i < data.count; i++) {
    // Three draws per image, whatever the options, so that one option does not reshuffle the other's draws.
    const dx = Math.floor(rng.next() * (2 * shift + 1)) - shift;
    const dy = Math.floor(rng.next() * (2 * shift + 1)) - shift;
    const mirror = rng.next() < 0.5 && flip;
    const src = data.images.subarray(i * size, (i + 1) * size);
    const dst = out.subarray(i * size, (i + 1) * size);
    for (let y = 0; y < height; y++) {
      const sy = y - dy;
      if (sy < 0 || sy >= height) continue; // black row (the array starts at zero)
      for (let x = 0; x < width; x++) {
        // Output pixel x shows input pixel x - dx of the (possibly mirrored) image.
        const mx = x - dx;
        if (mx < 0 || mx >= width) continue;
        const sx = mirror ? width - 1 - mx : mx;
        const from = sy * rowBytes + sx * channels;
        const to = y * rowBytes + x * channels;
        for (let c = 0; c < channels; c++) dst[to + c] = src[from + c];
      }
    }
  }
  return { ...data, images: out, name: `${data.name}[augmented]` };
}
