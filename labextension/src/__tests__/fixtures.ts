import { IGpu, IGpuStatus } from '../types';

const GIB = 1024 ** 3;

/** A GPU as the server sends it, every field reported. */
export function gpuJson(index: number, overrides: Partial<IGpu> = {}): IGpu {
  return {
    index,
    uuid: `GPU-0000000${index}-aaaa-bbbb-cccc-dddddddddddd`,
    name: 'NVIDIA A100-SXM4-80GB',
    compute_capability: [8, 0],
    utilization: { gpu: 37, memory: 12 },
    memory: { used: 12 * GIB, total: 80 * GIB },
    temperature: 54,
    power: { draw: 120.5, limit: 400 },
    clocks: { sm: 1410, memory: 1593 },
    fan: null,
    performance_state: 'P0',
    ecc_errors: { corrected: 0, uncorrected: 0 },
    mig: { enabled: false, instances: [] },
    processes: [
      {
        pid: 4242,
        memory_used: 2 * GIB,
        user: 'ada',
        name: 'python',
        command: 'python -m ipykernel_launcher -f kernel-1234.json',
        kernel_id: '12345678-90ab-cdef-1234-567890abcdef',
        notebook_path: 'experiments/mnist.ipynb',
        rank: 1,
        run_id: 'run-1',
        role: 'rank'
      }
    ],
    error: null,
    ...overrides
  };
}

/** A GPU of a card that reports little: every optional reading null. */
export function bareGpuJson(index: number): IGpu {
  return gpuJson(index, {
    name: 'NVIDIA GeForce GTX 1050',
    utilization: { gpu: null, memory: null },
    memory: { used: null, total: 4 * GIB },
    temperature: null,
    power: { draw: null, limit: null },
    clocks: { sm: null, memory: null },
    fan: null,
    performance_state: null,
    ecc_errors: { corrected: null, uncorrected: null },
    mig: { enabled: null, instances: [] },
    processes: []
  });
}

/** A whole `/gpu-status` body with two GPUs. */
export function readingJson(overrides: Partial<IGpuStatus> = {}): IGpuStatus {
  return {
    version: 1,
    timestamp: 1700000000.5,
    nvml: { available: true, driver_version: '550.54.15', reason: null },
    gpus: [gpuJson(0), bareGpuJson(1)],
    cpu: { percent: 25.5, per_core: [10, 20, 30, 95], count: 4 },
    memory: {
      total: 32 * GIB,
      used: 8 * GIB,
      available: 24 * GIB,
      percent: 25
    },
    disk: {
      path: '/home/ada/lightning_runs',
      total: 500 * GIB,
      used: 100 * GIB,
      free: 400 * GIB,
      percent: 20
    },
    runs: [],
    ...overrides
  };
}

/** The body of a server without NVML. */
export function noNvmlJson(): IGpuStatus {
  return readingJson({
    nvml: {
      available: false,
      driver_version: null,
      reason:
        'No NVIDIA driver found: the NVML library (libnvidia-ml.so.1) is not on this machine.'
    },
    gpus: []
  });
}
