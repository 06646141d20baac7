import { Widget } from '@lumino/widgets';
import { afterEach, beforeEach, describe, expect, it, Mock, vi } from 'vitest';

import { GpuStatusModel } from '../model';
import { GpuStatusPanel, PANEL_ID } from '../panel';
import { IGpuStatus } from '../types';
import { readingJson } from './fixtures';

const INTERVAL = 1000;

describe('GpuStatusPanel', () => {
  let fetch: Mock<() => Promise<IGpuStatus>>;
  let model: GpuStatusModel;
  let timestamp = 0;

  beforeEach(() => {
    vi.useFakeTimers();
    fetch = vi.fn(async () => readingJson({ timestamp: timestamp++ }));
    model = new GpuStatusModel({ fetch, interval: INTERVAL });
  });

  afterEach(() => {
    model.dispose();
    vi.useRealTimers();
  });

  it('has the id the shell and the layout restorer know it by', () => {
    const panel = new GpuStatusPanel(model);
    expect(panel.id).toBe(PANEL_ID);
    expect(panel.title.caption).toBe('GPU Status');
    panel.dispose();
  });

  it('polls only while it is shown', async () => {
    const panel = new GpuStatusPanel(model);
    panel.hide();
    Widget.attach(panel, document.body);
    await vi.advanceTimersByTimeAsync(5 * INTERVAL);
    expect(fetch).not.toHaveBeenCalled();

    panel.show();
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(fetch).toHaveBeenCalledTimes(2);

    panel.hide();
    await vi.advanceTimersByTimeAsync(10 * INTERVAL);
    expect(fetch).toHaveBeenCalledTimes(2);

    panel.show();
    await vi.advanceTimersByTimeAsync(0);
    expect(fetch).toHaveBeenCalledTimes(3);

    panel.dispose();
    await vi.advanceTimersByTimeAsync(10 * INTERVAL);
    expect(fetch).toHaveBeenCalledTimes(3);
  });

  it('renders what the model holds', async () => {
    const panel = new GpuStatusPanel(model);
    Widget.attach(panel, document.body);
    await vi.advanceTimersByTimeAsync(0);
    // React renders asynchronously; let it finish on the (fake) clock.
    await vi.waitFor(() => {
      expect(
        panel.node.querySelectorAll('section[aria-label^="GPU "]')
      ).toHaveLength(2);
    });
    expect(panel.node.textContent).toContain('NVIDIA A100-SXM4-80GB');
    panel.dispose();
  });

  it('shares its model with another view: one request per interval for both', async () => {
    const left = new GpuStatusPanel(model);
    const right = new GpuStatusPanel(model);
    Widget.attach(left, document.body);
    Widget.attach(right, document.body);
    await vi.advanceTimersByTimeAsync(3 * INTERVAL);
    expect(fetch).toHaveBeenCalledTimes(4);
    left.dispose();
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(fetch).toHaveBeenCalledTimes(5);
    right.dispose();
    await vi.advanceTimersByTimeAsync(5 * INTERVAL);
    expect(fetch).toHaveBeenCalledTimes(5);
  });
});
