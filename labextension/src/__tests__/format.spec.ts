import { describe, expect, it } from 'vitest';

import {
  baseName,
  formatClock,
  formatGiB,
  formatPercent,
  formatPower,
  formatSeconds,
  formatTemperature,
  formatUsedTotal,
  NA,
  percentOf
} from '../format';

const GIB = 1024 ** 3;

describe('formatting', () => {
  it('shows a value that is not reported as n/a, never as 0', () => {
    for (const format of [
      formatPercent,
      formatGiB,
      formatTemperature,
      formatClock
    ]) {
      expect(format(null)).toBe(NA);
      expect(format(undefined)).toBe(NA);
      expect(format(Number.NaN)).toBe(NA);
    }
    expect(formatUsedTotal(null, null)).toBe(NA);
    expect(formatPower(null, null)).toBe(NA);
  });

  it('shows a reported 0 as 0', () => {
    expect(formatPercent(0)).toBe('0%');
    expect(formatGiB(0)).toBe('0.0');
    expect(formatTemperature(0)).toBe('0 °C');
  });

  it('writes memory as used / total GiB, each side n/a on its own', () => {
    expect(formatUsedTotal(12.34 * GIB, 80 * GIB)).toBe('12.3 / 80.0 GiB');
    expect(formatUsedTotal(null, 4 * GIB)).toBe('n/a / 4.0 GiB');
  });

  it('writes power as draw / limit', () => {
    expect(formatPower(120.5, 400)).toBe('121 / 400 W');
    expect(formatPower(120.4, null)).toBe('120 W');
    expect(formatPower(null, 250)).toBe('n/a / 250 W');
  });

  it('computes a percent only from two known values and a positive total', () => {
    expect(percentOf(1, 4)).toBe(25);
    expect(percentOf(null, 4)).toBeNull();
    expect(percentOf(1, null)).toBeNull();
    expect(percentOf(1, 0)).toBeNull();
    expect(percentOf(5, 4)).toBe(100);
  });

  it('writes intervals in seconds or minutes', () => {
    expect(formatSeconds(2000)).toBe('2 s');
    expect(formatSeconds(500)).toBe('0.5 s');
    expect(formatSeconds(60000)).toBe('1 min');
    expect(formatSeconds(90000)).toBe('1 min 30 s');
  });

  it('names a notebook by its file name', () => {
    expect(baseName('experiments/mnist.ipynb')).toBe('mnist.ipynb');
    expect(baseName('mnist.ipynb')).toBe('mnist.ipynb');
  });
});
