/** Registers our faster kernels on the backends that run in this process. */
import { getKernel, registerKernel, unregisterKernel } from '@tensorflow/tfjs-core';
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { columnSumConfig } from './column_sum.js';
import { cpuConv2dConfig } from './conv2d.js';
import { conv2dBackpropFilterConfig } from './conv2d_backprop_filter.js';
import { conv2dBackpropInputConfig } from './conv2d_backprop_input.js';
import { cpuBatchMatMulConfig, wasmBatchMatMulConfig } from './matmul.js';
import { maxPoolGradConfig } from './max_pool_grad.js';
import { sgdMomentumConfig } from './sgd_momentum.js';
import type { LocalBackendName } from './tensor_access.js';

const registered = new Set<LocalBackendName>();

function kernelsFor(backendName: LocalBackendName): KernelConfig[] {
  const kernels = [
    conv2dBackpropFilterConfig(backendName),
    conv2dBackpropInputConfig(backendName),
    maxPoolGradConfig(backendName),
    columnSumConfig(backendName),
    sgdMomentumConfig(backendName),
  ];
  if (backendName === 'wasm') kernels.push(wasmBatchMatMulConfig());
  if (backendName === 'cpu') kernels.push(cpuConv2dConfig(), cpuBatchMatMulConfig());
  return kernels;
}

/** Idempotent. A no-op for 'tensorflow' (tfjs-node runs TensorFlow's own kernels). */
export function registerFastKernels(backendName: string): void {
  if (backendName !== 'cpu' && backendName !== 'wasm') return;
  if (registered.has(backendName)) return;
  // Build every config first: a wrapper captures the stock kernel before it is unregistered.
  for (const config of kernelsFor(backendName)) {
    // registerKernel refuses to overwrite: drop the stock kernel first where there is one.
    if (getKernel(config.kernelName, backendName) !== undefined) unregisterKernel(config.kernelName, backendName);
    registerKernel(config);
  }
  registered.add(backendName);
}
