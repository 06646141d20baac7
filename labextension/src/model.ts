import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { asGpuStatusError, GpuStatusError } from './errors';
import { percentOf } from './format';
import { History, ISample, SeriesKey } from './history';
import { IGpuStatus } from './types';

/**
 * The GPU status readings of one page: a single Lumino Poll of `/gpu-status`, shared by every
 * view of the model, and what it has learned (the latest reading, the latest error, and the
 * recent history that sparklines draw).
 *
 * The poll asks for readings only while at least one view is visible and the browser tab is
 * shown. While a reading lists active training runs, it asks every `RUNS_INTERVAL_MS` (or the
 * set interval, if shorter), so a run's card follows the notebook's view; with no runs it goes
 * back to the set interval. On errors it backs off exponentially, up to `maxBackoff`, and
 * returns to its interval after the first success.
 */
export class GpuStatusModel {
  constructor(options: GpuStatusModel.IOptions) {
    this._fetch = options.fetch;
    this._now = options.now ?? (() => Date.now());
    this._history = new History(options.historyMs ?? GpuStatusModel.HISTORY_MS);
    this._maxBackoff = options.maxBackoff ?? GpuStatusModel.MAX_BACKOFF_MS;
    this._interval = options.interval ?? GpuStatusModel.INTERVAL_MS;
    this._poll = new Poll<IGpuStatus, unknown, 'standby'>({
      auto: false,
      factory: async () => {
        const reading = await this._fetch();
        // Before the poll schedules the next request, which waits this long.
        this._poll.frequency = this._frequency(this._pollInterval(reading));
        return reading;
      },
      frequency: this._frequency(this._interval),
      linger: 0,
      name: 'lightning-magic:gpu-status',
      standby: () => (this._visibleViews.size === 0 ? true : 'when-hidden')
    });
    // The constructor raises `max` to at least 30 s; the setter takes it as given.
    this._poll.frequency = this._frequency(this._interval);
    this._poll.ticked.connect(this._onTicked, this);
  }

  /** Emitted whenever the state or the history changes. */
  get stateChanged(): ISignal<this, void> {
    return this._stateChanged;
  }

  get state(): GpuStatusModel.IState {
    return this._state;
  }

  /** The poll, for those who need to follow its phases. */
  get poll(): IPoll<IGpuStatus, unknown, 'standby'> {
    return this._poll;
  }

  /** The set milliseconds between readings (while all is well and no run is active). */
  get interval(): number {
    return this._interval;
  }
  set interval(ms: number) {
    if (!(ms >= GpuStatusModel.MIN_INTERVAL_MS)) {
      throw new Error(
        `The refresh interval must be at least ${GpuStatusModel.MIN_INTERVAL_MS} ms; got ${ms}.`
      );
    }
    if (ms === this.interval) {
      return;
    }
    this._interval = ms;
    this._poll.frequency = this._frequency(
      this._pollInterval(this._state.reading)
    );
    this._stateChanged.emit();
    if (this.isActive) {
      // Without this, the change would wait for the tick scheduled with the old interval.
      void this._poll.refresh();
    }
  }

  /** Milliseconds between readings now: the set interval, or less while runs are active. */
  get pollInterval(): number {
    return this._poll.frequency.interval;
  }

  /** How far back the history reaches, in ms. */
  get historyMs(): number {
    return this._history.windowMs;
  }

  /** True while some view is visible, so that the poll runs. */
  get isActive(): boolean {
    return this._visibleViews.size > 0;
  }

  /** Recent samples of a series named by SeriesKey, oldest first. */
  series(key: string): readonly ISample[] {
    return this._history.series(key);
  }

  /**
   * Tell the model whether a view is visible. The first visible view starts the poll (with a
   * reading right away); when the last one hides or goes away, the poll stops.
   */
  setVisible(view: object, visible: boolean): void {
    if (this.isDisposed) {
      return;
    }
    const wasActive = this.isActive;
    if (visible) {
      this._visibleViews.add(view);
    } else {
      this._visibleViews.delete(view);
    }
    if (!wasActive && this.isActive) {
      void this._poll.start();
    } else if (wasActive && !this.isActive) {
      void this._poll.stop();
    }
  }

