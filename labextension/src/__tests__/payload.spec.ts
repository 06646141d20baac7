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
