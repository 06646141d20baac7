import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';

import { GpuStatusError } from '../errors';
import { ISample, SeriesKey } from '../history';
import { GpuStatusModel } from '../model';
import { IGpuStatus } from '../types';
import { GpuStatusView } from '../view';
import { gpuJson, noNvmlJson, readingJson } from './fixtures';

const NOW = new Date(2024, 0, 1, 14, 2, 31).getTime();

function render(
  state: Partial<GpuStatusModel.IState>,
  series: (key: string) => readonly ISample[] = () => []
): HTMLElement {
  const full: GpuStatusModel.IState = {
    reading: null,
    receivedAt: null,
    error: null,
    failures: 0,
    nextAttemptAt: null,
    ...state
  };
  const host = document.createElement('div');
  host.innerHTML = renderToStaticMarkup(
    <GpuStatusView
      state={full}
      series={series}
      interval={2000}
      historyMs={300000}
    />
  );
  return host;
}

function withReading(
  reading: IGpuStatus,
  extra: Partial<GpuStatusModel.IState> = {}
) {
  return render({ reading, receivedAt: NOW, ...extra });
}

function card(host: HTMLElement, label: string): HTMLElement {
  const found = host.querySelector<HTMLElement>(
    `section[aria-label^="${label}"]`
  );
  if (!found) {
    throw new Error(`no card labelled ${label}`);
  }
  return found;
}

function fact(section: HTMLElement, term: string): string | null | undefined {
  const dt = [...section.querySelectorAll('dt')].find(
    el => el.textContent === term
  );
  return dt?.nextElementSibling?.textContent;
}

