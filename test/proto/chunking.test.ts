import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { encodeSparseTensor, decodeSparseTensor } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import { splitTensor, TensorAssembler, WireError } from '../../proto/chunking.js';
import type { TensorPiece } from '../../proto/messages.js';

const tensor = (name: string, n: number) =>
  encodeSparseTensor(name, { mask: Mask.full(n), kept: new Float32Array(n).map((_, i) => i * 0.5) }, [n], { values: 'f32' });

function expectWireError(fn: () => unknown, code: status, pattern: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(WireError);
    expect((err as WireError).code).toBe(code);
    expect((err as WireError).message).toMatch(pattern);
    return;
  }
  throw new Error('expected a WireError');
}

describe('chunking', () => {
  it('splits a large tensor into pieces and reassembles it exactly', () => {
    const msg = tensor('big', 10_000);
    const pieces = splitTensor(msg, 4096);
    expect(pieces.length).toBe(Math.ceil((40_000 + 20) / 4096));
    expect(pieces.every((p, i) => p.index === i && p.total === pieces.length && p.data.length <= 4096)).toBe(true);
    const assembler = new TensorAssembler();
    const results = pieces.map((p) => assembler.push(p));
    expect(results.slice(0, -1).every((r) => r === undefined)).toBe(true);
    const back = results.at(-1)!;
    expect(decodeSparseTensor(back, [10_000]).kept).toEqual(decodeSparseTensor(msg, [10_000]).kept);
    expect(assembler.completed).toBe(1);
    assembler.finish();
  });

  it('sends a small tensor as one piece', () => {
    const pieces = splitTensor(tensor('b', 3));
    expect(pieces.length).toBe(1);
    expect(new TensorAssembler().push(pieces[0])?.name).toBe('b');
    expect(() => splitTensor(tensor('b', 3), 0)).toThrow(/chunkBytes must be a positive integer/);
  });

  it('rejects inconsistent piece sequences as INVALID_ARGUMENT', () => {
    const a = splitTensor(tensor('a', 1000), 1000);
    const b = splitTensor(tensor('b', 1000), 1000);
    const inv = status.INVALID_ARGUMENT;
    expectWireError(() => new TensorAssembler().push(a[1]), inv, /"a": first piece has index 1, expected 0/);
    expectWireError(() => new TensorAssembler().push({ ...a[0], total: 0 }), inv, /total must be at least 1/);
    let asm = new TensorAssembler();
    asm.push(a[0]);
    expectWireError(() => asm.push(b[0]), inv, /"b": arrived while "a" is incomplete \(1\/5 pieces\)/);
    asm = new TensorAssembler();
    asm.push(a[0]);
    expectWireError(() => asm.push({ ...a[1], total: 9 }), inv, /total changed from 5 to 9/);
    asm = new TensorAssembler();
    asm.push(a[0]);
    expectWireError(() => asm.push(a[2]), inv, /index 2 out of sequence, expected 1/);
    asm = new TensorAssembler();
    asm.push(a[0]);
    expectWireError(() => asm.finish(), inv, /tensor "a" incomplete at end of stream \(1\/5 pieces\)/);
    asm = new TensorAssembler();
    for (const p of a) asm.push(p);
    expectWireError(() => asm.push(a[0]), inv, /tensor sent twice in one stream/);
    const garbage: TensorPiece = { name: 'g', index: 0, total: 1, data: Buffer.from([0xff, 0xff]) };
    expectWireError(() => new TensorAssembler().push(garbage), inv, /"g": SparseTensor: undecodable protobuf/);
    const renamed: TensorPiece = { ...splitTensor(tensor('x', 2))[0], name: 'y' };
    expectWireError(() => new TensorAssembler().push(renamed), inv, /reassembled tensor is named "x"/);
  });

  it('enforces the size limits as RESOURCE_EXHAUSTED', () => {
    const ex = status.RESOURCE_EXHAUSTED;
    const a = splitTensor(tensor('a', 1000), 1000);
    expectWireError(() => new TensorAssembler({ maxPieces: 4 }).push(a[0]), ex, /5 pieces exceed the limit of 4/);
    const small = new TensorAssembler({ maxTensorBytes: 2500 });
    small.push(a[0]);
    small.push(a[1]);
    expectWireError(() => small.push(a[2]), ex, /tensor exceeds 2500 bytes/);
    const total = new TensorAssembler({ maxTotalBytes: 3500 });
    for (const p of a.slice(0, 3)) total.push(p);
    expectWireError(() => total.push(a[3]), ex, /stream exceeds 3500 bytes of tensors/);
    const few = new TensorAssembler({ maxTensors: 1 });
    few.push(splitTensor(tensor('x', 1))[0]);
    expectWireError(() => few.push(splitTensor(tensor('y', 1))[0]), ex, /more than 1 tensors in one stream/);
  });
});
