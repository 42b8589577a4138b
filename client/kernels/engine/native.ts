/**
 * The native engine's WebAssembly module (client/kernels/wasm/engine.wasm, built from
 * engine.c by `npm run build:wasm` and shipped in the package): loaded once per thread,
 * with its own memory and a small arena for the buffers of one training or evaluation
 * call. Pointers handed to the kernels are byte offsets into that memory.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../../proto/package-root.js';

/** Where the built module lives, relative to the package root (sources and dist/ alike). */
export const ENGINE_WASM_PATH = join('client', 'kernels', 'wasm', 'engine.wasm');

type I = number;

// The few WebAssembly types we use (lib "ES2023" has no WebAssembly declarations, @types/node 20 neither).
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmGlobal {
  readonly value: unknown;
}
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: object };
};

/** The module's exports (see engine.c for each kernel's contract). */
export interface EngineExports {
  readonly memory: WasmMemory;
  readonly __heap_base: WasmGlobal;
  set_tiles(nv: I, block: I, rowsR: I, tapsR: I): void;
  gemm_rows(A: I, arow: I, poff: I, P: I, B: I, ldb: I, C: I, crow: I, coff: I, init: I, acc: I, rows: I, J4: I): void;
  gemm_taps(A: I, arow: I, poff: I, P: I, B: I, ldb: I, C: I, ldc: I, acc: I, rows: I, J4: I): void;
  conv_input_grad(dy: I, dyrow: I, ident: I, M: I, wt: I, C4: I, T: I, toff: I, dx: I, dxSize: I, xrow: I, rows: I): void;
  conv_transpose_kernel(w: I, T: I, C: I, M: I, ldw: I, wt: I, C4: I): void;
  transpose_map(w: I, rows: I, cols: I, ldw: I, rowmap: I, wt: I, ldt: I): void;
  pool_bias_relu(z: I, B: I, H: I, W: I, C4: I, bias: I, a: I, arg: I): void;
  pool_bias_relu_grad(da: I, a: I, arg: I, B: I, H: I, W: I, C4: I, dz: I, dbias: I): void;
  bn_stats(z: I, N: I, C4: I, mean: I, variance: I): void;
  bn_invstd(variance: I, eps: number, invstd: I, C4: I): void;
  bn_running(rmean: I, rvar: I, mean: I, variance: I, C: I, keep: number, momentum: number, unbias: number): void;
  bn_pool_relu(z: I, B: I, H: I, W: I, C4: I, mean: I, invstd: I, gamma: I, beta: I, a: I, arg: I): void;
  bn_pool_relu_grad(
    da: I,
    a: I,
    arg: I,
    z: I,
    B: I,
    H: I,
    W: I,
    C4: I,
    mean: I,
    invstd: I,
    gamma: I,
    dz: I,
    dgamma: I,
    dbeta: I,
    dbias: I,
  ): void;
  relu_inplace(x: I, n: I): void;
  relu_grad(dy: I, y: I, n: I): void;
  colsum(x: I, rows: I, ldx: I, J4: I, out: I): void;
  softmax_ce(logits: I, ldl: I, rows: I, classes: I, labels: I, dlogits: I, out: I, perRow: I): void;
  sgd_step(w: I, buf: I, g: I, mask: I, n: I, lr: number, momentum: number, l1: number): void;
  normalize_u8(src: I, count: I, size: I, channels: I, table: I, dst: I): void;
}

const ALIGN = 64;
const PAGE = 65536;

/** First-fit regions over the module memory above the C stack and data; grows the memory when none fits. */
class Arena {
  readonly #memory: WasmMemory;
  #top: number;
  readonly #free: { offset: number; size: number }[] = [];

  constructor(memory: WasmMemory, base: number) {
    this.#memory = memory;
    this.#top = align(base);
  }

  acquire(bytes: number): number {
    const size = align(Math.max(bytes, ALIGN));
    let best = -1;
    for (let i = 0; i < this.#free.length; i++) {
      if (this.#free[i].size >= size && (best < 0 || this.#free[i].size < this.#free[best].size)) best = i;
    }
    if (best >= 0) {
      const region = this.#free[best];
      const offset = region.offset;
      if (region.size === size) this.#free.splice(best, 1);
      else {
        region.offset += size;
        region.size -= size;
      }
      return offset;
    }
    const offset = this.#top;
    this.#top += size;
    const needed = Math.ceil(this.#top / PAGE) - this.#memory.buffer.byteLength / PAGE;
    if (needed > 0) this.#memory.grow(needed);
    return offset;
  }

  release(offset: number, bytes: number): void {
    const size = align(Math.max(bytes, ALIGN));
    this.#free.push({ offset, size });
    this.#free.sort((a, b) => a.offset - b.offset);
    for (let i = this.#free.length - 1; i > 0; i--) {
      const prev = this.#free[i - 1];
      const cur = this.#free[i];
      if (prev.offset + prev.size === cur.offset) {
        prev.size += cur.size;
        this.#free.splice(i, 1);
      }
    }
    const last = this.#free[this.#free.length - 1];
    if (last !== undefined && last.offset + last.size === this.#top) {
      this.#top = last.offset;
      this.#free.pop();
    }
  }
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}

export interface Engine {
  readonly k: EngineExports;
  readonly arena: Arena;
  /** Views of the memory; fetch again after any acquire (growing the memory detaches the old buffer). */
  f32(byteOffset: number, length: number): Float32Array;
  i32(byteOffset: number, length: number): Int32Array;
  u8(byteOffset: number, length: number): Uint8Array;
  f64(byteOffset: number, length: number): Float64Array;
}

let loaded: Engine | null | undefined;
let loadError: string | undefined;

/** The module, instantiated on first use; null when this runtime cannot run it (no wasm SIMD, missing file). */
export function engine(): Engine | null {
  if (loaded !== undefined) return loaded;
  try {
    const bytes = readFileSync(join(packageRoot(), ENGINE_WASM_PATH));
    const module = new WebAssembly.Module(bytes);
    const instance = new WebAssembly.Instance(module, { env: { exp: Math.exp, log: Math.log } });
    const k = instance.exports as unknown as EngineExports;
    const arena = new Arena(k.memory, k.__heap_base.value as number);
    loaded = {
      k,
      arena,
      f32: (o, n) => new Float32Array(k.memory.buffer, o, n),
      i32: (o, n) => new Int32Array(k.memory.buffer, o, n),
      u8: (o, n) => new Uint8Array(k.memory.buffer, o, n),
      f64: (o, n) => new Float64Array(k.memory.buffer, o, n),
    };
  } catch (err) {
    loadError = err instanceof Error ? err.message : String(err);
    loaded = null;
  }
  return loaded;
}

/** Why engine() returned null, if it did. */
export function engineLoadError(): string | undefined {
  return loadError;
}
