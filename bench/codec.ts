// Codec benchmark: wire bytes per kept parameter and encode/decode speed of a
// 1M-parameter tensor at several mask densities, for every mask encoding x
// value encoding, against dense float32 (FULL mask + F32 values) measured in
// the same run. Writes bench/results/codec.json and prints a table.
//
// Masks: random unstructured masks of the given density, except CHANNEL, which
// needs a channel-structured mask (the same fraction of whole output channels
// kept). DIFF encodes the mask against a previous mask that kept ~5% more
// (the typical per-round pruning step); UNCHANGED against an equal mask.
// "AUTO" is encodeMask's own choice without a previous mask (first upload),
// "AUTO_PREV" its choice given the ~5% wider previous mask (a later round). Speeds are MB of dense float32 tensor
// (4 MB) per second, best of repeated runs; encode = building the Mask from
// 0/1 bytes + gather + mask + values + protobuf serialization, decode = the
// reverse up to kept values. The previous mask is one Mask for all runs, as a
// sender or receiver holds it from the round before (with its kept-index list,
// which DIFF reads; here the warm-up run derives it).
import { Mask } from '../proto/mask.js';
import { writeBenchResult } from './results.js';
import { SeededRandom } from '../proto/random.js';
import { decodeMask, decodeValues, encodeMask, encodeMaskAs, encodeValues, MASK_ENCODING_NAMES } from '../proto/codec.js';
import { MaskEncoding, type MaskPart, type SparseTensor, type ValueEncodingName } from '../proto/messages.js';
import { codecs, isMalformed } from '../proto/schema.js';

const ROWS = 1000;
const COLS = 1000; // [in, out] dense weight: 1M parameters, 1000 output channels
const SHAPE = [ROWS, COLS];
const N = ROWS * COLS;
const DENSITIES = [1, 0.7, 0.5, 0.3, 0.1, 0.01];
const VALUE_ENCODINGS: ValueEncodingName[] = ['f32', 'f16', 'int8'];
const MASK_ENCODINGS = ['FULL', 'UNCHANGED', 'DIFF', 'BITMAP', 'INDEX_DELTA', 'CHANNEL', 'AUTO', 'AUTO_PREV'] as const;
type MaskChoice = (typeof MASK_ENCODINGS)[number];
const BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 150);

interface CodecRecord {
  density: number;
  maskEncoding: MaskChoice | 'DENSE_F32_BASELINE';
  /** What AUTO picked; equal to maskEncoding otherwise. */
  chosenMaskEncoding: string;
  valueEncoding: ValueEncodingName;
  keptCount: number;
  bytes: number;
  bytesPerKept: number;
  ratioToDense: number;
  encodeMBps: number;
  decodeMBps: number;
}

/** Deterministic xorshift so runs are comparable. */
function randomMask(density: number, seed: number): Uint8Array {
  const r = new SeededRandom(seed);
  return new Uint8Array(N).map(() => (r.next() < density ? 1 : 0));
}

function channelMask(density: number, seed: number): Uint8Array {
  const r = new SeededRandom(seed);
  const channels = new Uint8Array(COLS).map(() => (r.next() < density ? 1 : 0));
  if (density === 1) channels.fill(1);
  return new Uint8Array(N).map((_, i) => channels[i % COLS]);
}

/** A previous mask that kept the mask's positions plus ~5% more, so mask ⊆ previous. */
function widerMask(mask: Uint8Array, seed: number): Uint8Array {
  const r = new SeededRandom(seed);
  const keptCount = Mask.fromBytes(mask).keptCount;
  const extra = Math.min(1, (keptCount * 0.05) / Math.max(1, N - keptCount));
  return mask.map((v) => (v === 1 || r.next() < extra ? 1 : 0));
}

