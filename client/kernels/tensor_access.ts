/**
 * Synchronous access to a backend's float32 storage from inside a kernel, for the two
 * backends whose data lives in this process: cpu (plain typed arrays) and wasm (views
 * into the WebAssembly heap).
 */
import type { KernelBackend, TensorInfo } from '@tensorflow/tfjs-core';
import { util } from '@tensorflow/tfjs-core';

export type LocalBackendName = 'cpu' | 'wasm';

export interface TensorAccess {
  /** The tensor's values. On wasm a heap view: re-read it after any allocation (the heap may grow). */
  read(info: TensorInfo): Float32Array;
  /** A new float32 tensor owned by the backend, contents unspecified (callers overwrite it). */
  alloc(shape: number[]): TensorInfo;
  dispose(info: TensorInfo): void;
}

interface CpuBackendLike {
  data: { get(dataId: object): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: 'float32', values?: Float32Array): TensorInfo;
  disposeIntermediateTensorInfo(info: TensorInfo): void;
}

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  typedArrayFromHeap(info: TensorInfo): Float32Array;
  disposeData(dataId: object): boolean;
}

export function tensorAccess(backendName: LocalBackendName, backend: KernelBackend): TensorAccess {
  switch (backendName) {
    case 'cpu': {
      const cpu = backend as unknown as CpuBackendLike;
      return {
        read(info) {
          const values = cpu.data.get(info.dataId).values;
          if (!(values instanceof Float32Array)) throw new Error(`expected float32 data, got ${info.dtype}`);
          return values;
        },
        alloc: (shape) => cpu.makeTensorInfo(shape, 'float32', new Float32Array(util.sizeFromShape(shape))),
        dispose: (info) => cpu.disposeIntermediateTensorInfo(info),
      };
    }
    case 'wasm': {
      const wasm = backend as unknown as WasmBackendLike;
      return {
        read(info) {
          if (info.dtype !== 'float32') throw new Error(`expected float32 data, got ${info.dtype}`);
          return wasm.typedArrayFromHeap(info);
        },
        alloc: (shape) => wasm.makeOutput(shape, 'float32'),
        dispose: (info) => {
          wasm.disposeData(info.dataId);
        },
      };
    }
  }
}
