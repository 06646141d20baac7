import { GpuStatusError } from './errors';
import {
  ICpu,
  IDisk,
  IGpu,
  IGpuProcess,
  IGpuStatus,
  IEnvironment,
  IMemory,
  IMigInstance,
  INvmlStatus,
  IRun,
  IUtilization
} from './types';

type JsonObject = { [key: string]: unknown };

/**
 * Check and normalize a `/gpu-status` body.
 *
 * The top-level sections must be there (otherwise this is not a GPU status reading and a
 * GpuStatusError of kind "invalid" is thrown). Below them, a missing or non-numeric value
 * becomes `null`, so the panel shows "n/a" for it instead of failing or showing 0.
 */
export function parseGpuStatus(body: unknown): IGpuStatus {
  if (!isObject(body)) {
    throw invalid(`expected a JSON object, got ${describe(body)}`);
  }
  for (const key of ['nvml', 'cpu', 'memory']) {
    if (!isObject(body[key])) {
      throw invalid(`"${key}" should be an object, got ${describe(body[key])}`);
    }
  }
  if (!Array.isArray(body.gpus)) {
    throw invalid(`"gpus" should be a list, got ${describe(body.gpus)}`);
  }
  return {
    version: numberOr(body.version, 0),
    timestamp: numberOr(body.timestamp, 0),
    nvml: nvml(body.nvml as JsonObject),
    ...('environment' in body
      ? {
          environment: isObject(body.environment)
            ? environment(body.environment)
            : null
        }
      : {}),
    gpus: body.gpus.map(gpu),
    cpu: cpu(body.cpu as JsonObject),
    memory: memory(body.memory as JsonObject),
    disk: isObject(body.disk) ? disk(body.disk) : null,
    runs: Array.isArray(body.runs) ? body.runs.filter(isObject).map(run) : []
  };
}

function nvml(value: JsonObject): INvmlStatus {
  return {
    available: value.available === true,
    driver_version: text(value.driver_version),
    ...('cuda_driver_version' in value
      ? { cuda_driver_version: text(value.cuda_driver_version) }
      : {}),
    reason: text(value.reason)
  };
}

function gpu(value: unknown, position: number): IGpu {
  const o = isObject(value) ? value : {};
  const utilization = section(o.utilization);
  const memoryUse = section(o.memory);
  const power = section(o.power);
  const clocks = section(o.clocks);
  const ecc = section(o.ecc_errors);
  const mig = section(o.mig);
  return {
    index: numberOr(o.index, position),
    uuid: text(o.uuid),
    name: text(o.name),
    compute_capability: Array.isArray(o.compute_capability)
      ? o.compute_capability.filter(isNumber)
      : null,
    ...('pci_bus_id' in o ? { pci_bus_id: text(o.pci_bus_id) } : {}),
    ...('cuda_index' in o ? { cuda_index: num(o.cuda_index) } : {}),
    utilization: usage(utilization),
    memory: { used: num(memoryUse.used), total: num(memoryUse.total) },
    temperature: num(o.temperature),
    power: { draw: num(power.draw), limit: num(power.limit) },
    clocks: { sm: num(clocks.sm), memory: num(clocks.memory) },
    fan: num(o.fan),
    performance_state: text(o.performance_state),
    ecc_errors: {
      corrected: num(ecc.corrected),
      uncorrected: num(ecc.uncorrected)
    },
    mig: {
      enabled: typeof mig.enabled === 'boolean' ? mig.enabled : null,
      instances: Array.isArray(mig.instances)
        ? mig.instances.filter(isObject).map(migInstance)
        : []
    },
    processes: Array.isArray(o.processes)
      ? o.processes.filter(isObject).map(gpuProcess)
      : [],
    error: text(o.error)
  };
}

function migInstance(o: JsonObject, position: number): IMigInstance {
  const use = section(o.memory);
  return {
    index: numberOr(o.index, position),
    uuid: text(o.uuid),
    ...('cuda_index' in o ? { cuda_index: num(o.cuda_index) } : {}),
    memory: { used: num(use.used), total: num(use.total) },
    ...('utilization' in o
      ? { utilization: usage(section(o.utilization)) }
      : {})
  };
}

function usage(o: JsonObject): IUtilization {
  return {
    gpu: num(o.gpu),
    memory: num(o.memory),
    ...('reason' in o ? { reason: text(o.reason) } : {})
  };
}

function environment(o: JsonObject): IEnvironment {
  return {
    kind: text(o.kind) ?? 'local',
    label: text(o.label) ?? '',
    details: section(o.details)
  };
}

function gpuProcess(o: JsonObject): IGpuProcess {
  return {
    pid: numberOr(o.pid, 0),
    memory_used: num(o.memory_used),
    ...('compute' in o ? { compute: o.compute === true } : {}),
    user: text(o.user),
    name: text(o.name),
    command: text(o.command),
    kernel_id: text(o.kernel_id),
    notebook_path: text(o.notebook_path),
    rank: num(o.rank),
    run_id: text(o.run_id),
    role: text(o.role)
  };
}

function cpu(o: JsonObject): ICpu {
  return {
    percent: num(o.percent),
    per_core: Array.isArray(o.per_core) ? o.per_core.map(num) : [],
    count: num(o.count)
  };
}

function memory(o: JsonObject): IMemory {
  return {
    total: num(o.total),
    used: num(o.used),
    available: num(o.available),
    percent: num(o.percent)
  };
}

function disk(o: JsonObject): IDisk {
  return {
    path: text(o.path) ?? '',
    total: num(o.total),
    used: num(o.used),
    free: num(o.free),
    percent: num(o.percent)
  };
}

function run(o: JsonObject): IRun {
  return { ...o };
}

function invalid(detail: string): GpuStatusError {
  return new GpuStatusError(
    'invalid',
    `The server's answer to /gpu-status is not a GPU status reading: ${detail}. ` +
      'The server may run a different version of lightning_magic than this page; ' +
      'reinstall lightning_magic and restart Jupyter.'
  );
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function num(value: unknown): number | null {
  return isNumber(value) ? value : null;
}

function numberOr(value: unknown, fallback: number): number {
  return isNumber(value) ? value : fallback;
}

function text(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function section(value: unknown): JsonObject {
  return isObject(value) ? value : {};
}

function describe(value: unknown): string {
  if (value === undefined) {
    return 'nothing';
  }
  if (value === null) {
    return 'null';
  }
  return Array.isArray(value) ? 'a list' : `a ${typeof value}`;
}
