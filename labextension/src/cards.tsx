import * as React from 'react';

import { CoreStrip, Meter, Sparkline } from './charts';
import {
  baseName,
  epochText,
  formatClock,
  formatClockTime,
  formatGiB,
  formatPercent,
  formatPower,
  formatTemperature,
  formatUsedTotal,
  isReported,
  NA,
  percentOf
} from './format';
import { ISample, SeriesKey } from './history';
import { ICpu, IDisk, IGpu, IGpuProcess, IMemory, IRun } from './types';

/** What every card needs to draw its sparklines. */
export interface IHistoryProps {
  series: (key: string) => readonly ISample[];
  end: number;
  windowMs: number;
}

export function GpuCard(
  props: { gpu: IGpu } & IHistoryProps
): React.ReactElement {
  const { gpu, series, end, windowMs } = props;
  const title = `GPU ${gpu.index}`;
  const name = gpu.name ?? 'Unknown GPU';
  const memory = percentOf(gpu.memory.used, gpu.memory.total);
  return (
    <section className="lmagic-Card" aria-label={`${title}: ${name}`}>
      <h3 className="lmagic-Card-title">
        <span className="lmagic-Card-index">{title}</span>
        <span
          className="lmagic-Card-name"
          title={gpu.uuid ? `${name} (${gpu.uuid})` : name}
        >
          {name}
        </span>
      </h3>
      {gpu.error && <p className="lmagic-Card-error">{gpu.error}</p>}
      <Meter
        label="Utilization"
        name={`${title} utilization`}
        percent={gpu.utilization.gpu}
        text={formatPercent(gpu.utilization.gpu)}
      />
      <Meter
        label="Memory"
        name={`${title} memory`}
        kind="memory"
        percent={memory}
        text={formatUsedTotal(gpu.memory.used, gpu.memory.total)}
      />
      <dl className="lmagic-Facts">
        <Fact term="Temperature" value={formatTemperature(gpu.temperature)} />
        <Fact
          term="Power"
          value={formatPower(gpu.power.draw, gpu.power.limit)}
        />
        <Fact term="Fan" value={formatPercent(gpu.fan)} />
        <Fact term="Perf. state" value={gpu.performance_state ?? NA} />
        <Fact term="SM clock" value={formatClock(gpu.clocks.sm)} />
        <Fact term="Mem. clock" value={formatClock(gpu.clocks.memory)} />
        <Fact
          term="ECC errors"
          value={eccText(gpu.ecc_errors.corrected, gpu.ecc_errors.uncorrected)}
        />
      </dl>
      <Sparkline
        name={`${title} utilization and memory`}
        end={end}
        windowMs={windowMs}
        lines={[
          {
            label: 'Utilization',
            className: 'lmagic-mod-utilization',
            samples: series(SeriesKey.gpu(gpu, 'utilization'))
          },
          {
            label: 'Memory',
            className: 'lmagic-mod-memory',
            samples: series(SeriesKey.gpu(gpu, 'memory'))
          }
        ]}
      />
      {gpu.mig.enabled && gpu.mig.instances.length > 0 && (
        <ul className="lmagic-Mig" aria-label={`${title} MIG instances`}>
          {gpu.mig.instances.map(instance => (
            <li key={instance.index}>
              MIG {instance.index}:{' '}
              {formatUsedTotal(instance.memory.used, instance.memory.total)}
            </li>
          ))}
        </ul>
      )}
      <ProcessTable title={title} processes={gpu.processes} />
    </section>
  );
}

function Fact(props: { term: string; value: string }): React.ReactElement {
  return (
    <div className="lmagic-Fact">
      <dt>{props.term}</dt>
      <dd className={props.value === NA ? 'lmagic-mod-na' : undefined}>
        {props.value}
      </dd>
    </div>
  );
}

function eccText(corrected: number | null, uncorrected: number | null): string {
  if (!isReported(corrected) && !isReported(uncorrected)) {
    return NA;
  }
  const show = (n: number | null) => (isReported(n) ? String(n) : NA);
  return `${show(corrected)} corr. / ${show(uncorrected)} uncorr.`;
}

