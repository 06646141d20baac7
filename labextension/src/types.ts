/**
 * The body of `GET {base_url}gpu-status`. Keys mirror the server's JSON exactly; a value the
 * hardware does not report is `null`, which the panel shows as "n/a", never as 0.
 */
export interface IGpuStatus {
  /** Schema version of the body. */
  version: number;
  /** When the server took the reading, in unix seconds. */
  timestamp: number;
  nvml: INvmlStatus;
  /** Where the server runs (a Lightning studio, Colab, Kaggle, a SLURM job, or a plain machine). */
  environment?: IEnvironment | null;
  /** Empty when NVML is unavailable; `nvml.reason` says why. */
  gpus: IGpu[];
  cpu: ICpu;
  memory: IMemory;
  /** Usage of the file system that holds the checkpoint root, when the server reports it. */
  disk: IDisk | null;
  /** Active `%%lightning_train` runs. */
  runs: IRun[];
}

export interface INvmlStatus {
  available: boolean;
  driver_version: string | null;
  /** The newest CUDA version the driver runs, "12.4". */
  cuda_driver_version?: string | null;
  /** Why NVML is unavailable, written for the user; null when it is available. */
  reason: string | null;
}

export interface IGpu {
  index: number;
  uuid: string | null;
  name: string | null;
  compute_capability: number[] | null;
  /** "00000000:3B:00.0". */
  pci_bus_id?: string | null;
  /** CUDA device number in the server's process; null when hidden from it, or split into MIG. */
  cuda_index?: number | null;
  /** Percent busy over the driver's last sample period. */
  utilization: IUtilization;
  /** Bytes. */
  memory: { used: number | null; total: number | null };
  /** Degrees Celsius. */
  temperature: number | null;
  /** Watts. */
  power: { draw: number | null; limit: number | null };
  /** MHz. */
  clocks: { sm: number | null; memory: number | null };
  /** Percent of the fan's maximum speed. */
  fan: number | null;
  /** "P0" (fastest) to "P15". */
  performance_state: string | null;
  ecc_errors: { corrected: number | null; uncorrected: number | null };
  mig: { enabled: boolean | null; instances: IMigInstance[] };
  processes: IGpuProcess[];
  /** An NVML error met while reading this GPU; its other fields are still current. */
  error: string | null;
}

export interface IUtilization {
  gpu: number | null;
  memory: number | null;
  /** Why the values are null (MIG: NVML does not report them); null when they are read. */
  reason?: string | null;
}

export interface IMigInstance {
  index: number;
  uuid: string | null;
  /** CUDA device number in the server's process; null when hidden from it. */
  cuda_index?: number | null;
  memory: { used: number | null; total: number | null };
  /** Always null values with a reason: NVML does not report utilization per MIG instance. */
  utilization?: IUtilization;
}

export interface IEnvironment {
  kind: 'studio' | 'colab' | 'kaggle' | 'slurm' | 'local' | string;
  label: string;
  /** Per kind, e.g. SLURM's job_id, gpus_per_task, cpus_per_task; persistent_storage. */
  details: { [key: string]: unknown };
}

export interface IGpuProcess {
  pid: number;
  /** Bytes of GPU memory, when the driver says. */
  memory_used: number | null;
  /** A compute (CUDA) process; false for a graphics-only one. */
  compute?: boolean;
  user: string | null;
  name: string | null;
  command: string | null;
  kernel_id: string | null;
  notebook_path: string | null;
  rank: number | null;
  run_id: string | null;
  /** "kernel", "kernel-child", "rank" or null for a process unrelated to Jupyter. */
  role: string | null;
}

export interface ICpu {
  /** Percent busy across all cores. */
  percent: number | null;
  per_core: (number | null)[];
  count: number | null;
}

export interface IMemory {
  /** Bytes. */
  total: number | null;
  /** total - available. */
  used: number | null;
  /** What new processes can use without swapping. */
  available: number | null;
  percent: number | null;
}

export interface IDisk {
  path: string;
  total: number | null;
  used: number | null;
  free: number | null;
  percent: number | null;
}

/**
 * An active `%%lightning_train` run. Only the keys the panel shows are named; the server may
 * send more.
 */
export interface IRun {
  run_id?: string | null;
  kernel_id?: string | null;
  notebook_path?: string | null;
  pid?: number | null;
  rank_pids?: number[] | null;
  /** Class name of the LightningModule being trained. */
  model?: string | null;
  accelerator?: string | null;
  num_processes?: number | null;
  status?: string | null;
  devices?: unknown;
  /** Lightning's current_epoch (counted from 0). */
  epoch?: number | null;
  /** The fit's max_epochs; null when it has no epoch limit. */
  max_epochs?: number | null;
  step?: number | null;
  metrics?: { [name: string]: unknown } | null;
  started?: number | null;
  [key: string]: unknown;
}