describe('GpuStatusView', () => {
  it('waits for the first reading', () => {
    const host = render({});
    expect(host.textContent).toContain('Waiting for the first reading');
    expect(host.querySelector('section')).toBeNull();
  });

  it('shows one card per GPU with named bars and their numbers', () => {
    const host = withReading(readingJson());
    const gpu0 = card(host, 'GPU 0: NVIDIA A100-SXM4-80GB');
    const meters = [...gpu0.querySelectorAll('[role="meter"]')];
    expect(meters.map(m => m.getAttribute('aria-label'))).toEqual([
      'GPU 0 utilization',
      'GPU 0 memory'
    ]);
    expect(meters[0].getAttribute('aria-valuenow')).toBe('37');
    expect(meters[1].getAttribute('aria-valuetext')).toBe('12.0 / 80.0 GiB');
    expect(fact(gpu0, 'Temperature')).toBe('54 °C');
    expect(fact(gpu0, 'Power')).toBe('121 / 400 W');
    expect(host.textContent).toContain('updated 14:02:31 · every 2 s');
  });

  it('shows unsupported fields as n/a, not 0', () => {
    const gpu1 = card(withReading(readingJson()), 'GPU 1');
    expect(fact(gpu1, 'Temperature')).toBe('n/a');
    expect(fact(gpu1, 'Power')).toBe('n/a');
    expect(fact(gpu1, 'Fan')).toBe('n/a');
    const utilization = gpu1.querySelector('[aria-label="GPU 1 utilization"]')!;
    expect(utilization.hasAttribute('aria-valuenow')).toBe(false);
    expect(utilization.getAttribute('aria-valuetext')).toBe('n/a');
    expect(
      gpu1
        .querySelector('[aria-label="GPU 1 memory"]')!
        .getAttribute('aria-valuetext')
    ).toBe('n/a / 4.0 GiB');
    expect(gpu1.textContent).not.toContain('0%');
  });

  it('labels GPU processes with their notebook, rank and run', () => {
    const gpu0 = card(withReading(readingJson()), 'GPU 0');
    const row = gpu0.querySelector('tbody tr')!;
    expect(row.textContent).toContain('4242');
    const owner = row.querySelector('.lmagic-Processes-owner')!;
    // notebook and rank on two lines, so both stay readable at the default width
    expect(
      Array.from(owner.querySelectorAll('.lmagic-Line')).map(l => l.textContent)
    ).toEqual(['mnist.ipynb', 'rank 1 of run run-1']);
    const tooltip = owner.getAttribute('title')!;
    expect(tooltip).toContain('ipykernel_launcher');
    expect(tooltip.split('\n').slice(0, 3)).toEqual([
      'experiments/mnist.ipynb',
      'rank 1 of run run-1',
      'run run-1'
    ]);
  });

  it('explains a missing NVML and keeps CPU and memory', () => {
    const host = withReading(noNvmlJson());
    expect(host.querySelector('[role="status"]')!.textContent).toContain(
      'No NVIDIA driver found'
    );
    expect(host.textContent).toContain('CPU and memory below are live');
    expect(host.querySelectorAll('section[aria-label^="GPU"]')).toHaveLength(0);
    const system = card(host, 'CPU and memory');
    expect(
      system
        .querySelector('[aria-label="CPU use"]')!
        .getAttribute('aria-valuenow')
    ).toBe('26');
    expect(
      system.querySelector('[role="img"][aria-label^="Per-core use"]')
    ).not.toBeNull();
  });

  it('shows an error, when it tries again, and the stale readings', () => {
    const error = new GpuStatusError(
      'unreachable',
      'Cannot reach the Jupyter server.'
    );
    const host = withReading(readingJson(), {
      error,
      failures: 3,
      nextAttemptAt: NOW + 9000
    });
    const alert = host.querySelector('[role="alert"]')!;
    expect(alert.textContent).toContain('Cannot reach the Jupyter server.');
    expect(alert.textContent).toContain(
      'Next try at 14:02:40 (3 failures in a row).'
    );
    expect(alert.textContent).toContain(
      'The readings below are from 14:02:31.'
    );
    expect(
      host.querySelector('.lmagic-Readings.lmagic-mod-stale')
    ).not.toBeNull();
  });

  it('shows an error before any reading without a stale note', () => {
    const error = new GpuStatusError(
      'missing',
      'The Jupyter server has no /gpu-status.'
    );
    const host = render({ error, failures: 1, nextAttemptAt: NOW });
    expect(host.querySelector('[role="alert"]')!.textContent).not.toContain(
      'readings below'
    );
    expect(host.textContent).not.toContain('Waiting');
  });

  it('spans the whole window once the history reaches that far back', () => {
    const gpu = gpuJson(0);
    const samples: ISample[] = [
      { time: NOW - 600000, value: 90 },
      { time: NOW - 150000, value: 20 },
      { time: NOW, value: 60 }
    ];
    const host = render(
      { reading: readingJson({ gpus: [gpu] }), receivedAt: NOW },
      key => (key === SeriesKey.gpu(gpu, 'utilization') ? samples : [])
    );
    const gpuCard = card(host, 'GPU 0');
    expect(gpuCard.querySelector('polyline')!.getAttribute('points')).toBe(
      '50,19.2 100,9.6'
    );
    expect(gpuCard.querySelector('figcaption')!.textContent).toContain(
      'last 5 min'
    );
  });

  it('lists active training runs', () => {
    const host = withReading(
      readingJson({
        runs: [
          {
            run_id: 'r1',
            notebook_path: 'work/mnist.ipynb',
            epoch: 2,
            step: 310
          }
        ]
      })
    );
    const runs = card(host, 'Training runs');
    expect(runs.textContent).toContain('mnist.ipynb');
    // Lightning's epoch 2 (the third), as the notebook's view and checkpoint names write it
    expect(runs.querySelector('.lmagic-Run-progress')!.textContent).toBe(
      'epoch 2 · step 310'
    );
  });

  it('writes the epoch of a run with its limit, as the notebook view does', () => {
    const progress = (epoch: number, max_epochs: number | null) =>
      card(
        withReading(
          readingJson({ runs: [{ run_id: 'r3', epoch, max_epochs, step: 7 }] })
        ),
        'Training runs'
      ).querySelector('.lmagic-Run-progress')!.textContent;
    // Lightning's RichProgressBar: the 34th epoch of max_epochs=300
    expect(progress(33, 300)).toBe('epoch 33/299 · step 7');
    expect(progress(0, 1)).toBe('epoch 0/0 · step 7');
    expect(progress(300, 300)).toBe('epoch 299/299 · step 7'); // past the end: the last
    expect(progress(33, null)).toBe('epoch 33 · step 7'); // no epoch limit
  });

  it('names a run by its model, devices and notebook', () => {
    const host = withReading(
      readingJson({
        runs: [
          {
            run_id: 'r2',
            notebook_path: 'work/cifar.ipynb',
            model: 'ResNet',
            accelerator: 'gpu',
            num_processes: 4,
            epoch: 0,
            step: 12
          }
        ]
      })
    );
    const run = card(host, 'Training runs').querySelector('.lmagic-Run')!;
    // two lines at the panel's default width, the whole text in the tooltip
    expect(run.querySelector('.lmagic-Run-name')!.textContent).toBe(
      'ResNet on 4 GPUs'
    );
    expect(run.querySelector('.lmagic-Run-where')!.textContent).toBe(
      'cifar.ipynb'
    );
    expect(run.getAttribute('title')).toBe(
      'ResNet on 4 GPUs · cifar.ipynb\nepoch 0 · step 12'
    );
  });

  it('draws the history as sparklines, with gaps where values were not reported', () => {
    const gpu = gpuJson(0);
    const samples: ISample[] = [
      { time: NOW - 4000, value: 10 },
      { time: NOW - 2000, value: null },
      { time: NOW - 1000, value: 50 },
      { time: NOW, value: 100 }
    ];
    const empty = withReading(readingJson({ gpus: [gpu] }));
    expect(empty.querySelectorAll('polyline')).toHaveLength(0);
    const drawn = render(
      { reading: readingJson({ gpus: [gpu] }), receivedAt: NOW },
      key => (key === SeriesKey.gpu(gpu, 'utilization') ? samples : [])
    );
    const lines = [...card(drawn, 'GPU 0').querySelectorAll('polyline')];
    expect(lines).toHaveLength(2);
    // x: 0-100 from the first sample (less than the window ago) to now; y: 24 (0%) to 0 (100%).
    expect(lines[0].getAttribute('points')).toBe('0,21.6 0,21.6');
    expect(lines[1].getAttribute('points')).toBe('75,12 100,0');
    const chart = card(drawn, 'GPU 0').querySelector('svg[role="img"]')!;
    expect(chart.getAttribute('aria-label')).toContain('over the last 4 s');
    expect(chart.getAttribute('aria-label')).toContain(
      'Utilization now 100%, peak 100%'
    );
    expect(chart.getAttribute('aria-label')).toContain('Memory not reported');
  });
});