/** Best time in ms of fn over repeated runs within the budget (at least 3 runs after a warm-up). */
function bestMs(fn: () => void): number {
  fn();
  let best = Infinity;
  const start = performance.now();
  for (let runs = 0; runs < 3 || performance.now() - start < BUDGET_MS; runs++) {
    const t = performance.now();
    fn();
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

const dense = (() => {
  const r = new SeededRandom(42);
  return new Float32Array(N).map(() => (r.next() - 0.5) * 0.2);
})();
const DENSE_MB = (N * 4) / 1e6;

function measure(
  density: number,
  label: CodecRecord['maskEncoding'],
  mask: Uint8Array,
  previous: Mask | undefined,
  encodeMaskPart: (m: Mask) => MaskPart,
  values: ValueEncodingName,
  denseBytes: number,
): CodecRecord {
  let wire: Buffer = Buffer.alloc(0);
  // A fresh Mask per run: no kept-index list from the previous run.
  const encodeMs = bestMs(() => {
    const m = Mask.fromBytes(mask);
    const msg: SparseTensor = { name: 'dense/kernel', mask: encodeMaskPart(m), values: encodeValues(m.gather(dense), values) };
    wire = codecs.SparseTensor.encode(msg);
  });
  let kept: Float32Array = new Float32Array(0);
  let chosen = '';
  const decodeMs = bestMs(() => {
    const msg = codecs.SparseTensor.decode(wire);
    if (isMalformed(msg)) throw new Error(msg.error);
    const m = decodeMask(msg.mask, SHAPE, previous);
    kept = decodeValues(msg.values, m.keptCount);
    chosen = MASK_ENCODING_NAMES[msg.mask!.encoding];
  });
  const keptN = Mask.fromBytes(mask).keptCount;
  if (kept.length !== keptN) throw new Error(`decoded ${kept.length} values, expected ${keptN}`);
  return {
    density,
    maskEncoding: label,
    chosenMaskEncoding: chosen,
    valueEncoding: values,
    keptCount: keptN,
    bytes: wire.length,
    bytesPerKept: keptN === 0 ? 0 : wire.length / keptN,
    ratioToDense: wire.length / denseBytes,
    encodeMBps: DENSE_MB / (encodeMs / 1000),
    decodeMBps: DENSE_MB / (decodeMs / 1000),
  };
}

function main(): void {
  const ones = new Uint8Array(N).fill(1);
  const baseline = measure(
    1,
    'DENSE_F32_BASELINE',
    ones,
    undefined,
    () => ({ encoding: MaskEncoding.FULL, data: new Uint8Array(0) }),
    'f32',
    1,
  );
  const denseBytes = baseline.bytes;
  baseline.ratioToDense = 1;
  const records: CodecRecord[] = [baseline];

  for (const [di, density] of DENSITIES.entries()) {
    const random = randomMask(density, 1000 + di);
    const structured = channelMask(density, 2000 + di);
    const wider = widerMask(random, 3000 + di);
    for (const choice of MASK_ENCODINGS) {
      if (choice === 'FULL' && density !== 1) continue;
      const mask = choice === 'CHANNEL' ? structured : random;
      const previousBytes = choice === 'DIFF' || choice === 'AUTO_PREV' ? wider : choice === 'UNCHANGED' ? random : undefined;
      const previous = previousBytes === undefined ? undefined : Mask.fromBytes(previousBytes);
      const encodeMaskPart =
        choice === 'AUTO' || choice === 'AUTO_PREV'
          ? (m: Mask) => encodeMask(m, SHAPE, previous)
          : (m: Mask) => encodeMaskAs(m, SHAPE, MaskEncoding[choice as keyof typeof MaskEncoding], previous);
      for (const values of VALUE_ENCODINGS) {
        records.push(measure(density, choice, mask, previous, encodeMaskPart, values, denseBytes));
      }
    }
  }

  const out = writeBenchResult('codec', {
    tensor: { shape: SHAPE, parameters: N },
    baseline: 'dense f32: FULL mask + F32 values of all parameters',
    node: process.version,
    records,
  });

  const fmt = (x: number, d = 2) => x.toFixed(d).padStart(8);
  console.log(`codec benchmark, 1M-parameter tensor [${SHAPE.join(', ')}]; baseline dense f32 = ${denseBytes} bytes`);
  console.log(
    `${'density'.padStart(7)} ${'mask'.padEnd(21)} ${'B/kept f32'.padStart(10)} ${'f16'.padStart(8)} ${'int8'.padStart(8)}  ${'ratio f32'.padStart(9)} ${'f16'.padStart(8)} ${'int8'.padStart(8)}  ${'enc MB/s'.padStart(8)} ${'dec MB/s'.padStart(8)}`,
  );
  console.log(
    `${fmt(1, 2).slice(1)} ${'dense f32'.padEnd(21)} ${fmt(baseline.bytesPerKept).padStart(10)} ${''.padStart(8)} ${''.padStart(8)}  ${fmt(1, 3).padStart(9)} ${''.padStart(8)} ${''.padStart(8)}  ${fmt(baseline.encodeMBps, 0)} ${fmt(baseline.decodeMBps, 0)}`,
  );
  for (const density of DENSITIES) {
    for (const choice of MASK_ENCODINGS) {
      const row = (v: ValueEncodingName) =>
        records.find((r) => r.density === density && r.maskEncoding === choice && r.valueEncoding === v);
      const [f32, f16, int8] = VALUE_ENCODINGS.map(row);
      if (f32 === undefined || f16 === undefined || int8 === undefined) continue;
      const name = choice.startsWith('AUTO') ? `${choice}>${f32.chosenMaskEncoding}` : choice;
      console.log(
        `${density.toFixed(2).padStart(7)} ${name.padEnd(21)} ${fmt(f32.bytesPerKept).padStart(10)} ${fmt(f16.bytesPerKept)} ${fmt(int8.bytesPerKept)}  ${fmt(f32.ratioToDense, 3).padStart(9)} ${fmt(f16.ratioToDense, 3)} ${fmt(int8.ratioToDense, 3)}  ${fmt(f32.encodeMBps, 0)} ${fmt(f32.decodeMBps, 0)}`,
      );
    }
  }
  console.log(`(speeds for f32 values; all records in ${out})`);
}

main();
