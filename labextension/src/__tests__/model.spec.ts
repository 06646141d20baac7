import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { GpuStatusError, httpError } from '../errors';
import { SeriesKey } from '../history';
import { GpuStatusModel } from '../model';
import { IGpuStatus } from '../types';
import { gpuJson, noNvmlJson, readingJson } from './fixtures';

/** A fetch whose answers the test sets; it counts its calls. */
function server() {
  let answer: () => Promise<IGpuStatus> = async () => readingJson();
  let timestamp = 1700000000;
  const fetch = vi.fn(() => answer());
  return {
    fetch,
    answerWith(make: () => IGpuStatus) {
      answer = async () => make();
    },
    answerFreshReadings() {
      answer = async () => readingJson({ timestamp: timestamp++ });
    },
    fail(error: Error) {
      answer = () => Promise.reject(error);
    }
  };
}

function setTabHidden(hidden: boolean) {
  Object.defineProperty(document, 'visibilityState', {
    configurable: true,
    get: () => (hidden ? 'hidden' : 'visible')
  });
  document.dispatchEvent(new Event('visibilitychange'));
}

const INTERVAL = 1000;

describe('GpuStatusModel', () => {
  let model: GpuStatusModel;
  let fake: ReturnType<typeof server>;
  const view = {};

  beforeEach(() => {
    vi.useFakeTimers();
    fake = server();
    fake.answerFreshReadings();
    model = new GpuStatusModel({ fetch: fake.fetch, interval: INTERVAL });
  });

  afterEach(() => {
    model.dispose();
    setTabHidden(false);
    vi.useRealTimers();
  });

  describe('polling', () => {
    it('sends no request while no view is visible', async () => {
      await vi.advanceTimersByTimeAsync(10 * INTERVAL);
      expect(fake.fetch).not.toHaveBeenCalled();
      model.setVisible(view, false);
      await vi.advanceTimersByTimeAsync(10 * INTERVAL);
      expect(fake.fetch).not.toHaveBeenCalled();
    });

    it('reads at once when a view shows, then every interval', async () => {
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(0);
      expect(fake.fetch).toHaveBeenCalledTimes(1);
      await vi.advanceTimersByTimeAsync(INTERVAL);
      expect(fake.fetch).toHaveBeenCalledTimes(2);
      await vi.advanceTimersByTimeAsync(3 * INTERVAL);
      expect(fake.fetch).toHaveBeenCalledTimes(5);
    });

    it('stops when the last view hides, and starts again when one shows', async () => {
      const other = {};
      model.setVisible(view, true);
      model.setVisible(other, true);
      await vi.advanceTimersByTimeAsync(2 * INTERVAL);
      const seen = fake.fetch.mock.calls.length;
      model.setVisible(view, false);
      await vi.advanceTimersByTimeAsync(INTERVAL);
      expect(fake.fetch.mock.calls.length).toBe(seen + 1);
      model.setVisible(other, false);
      await vi.advanceTimersByTimeAsync(20 * INTERVAL);
      expect(fake.fetch.mock.calls.length).toBe(seen + 1);
      expect(model.poll.state.phase).toBe('stopped');
      model.setVisible(other, true);
      await vi.advanceTimersByTimeAsync(0);
      expect(fake.fetch.mock.calls.length).toBe(seen + 2);
    });

    it('shares one poll between views: one request per interval', async () => {
      const views = [{}, {}, {}];
      views.forEach(v => model.setVisible(v, true));
      await vi.advanceTimersByTimeAsync(0);
      expect(fake.fetch).toHaveBeenCalledTimes(1);
      await vi.advanceTimersByTimeAsync(4 * INTERVAL);
      expect(fake.fetch).toHaveBeenCalledTimes(5);
    });

    it('stands by while the browser tab is hidden', async () => {
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(INTERVAL);
      const seen = fake.fetch.mock.calls.length;
      setTabHidden(true);
      await vi.advanceTimersByTimeAsync(20 * INTERVAL);
      expect(fake.fetch.mock.calls.length).toBe(seen);
      expect(model.poll.state.phase).toBe('standby');
      setTabHidden(false);
      await vi.advanceTimersByTimeAsync(INTERVAL);
      expect(fake.fetch.mock.calls.length).toBe(seen + 1);
    });

    it('applies a new interval at once', async () => {
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(0);
      model.interval = 5000;
      await vi.advanceTimersByTimeAsync(0);
      expect(fake.fetch).toHaveBeenCalledTimes(2);
      await vi.advanceTimersByTimeAsync(4999);
      expect(fake.fetch).toHaveBeenCalledTimes(2);
      await vi.advanceTimersByTimeAsync(1);
      expect(fake.fetch).toHaveBeenCalledTimes(3);
    });

    it('reads every second while runs are active, and at its interval again when none', async () => {
      model.dispose();
      model = new GpuStatusModel({ fetch: fake.fetch, interval: 5000 });
      const withRuns = (runs: number) => {
        let timestamp = 1800000000;
        fake.answerWith(() =>
          readingJson({
            timestamp: timestamp++,
            runs: Array.from({ length: runs }, (_, i) => ({ run_id: `r${i}` }))
          })
        );
      };
      const callsAfter = async (ms: number) => {
        const before = fake.fetch.mock.calls.length;
        await vi.advanceTimersByTimeAsync(ms);
        return fake.fetch.mock.calls.length - before;
      };
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(0);
      expect(fake.fetch).toHaveBeenCalledTimes(1);
      expect(model.pollInterval).toBe(5000);

      withRuns(1);
      expect(await callsAfter(5000)).toBe(1); // the reading that lists the run
      expect(model.pollInterval).toBe(GpuStatusModel.RUNS_INTERVAL_MS);
      expect(await callsAfter(999)).toBe(0);
      expect(await callsAfter(1)).toBe(1);
      expect(await callsAfter(4000)).toBe(4);
      expect(model.interval).toBe(5000); // the setting is unchanged

      withRuns(0);
      expect(await callsAfter(1000)).toBe(1); // the reading that lists none
      expect(model.pollInterval).toBe(5000);
      expect(await callsAfter(4999)).toBe(0);
      expect(await callsAfter(1)).toBe(1);
      expect(await callsAfter(20000)).toBe(4);
    });

    it('keeps a set interval shorter than a second while runs are active', async () => {
      fake.answerWith(() => readingJson({ runs: [{ run_id: 'r' }] }));
      model.interval = 500;
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(0);
      expect(model.pollInterval).toBe(500);
      model.interval = 3000;
      expect(model.pollInterval).toBe(GpuStatusModel.RUNS_INTERVAL_MS);
    });

    it('refuses an interval below the minimum', () => {
      expect(() => (model.interval = 10)).toThrow(/at least 500 ms; got 10/);
      expect(() => (model.interval = Number.NaN)).toThrow(/at least 500 ms/);
      expect(model.interval).toBe(INTERVAL);
    });

    it('sends nothing after it is disposed', async () => {
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(0);
      model.dispose();
      await vi.advanceTimersByTimeAsync(10 * INTERVAL);
      expect(fake.fetch).toHaveBeenCalledTimes(1);
    });
  });

  describe('errors', () => {
    it('backs off exponentially up to the maximum, then recovers', async () => {
      // The poll picks each wait at random between the interval and 3x the last wait;
      // always picking the top makes the growth exact.
      vi.spyOn(Math, 'random').mockReturnValue(0.999999);
      const waits: number[] = [];
      model.poll.ticked.connect((_, tick) => {
        if (tick.phase === 'rejected') {
          waits.push(tick.interval);
        }
      });
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(0);
      expect(model.state.reading).not.toBeNull();

      fake.fail(
        new GpuStatusError('unreachable', 'Cannot reach the Jupyter server.')
      );
      await vi.advanceTimersByTimeAsync(INTERVAL + 3000 + 9000 + 27000 + 30000);
      expect(waits).toEqual([3000, 9000, 27000, 30000, 30000]);
      expect(model.state.failures).toBe(5);
      expect(model.state.error?.kind).toBe('unreachable');
      expect(model.state.nextAttemptAt).toBe(Date.now() + 30000);
      // The last good reading stays, for the panel to show as stale.
      expect(model.state.reading).not.toBeNull();

      fake.answerFreshReadings();
      const calls = fake.fetch.mock.calls.length;
      await vi.advanceTimersByTimeAsync(30000);
      expect(fake.fetch.mock.calls.length).toBe(calls + 1);
      expect(model.state.error).toBeNull();
      expect(model.state.failures).toBe(0);
      expect(model.state.nextAttemptAt).toBeNull();
      // Back to the set interval.
      await vi.advanceTimersByTimeAsync(INTERVAL);
      expect(fake.fetch.mock.calls.length).toBe(calls + 2);
    });

    it('keeps the kind of an HTTP error, and wraps anything else', async () => {
      model.setVisible(view, true);
      fake.fail(httpError(404, ''));
      await vi.advanceTimersByTimeAsync(0);
      expect(model.state.error?.kind).toBe('missing');
      expect(model.state.error?.message).toContain(
        'jupyter server extension enable'
      );

      fake.fail(new TypeError('boom'));
      await model.refresh();
      await vi.advanceTimersByTimeAsync(0);
      expect(model.state.error).toBeInstanceOf(GpuStatusError);
      expect(model.state.error?.message).toContain('boom');
    });

    it('tells its views about every change', async () => {
      const changed = vi.fn();
      model.stateChanged.connect(changed);
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(0);
      expect(changed).toHaveBeenCalledTimes(1);
      fake.fail(httpError(500, 'NVML went away'));
      await vi.advanceTimersByTimeAsync(INTERVAL);
      expect(changed).toHaveBeenCalledTimes(2);
      expect(model.state.error?.message).toContain('HTTP 500: NVML went away');
    });
  });

  describe('readings and history', () => {
    it('keeps the unavailable state with its reason, and CPU and memory history', async () => {
      fake.answerWith(noNvmlJson);
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(0);
      expect(model.state.reading?.nvml.available).toBe(false);
      expect(model.state.reading?.nvml.reason).toContain('No NVIDIA driver');
      expect(model.series(SeriesKey.cpu).map(s => s.value)).toEqual([25.5]);
      expect(model.series(SeriesKey.memory).map(s => s.value)).toEqual([25]);
    });

    it('records utilization and memory percent per GPU, null where not reported', async () => {
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(INTERVAL);
      const [gpu0, gpu1] = readingJson().gpus;
      expect(
        model.series(SeriesKey.gpu(gpu0, 'utilization')).map(s => s.value)
      ).toEqual([37, 37]);
      expect(
        model.series(SeriesKey.gpu(gpu0, 'memory')).map(s => s.value)
      ).toEqual([15, 15]);
      expect(
        model.series(SeriesKey.gpu(gpu1, 'utilization')).map(s => s.value)
      ).toEqual([null, null]);
    });

    it('does not record the same server reading twice', async () => {
      fake.answerWith(() => readingJson({ timestamp: 42 }));
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(3 * INTERVAL);
      expect(fake.fetch).toHaveBeenCalledTimes(4);
      expect(model.series(SeriesKey.cpu)).toHaveLength(1);
    });

    it('forgets samples older than the window, and GPUs that went away', async () => {
      model.dispose();
      model = new GpuStatusModel({
        fetch: fake.fetch,
        interval: INTERVAL,
        historyMs: 5000
      });
      let gpus = [gpuJson(0), gpuJson(1)];
      let timestamp = 0;
      fake.answerWith(() => readingJson({ gpus, timestamp: timestamp++ }));
      model.setVisible(view, true);
      await vi.advanceTimersByTimeAsync(10 * INTERVAL);
      const key0 = SeriesKey.gpu(gpuJson(0), 'utilization');
      const key1 = SeriesKey.gpu(gpuJson(1), 'utilization');
      expect(model.series(key0)).toHaveLength(6);
      const times = model.series(key0).map(s => s.time);
      expect(times[times.length - 1] - times[0]).toBe(5000);

      gpus = [gpuJson(0)];
      await vi.advanceTimersByTimeAsync(10 * INTERVAL);
      expect(model.series(key0)).toHaveLength(6);
      expect(model.series(key1)).toHaveLength(0);
    });
  });
});