function ProcessTable(props: {
  title: string;
  processes: IGpuProcess[];
}): React.ReactElement {
  const { title, processes } = props;
  if (!processes.length) {
    return <p className="lmagic-Processes-none">No processes on this GPU.</p>;
  }
  return (
    <table className="lmagic-Processes" aria-label={`Processes on ${title}`}>
      <thead>
        <tr>
          <th scope="col">PID</th>
          <th scope="col">GiB</th>
          <th scope="col">Owner</th>
        </tr>
      </thead>
      <tbody>
        {processes.map(process => (
          <tr key={process.pid}>
            <td>{process.pid}</td>
            <td>{formatGiB(process.memory_used)}</td>
            <td
              className="lmagic-Processes-owner"
              title={processTooltip(process)}
            >
              {processLabelLines(process).map((line, i) => (
                <span key={i} className="lmagic-Line">
                  {line}
                </span>
              ))}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/**
 * Who a GPU process is, as far as the server knows: its notebook (or kernel), and its rank of
 * which run (the id ``%lightning_runs`` lists; ``%lightning_stop`` takes its first characters),
 * else its program name or user.
 */
export function processLabel(process: IGpuProcess): string {
  return processLabelLines(process).join(' · ');
}

/**
 * The label on two lines for a narrow panel: the notebook (or kernel), then the rank.
 */
export function processLabelLines(process: IGpuProcess): string[] {
  const parts: string[] = [];
  if (process.notebook_path) {
    parts.push(baseName(process.notebook_path));
  } else if (process.kernel_id) {
    parts.push(`kernel ${process.kernel_id.slice(0, 8)}`);
  }
  if (isReported(process.rank)) {
    parts.push(
      process.run_id
        ? `rank ${process.rank} of run ${process.run_id.slice(0, 8)}`
        : `rank ${process.rank}`
    );
  } else if (process.role === 'kernel-child') {
    parts.push('forked from the kernel');
  }
  if (!parts.length) {
    parts.push(process.name ?? process.user ?? 'unknown');
  }
  return parts;
}

/** The full text behind a label the panel may shorten: path, rank, command, user. */
export function processTooltip(process: IGpuProcess): string {
  const lines: string[] = [];
  if (process.notebook_path) {
    lines.push(process.notebook_path);
  } else if (process.kernel_id) {
    lines.push(`kernel ${process.kernel_id}`);
  }
  const label = processLabelLines(process);
  lines.push(
    ...label.slice(process.notebook_path || process.kernel_id ? 1 : 0)
  );
  if (process.run_id) {
    lines.push(`run ${process.run_id}`);
  }
  if (process.command) {
    lines.push(process.command);
  }
  if (process.user) {
    lines.push(`user ${process.user}`);
  }
  return lines.join('\n');
}

export function SystemCard(
  props: { cpu: ICpu; memory: IMemory; disk: IDisk | null } & IHistoryProps
): React.ReactElement {
  const { cpu, memory, disk, series, end, windowMs } = props;
  const memoryPercent = memory.percent ?? percentOf(memory.used, memory.total);
  const cores = isReported(cpu.count) ? `${cpu.count} cores` : 'cores: n/a';
  return (
    <section className="lmagic-Card" aria-label="CPU and memory">
      <h3 className="lmagic-Card-title">
        <span className="lmagic-Card-index">CPU and memory</span>
        <span className="lmagic-Card-name">{cores}</span>
      </h3>
      <Meter
        label="CPU"
        name="CPU use"
        percent={cpu.percent}
        text={formatPercent(cpu.percent)}
      />
      <CoreStrip perCore={cpu.per_core} />
      <Meter
        label="Memory"
        name="Memory"
        kind="memory"
        percent={memoryPercent}
        text={formatUsedTotal(memory.used, memory.total)}
      />
      {disk && (
        <Meter
          label="Disk"
          name={`Disk of ${disk.path}`}
          kind="memory"
          percent={disk.percent ?? percentOf(disk.used, disk.total)}
          text={formatUsedTotal(disk.used, disk.total)}
        />
      )}
      <Sparkline
        name="CPU and memory"
        end={end}
        windowMs={windowMs}
        lines={[
          {
            label: 'CPU',
            className: 'lmagic-mod-utilization',
            samples: series(SeriesKey.cpu)
          },
          {
            label: 'Memory',
            className: 'lmagic-mod-memory',
            samples: series(SeriesKey.memory)
          }
        ]}
      />
    </section>
  );
}

export function RunList(props: { runs: IRun[] }): React.ReactElement | null {
  const { runs } = props;
  if (!runs.length) {
    return null;
  }
  return (
    <section className="lmagic-Card lmagic-Runs" aria-label="Training runs">
      <h3 className="lmagic-Card-title">
        <span className="lmagic-Card-index">Training runs</span>
        <span className="lmagic-Card-name">{runs.length} active</span>
      </h3>
      <ul>
        {runs.map((run, i) => (
          <li
            key={run.run_id ?? i}
            className="lmagic-Run"
            title={`${runName(run)}\n${runProgress(run)}`}
          >
            <span className="lmagic-Run-name">{runModel(run)}</span>
            <span className="lmagic-Run-where">{runWhere(run)}</span>
            <span className="lmagic-Run-progress">{runProgress(run)}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}

export function runName(run: IRun): string {
  const model = runModel(run);
  return model ? `${model} · ${runWhere(run)}` : runWhere(run);
}

/** "Classifier on 2 CPUs", or "" when the run does not say its model. */
export function runModel(run: IRun): string {
  if (typeof run.model !== 'string' || !run.model) {
    return '';
  }
  const count = isReported(run.num_processes) ? run.num_processes : null;
  const on =
    count && typeof run.accelerator === 'string'
      ? ` on ${count} ${run.accelerator.toUpperCase()}${count > 1 ? 's' : ''}`
      : '';
  return `${run.model}${on}`;
}

/** The notebook (or kernel) the run belongs to. */
export function runWhere(run: IRun): string {
  if (typeof run.notebook_path === 'string' && run.notebook_path) {
    return baseName(run.notebook_path);
  }
  if (typeof run.kernel_id === 'string' && run.kernel_id) {
    return `kernel ${run.kernel_id.slice(0, 8)}`;
  }
  return typeof run.run_id === 'string' && run.run_id ? run.run_id : 'run';
}

export function runProgress(run: IRun): string {
  const parts: string[] = [];
  if (isReported(run.epoch)) {
    parts.push(epochText(run.epoch, run.max_epochs));
  }
  if (isReported(run.step)) {
    parts.push(`step ${run.step}`);
  }
  if (isReported(run.started)) {
    parts.push(`since ${formatClockTime(run.started * 1000)}`);
  }
  return parts.length ? parts.join(' · ') : 'starting';
}
