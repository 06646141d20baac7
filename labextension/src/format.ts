/**
 * How readings read in the panel. A value the hardware does not report (null) is "n/a",
 * never 0.
 */

export const NA = 'n/a';

const GIB = 1024 ** 3;

export function isReported(value: number | null | undefined): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** `used` as a percent of `total`, or null when either is unknown or `total` is 0. */
export function percentOf(
  used: number | null | undefined,
  total: number | null | undefined
): number | null {
  if (!isReported(used) || !isReported(total) || total <= 0) {
    return null;
  }
  return clampPercent((100 * used) / total);
}

export function clampPercent(value: number): number {
  return Math.min(100, Math.max(0, value));
}

/** "37%" (rounded to whole percents). */
export function formatPercent(value: number | null | undefined): string {
  return isReported(value) ? `${Math.round(value)}%` : NA;
}

/** Bytes as GiB with one decimal: "12.3". */
export function formatGiB(bytes: number | null | undefined): string {
  return isReported(bytes) ? (bytes / GIB).toFixed(1) : NA;
}

/** "12.3 / 80.0 GiB"; either side can be "n/a" on its own. */
export function formatUsedTotal(
  used: number | null | undefined,
  total: number | null | undefined
): string {
  if (!isReported(used) && !isReported(total)) {
    return NA;
  }
  return `${formatGiB(used)} / ${formatGiB(total)} GiB`;
}

/** "54 °C". */
export function formatTemperature(celsius: number | null | undefined): string {
  return isReported(celsius) ? `${Math.round(celsius)} °C` : NA;
}

/** "120 / 400 W"; "120 W" when the limit is unknown. */
export function formatPower(
  draw: number | null | undefined,
  limit: number | null | undefined
): string {
  if (!isReported(draw) && !isReported(limit)) {
    return NA;
  }
  if (!isReported(limit)) {
    return `${Math.round(draw as number)} W`;
  }
  return `${isReported(draw) ? Math.round(draw) : NA} / ${Math.round(limit)} W`;
}

/** "1410 MHz". */
export function formatClock(mhz: number | null | undefined): string {
  return isReported(mhz) ? `${Math.round(mhz)} MHz` : NA;
}

/** A client time (ms since the epoch) as the local wall-clock time, "14:02:31". */
export function formatClockTime(ms: number): string {
  const date = new Date(ms);
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map(part => String(part).padStart(2, '0'))
    .join(':');
}

/**
 * An epoch as Lightning names it, written as the notebook's view writes it (the package's
 * `view.render.epoch_text`): its index (`trainer.current_epoch`), and the last index when there
 * is a limit, "epoch 33/299" for the 34th of `max_epochs=300`. After the last epoch Lightning's
 * count moves past the end; the text stays on the last, as the view's does.
 */
export function epochText(epoch: number, maxEpochs?: number | null): string {
  if (!isReported(maxEpochs) || maxEpochs <= 0) {
    return `epoch ${epoch}`;
  }
  return `epoch ${Math.min(epoch, maxEpochs - 1)}/${maxEpochs - 1}`;
}

/** "2 s", "0.5 s", "1 min", "1 min 30 s". */
export function formatSeconds(ms: number): string {
  const seconds = ms / 1000;
  if (seconds < 60) {
    return `${Number.isInteger(seconds) ? seconds : seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  const rest = Math.round(seconds - 60 * minutes);
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}

/** The last part of a notebook path: "experiments/mnist.ipynb" -> "mnist.ipynb". */
export function baseName(path: string): string {
  const parts = path.split('/').filter(part => part.length > 0);
  return parts.length ? parts[parts.length - 1] : path;
}
