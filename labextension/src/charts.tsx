import * as React from 'react';

import { clampPercent, formatPercent, isReported } from './format';
import { ISample } from './history';

/** At or above this percent a bar or a core is drawn in the warning colour. */
export const HIGH_PERCENT = 90;

/**
 * A horizontal bar with its number beside it. The bar is an ARIA meter named `name`, so a
 * screen reader says e.g. "GPU 0 memory, 12.3 / 80.0 GiB".
 */
export function Meter(props: {
  label: string;
  name: string;
  percent: number | null;
  text: string;
  /** Memory bars take the colour of memory lines in the sparklines. */
  kind?: 'utilization' | 'memory';
}): React.ReactElement {
  const { label, name, percent, text, kind = 'utilization' } = props;
  const reported = isReported(percent);
  const width = reported ? clampPercent(percent) : 0;
  const classes = ['lmagic-Meter', `lmagic-mod-${kind}`];
  if (!reported) {
    classes.push('lmagic-mod-na');
  } else if (width >= HIGH_PERCENT) {
    classes.push('lmagic-mod-high');
  }
  return (
    <div className={classes.join(' ')}>
      <span className="lmagic-Meter-label">{label}</span>
      <div
        className="lmagic-Meter-track"
        role="meter"
        aria-label={name}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={reported ? Math.round(width) : undefined}
        aria-valuetext={text}
      >
        <div className="lmagic-Meter-fill" style={{ width: `${width}%` }} />
      </div>
      <span className="lmagic-Meter-value">{text}</span>
    </div>
  );
}

/** One line of a sparkline: its samples, a legend label and the CSS class that colours it. */
export interface ILine {
  label: string;
  className: string;
  samples: readonly ISample[];
}

const WIDTH = 100;
const HEIGHT = 24;

/**
 * Percent series as lines on a 0-100% scale, over the last `windowMs` up to `end`, or over
 * the time since the first sample when that is shorter (so a new panel fills its chart at once
 * instead of drawing a sliver at the right edge). A value not reported is a gap in its line.
 */
export function Sparkline(props: {
  name: string;
  lines: ILine[];
  end: number;
  windowMs: number;
}): React.ReactElement {
  const { name, lines, end, windowMs } = props;
  const start = chartStart(lines, end, windowMs);
  const span = `last ${formatSpan(end - start)}`;
  const summary = lines
    .map(line => `${line.label} ${describe(line.samples)}`)
    .join('; ');
  return (
    <figure className="lmagic-Sparkline">
      <svg
        className="lmagic-Sparkline-chart"
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        preserveAspectRatio="none"
        role="img"
        aria-label={`${name} over the ${span}: ${summary}`}
      >
        {lines.map(line =>
          segments(line.samples, start, end).map((points, i) => (
            <polyline
              key={`${line.className}-${i}`}
              className={line.className}
              points={points}
              vectorEffect="non-scaling-stroke"
            />
          ))
        )}
      </svg>
      <figcaption className="lmagic-Sparkline-legend">
        {lines.map(line => (
          <span key={line.className} className="lmagic-Sparkline-key">
            <span className={`lmagic-Sparkline-swatch ${line.className}`} />
            {line.label}
          </span>
        ))}
        <span className="lmagic-Sparkline-span">{span}</span>
      </figcaption>
    </figure>
  );
}

/** Where the time axis starts: the window's start, or the first sample inside it. */
export function chartStart(
  lines: ILine[],
  end: number,
  windowMs: number
): number {
  const windowStart = end - windowMs;
  let first = end;
  for (const line of lines) {
    if (line.samples.length && line.samples[0].time <= windowStart) {
      return windowStart;
    }
    const inside = line.samples.find(sample => sample.time >= windowStart);
    if (inside && inside.time < first) {
      first = inside.time;
    }
  }
  return first;
}

/** SVG `points` strings, one per run of reported values between `start` and `end`. */
export function segments(
  samples: readonly ISample[],
  start: number,
  end: number
): string[] {
  const span = end - start;
  const runs: string[][] = [];
  let current: string[] | null = null;
  for (const sample of samples) {
    if (sample.time < start || sample.time > end || !isReported(sample.value)) {
      current = null;
      continue;
    }
    if (!current) {
      current = [];
      runs.push(current);
    }
    // With a single instant to show, it sits at the right edge, where "now" is.
    const x = span > 0 ? ((sample.time - start) / span) * WIDTH : WIDTH;
    const y = HEIGHT - (clampPercent(sample.value) / 100) * HEIGHT;
    current.push(`${round(x)},${round(y)}`);
  }
  // A lone point would draw nothing: give it a short flat stroke.
  return runs.map(points =>
    points.length === 1 ? `${points[0]} ${points[0]}` : points.join(' ')
  );
}

/** "12 s", "4 min". */
function formatSpan(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
}

function describe(samples: readonly ISample[]): string {
  const values = samples.map(s => s.value).filter(isReported);
  if (!values.length) {
    return 'not reported';
  }
  return `now ${formatPercent(values[values.length - 1])}, peak ${formatPercent(Math.max(...values))}`;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

/** Per-core use at a glance: one small column per core, filled to its percent. */
export function CoreStrip(props: {
  perCore: (number | null)[];
}): React.ReactElement | null {
  const { perCore } = props;
  if (!perCore.length) {
    return null;
  }
  const label = perCore
    .map((value, core) => `core ${core} ${formatPercent(value)}`)
    .join(', ');
  return (
    <div
      className="lmagic-Cores"
      role="img"
      aria-label={`Per-core use: ${label}`}
    >
      {perCore.map((value, core) => {
        const reported = isReported(value);
        const height = reported ? clampPercent(value) : 0;
        const classes = ['lmagic-Cores-core'];
        if (!reported) {
          classes.push('lmagic-mod-na');
        } else if (height >= HIGH_PERCENT) {
          classes.push('lmagic-mod-high');
        }
        return (
          <span
            key={core}
            className={classes.join(' ')}
            title={`Core ${core}: ${formatPercent(value)}`}
          >
            <span
              className="lmagic-Cores-fill"
              style={{ height: `${height}%` }}
            />
          </span>
        );
      })}
    </div>
  );
}
