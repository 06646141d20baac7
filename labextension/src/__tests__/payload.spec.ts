import { describe, expect, it } from 'vitest';

import { GpuStatusError } from '../errors';
import { parseGpuStatus } from '../payload';
import { noNvmlJson, readingJson } from './fixtures';

function parseError(body: unknown): GpuStatusError {
  try {
    parseGpuStatus(body);
  } catch (error) {
    return error as GpuStatusError;
  }
  throw new Error('parseGpuStatus accepted the body');
}

describe('parseGpuStatus', () => {
  it('keeps a complete body as it is', () => {
    const body = readingJson();
    expect(parseGpuStatus(JSON.parse(JSON.stringify(body)))).toEqual(body);
  });

  it('keeps null for fields a GPU does not report', () => {
    const gpu = parseGpuStatus(readingJson()).gpus[1];
    expect(gpu.temperature).toBeNull();
    expect(gpu.utilization.gpu).toBeNull();
    expect(gpu.memory.used).toBeNull();
    expect(gpu.memory.total).toBe(4 * 1024 ** 3);
    expect(gpu.power).toEqual({ draw: null, limit: null });
  });

  it('turns missing and non-numeric values into null, not 0', () => {
    const body = readingJson() as any;
    delete body.gpus[0].temperature;
    delete body.gpus[0].clocks;
    body.gpus[0].fan = 'unknown';
    body.cpu.per_core = [12, null, 'x'];
    delete body.runs;
    delete body.disk;
    const parsed = parseGpuStatus(body);
    expect(parsed.gpus[0].temperature).toBeNull();
    expect(parsed.gpus[0].clocks).toEqual({ sm: null, memory: null });
    expect(parsed.gpus[0].fan).toBeNull();
    expect(parsed.cpu.per_core).toEqual([12, null, null]);
    expect(parsed.runs).toEqual([]);
    expect(parsed.disk).toBeNull();
  });

  it('reads the unavailable state with its reason', () => {
    const parsed = parseGpuStatus(noNvmlJson());
    expect(parsed.nvml.available).toBe(false);
    expect(parsed.nvml.reason).toContain('No NVIDIA driver found');
    expect(parsed.gpus).toEqual([]);
    expect(parsed.cpu.percent).toBe(25.5);
  });

  it('keeps the CUDA numbering, the environment and MIG reasons', () => {
    const body = readingJson() as any;
    body.nvml.cuda_driver_version = '12.4';
    body.environment = {
      kind: 'slurm',
      label: 'SLURM job 42 on node07',
      details: { job_id: '42', gpus_per_task: 2, cpus_per_task: 8 }
    };
    body.gpus[0].cuda_index = null;
    body.gpus[0].pci_bus_id = '00000000:3B:00.0';
    body.gpus[0].utilization = {
      gpu: null,
      memory: null,
      reason:
        'NVML does not report utilization for a GPU split into MIG instances'
    };
    body.gpus[0].mig = {
      enabled: true,
      instances: [
        {
          index: 0,
          uuid: 'MIG-a',
          cuda_index: 0,
          memory: { used: 1, total: 2 },
          utilization: { gpu: null, memory: null, reason: 'per MIG instance' }
        }
      ]
    };
    body.gpus[1].cuda_index = 'one';
    const parsed = parseGpuStatus(JSON.parse(JSON.stringify(body)));
    expect(parsed.nvml.cuda_driver_version).toBe('12.4');
    expect(parsed.environment?.kind).toBe('slurm');
    expect(parsed.environment?.details.cpus_per_task).toBe(8);
    expect(parsed.gpus[0].cuda_index).toBeNull();
    expect(parsed.gpus[1].cuda_index).toBeNull();
    expect(parsed.gpus[0].pci_bus_id).toBe('00000000:3B:00.0');
    expect(parsed.gpus[0].utilization.reason).toContain('MIG');
    expect(parsed.gpus[0].mig.instances[0].cuda_index).toBe(0);
    expect(parsed.gpus[0].mig.instances[0].utilization?.gpu).toBeNull();
    expect(parsed.gpus[0].mig.instances[0].utilization?.reason).toBe(
      'per MIG instance'
    );
  });

  it('keeps the keys of a run', () => {
    const run = {
      run_id: 'r1',
      kernel_id: 'k1',
      epoch: 2,
      step: 100,
      devices: [0, 1]
    };
    expect(parseGpuStatus(readingJson({ runs: [run] })).runs).toEqual([run]);
  });

  it('rejects a body that is not a reading, saying what is wrong', () => {
    expect(parseError('<html>').kind).toBe('invalid');
    expect(parseError('<html>').message).toContain(
      'expected a JSON object, got a string'
    );
    const noGpus = readingJson() as any;
    delete noGpus.gpus;
    expect(parseError(noGpus).message).toContain(
      '"gpus" should be a list, got nothing'
    );
    const badCpu = readingJson() as any;
    badCpu.cpu = null;
    expect(parseError(badCpu).message).toContain(
      '"cpu" should be an object, got null'
    );
  });
});