  /** Ask for a reading now (if a view is visible). */
  refresh(): Promise<void> {
    return this.isActive ? this._poll.refresh() : Promise.resolve();
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._visibleViews.clear();
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _pollInterval(reading: IGpuStatus | null): number {
    return reading && reading.runs.length > 0
      ? Math.min(this._interval, GpuStatusModel.RUNS_INTERVAL_MS)
      : this._interval;
  }

  private _frequency(interval: number): IPoll.Frequency {
    return {
      interval,
      backoff: true,
      max: Math.max(this._maxBackoff, interval)
    };
  }

  private _onTicked(
    poll: Poll<IGpuStatus, unknown, 'standby'>,
    tick: IPoll.State<IGpuStatus, unknown, 'standby'>
  ): void {
    switch (tick.phase) {
      case 'resolved':
      case 'reconnected':
        this._onReading(tick.payload as IGpuStatus);
        break;
      case 'rejected':
        this._onError(
          asGpuStatusError(tick.payload),
          tick.timestamp + tick.interval
        );
        break;
      default:
        break;
    }
  }

  private _onReading(reading: IGpuStatus): void {
    const now = this._now();
    const previous = this._state.reading;
    // The server samples at its own pace; a poll faster than that sees the same reading twice.
    const isNew = !previous || previous.timestamp !== reading.timestamp;
    if (isNew) {
      for (const gpu of reading.gpus) {
        this._history.add(
          SeriesKey.gpu(gpu, 'utilization'),
          now,
          gpu.utilization.gpu
        );
        this._history.add(
          SeriesKey.gpu(gpu, 'memory'),
          now,
          percentOf(gpu.memory.used, gpu.memory.total)
        );
      }
      this._history.add(SeriesKey.cpu, now, reading.cpu.percent);
      this._history.add(
        SeriesKey.memory,
        now,
        reading.memory.percent ??
          percentOf(reading.memory.used, reading.memory.total)
      );
      this._history.trim(now);
    }
    this._state = {
      reading,
      receivedAt:
        isNew || this._state.receivedAt === null ? now : this._state.receivedAt,
      error: null,
      failures: 0,
      nextAttemptAt: null
    };
    this._stateChanged.emit();
  }

  private _onError(error: GpuStatusError, nextAttemptAt: number): void {
    this._state = {
      ...this._state,
      error,
      failures: this._state.failures + 1,
      nextAttemptAt
    };
    this._stateChanged.emit();
  }

  private _fetch: () => Promise<IGpuStatus>;
  private _now: () => number;
  private _history: History;
  private _maxBackoff: number;
  private _interval: number;
  private _poll: Poll<IGpuStatus, unknown, 'standby'>;
  private _visibleViews = new Set<object>();
  private _isDisposed = false;
  private _state: GpuStatusModel.IState = {
    reading: null,
    receivedAt: null,
    error: null,
    failures: 0,
    nextAttemptAt: null
  };
  private _stateChanged = new Signal<this, void>(this);
}

export namespace GpuStatusModel {
  /** Default time between readings. */
  export const INTERVAL_MS = 2000;
  /**
   * Time between readings while a run is active: how often a kernel rewrites its run's file
   * (`lightning_magic.readings.runs.UPDATE_INTERVAL_S`).
   */
  export const RUNS_INTERVAL_MS = 1000;
  /** The shortest interval the model accepts. */
  export const MIN_INTERVAL_MS = 500;
  /** Default longest wait between tries while the server fails. */
  export const MAX_BACKOFF_MS = 30000;
  /** Default reach of the sparklines. */
  export const HISTORY_MS = 5 * 60 * 1000;

  export interface IOptions {
    /** Takes one reading; rejects (preferably with a GpuStatusError) when it cannot. */
    fetch: () => Promise<IGpuStatus>;
    /** Time between readings in ms (default 2000). */
    interval?: number;
    /** Longest wait between tries while the server fails, in ms (default 30000). */
    maxBackoff?: number;
    /** How far back the history reaches, in ms (default five minutes). */
    historyMs?: number;
    /** The clock, in ms since the epoch (default Date.now). */
    now?: () => number;
  }

  export interface IState {
    /** The latest reading; kept while errors follow it, so the panel can show it as stale. */
    reading: IGpuStatus | null;
    /** When the latest reading arrived (client clock, ms). */
    receivedAt: number | null;
    /** The latest failure, until the next success. */
    error: GpuStatusError | null;
    /** Failures in a row. */
    failures: number;
    /** When the poll tries again after a failure (client clock, ms). */
    nextAttemptAt: number | null;
  }
}
