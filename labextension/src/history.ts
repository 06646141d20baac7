/** One point of a time series: client time in ms, and the value (null when not reported). */
export interface ISample {
  time: number;
  value: number | null;
}

/**
 * Recent samples of named series, kept for a sliding window of time.
 */
export class History {
  constructor(readonly windowMs: number) {}

  add(key: string, time: number, value: number | null): void {
    let samples = this._series.get(key);
    if (!samples) {
      samples = [];
      this._series.set(key, samples);
    }
    samples.push({ time, value });
  }

  series(key: string): readonly ISample[] {
    return this._series.get(key) ?? [];
  }

  /** Forget samples older than the window, and series left empty (a GPU that went away). */
  trim(now: number): void {
    const oldest = now - this.windowMs;
    for (const [key, samples] of this._series) {
      const first = samples.findIndex(sample => sample.time >= oldest);
      if (first === -1) {
        this._series.delete(key);
      } else if (first > 0) {
        samples.splice(0, first);
      }
    }
  }

  get keys(): string[] {
    return [...this._series.keys()];
  }

  private _series = new Map<string, ISample[]>();
}

/** Series names, shared by the model that fills them and the view that draws them. */
export namespace SeriesKey {
  /** A GPU keeps its series when the driver renumbers it: the uuid names it where known. */
  export function gpu(
    gpu: { index: number; uuid: string | null },
    field: 'utilization' | 'memory'
  ): string {
    return `gpu/${gpu.uuid ?? `index-${gpu.index}`}/${field}`;
  }

  export const cpu = 'cpu';
  export const memory = 'memory';
}
