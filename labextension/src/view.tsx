import * as React from 'react';

import { GpuCard, IHistoryProps, RunList, SystemCard } from './cards';
import { formatClockTime, formatSeconds } from './format';
import { ISample } from './history';
import type { GpuStatusModel } from './model';
import { IGpuStatus, INvmlStatus } from './types';

export interface IGpuStatusViewProps {
  state: GpuStatusModel.IState;
  series: (key: string) => readonly ISample[];
  interval: number;
  historyMs: number;
}

/** Everything the panel shows, drawn from the model's state alone. */
export function GpuStatusView(props: IGpuStatusViewProps): React.ReactElement {
  const { state, series, interval, historyMs } = props;
  const { reading, receivedAt, error } = state;
  return (
    <div className="lmagic-View">
      <header className="lmagic-Header">
        <h2 className="lmagic-Header-title">GPU Status</h2>
        <span className="lmagic-Header-status">
          {receivedAt === null
            ? `every ${formatSeconds(interval)}`
            : `updated ${formatClockTime(receivedAt)} · every ${formatSeconds(interval)}`}
        </span>
      </header>
      {error && (
        <div className="lmagic-Notice lmagic-mod-error" role="alert">
          <p>{error.message}</p>
          <p className="lmagic-Notice-detail">
            {state.nextAttemptAt !== null &&
              `Next try at ${formatClockTime(state.nextAttemptAt)}` +
                (state.failures > 1
                  ? ` (${state.failures} failures in a row).`
                  : '.')}
            {reading &&
              receivedAt !== null &&
              ` The readings below are from ${formatClockTime(receivedAt)}.`}
          </p>
        </div>
      )}
      {!reading && !error && (
        <p className="lmagic-Waiting" role="status">
          Waiting for the first reading…
        </p>
      )}
      {reading && receivedAt !== null && (
        <Readings
          reading={reading}
          stale={error !== null}
          series={series}
          end={receivedAt}
          windowMs={historyMs}
        />
      )}
    </div>
  );
}

function Readings(
  props: { reading: IGpuStatus; stale: boolean } & IHistoryProps
): React.ReactElement {
  const { reading, stale, ...history } = props;
  return (
    <div
      className={stale ? 'lmagic-Readings lmagic-mod-stale' : 'lmagic-Readings'}
      aria-busy={false}
    >
      <NvmlNotice nvml={reading.nvml} gpuCount={reading.gpus.length} />
      {reading.gpus.map(gpu => (
        <GpuCard
          key={gpu.uuid ?? `index-${gpu.index}`}
          gpu={gpu}
          {...history}
        />
      ))}
      <RunList runs={reading.runs} />
      <SystemCard
        cpu={reading.cpu}
        memory={reading.memory}
        disk={reading.disk}
        {...history}
      />
      {reading.nvml.available && reading.nvml.driver_version && (
        <p className="lmagic-Footer">
          NVIDIA driver {reading.nvml.driver_version}
        </p>
      )}
    </div>
  );
}

/** Why there are no GPU cards, when there are none. */
function NvmlNotice(props: {
  nvml: INvmlStatus;
  gpuCount: number;
}): React.ReactElement | null {
  const { nvml, gpuCount } = props;
  if (!nvml.available) {
    return (
      <div className="lmagic-Notice lmagic-mod-info" role="status">
        <p>
          <strong>No GPU readings.</strong>{' '}
          {nvml.reason ?? 'NVML, the NVIDIA driver library, is not available.'}
        </p>
        <p className="lmagic-Notice-detail">CPU and memory below are live.</p>
      </div>
    );
  }
  if (gpuCount === 0) {
    return (
      <div className="lmagic-Notice lmagic-mod-info" role="status">
        <p>
          <strong>No GPUs.</strong> The NVIDIA driver is loaded but lists no
          GPUs for this server. Check <code>nvidia-smi</code> and{' '}
          <code>CUDA_VISIBLE_DEVICES</code>.
        </p>
      </div>
    );
  }
  return null;
}
