/**
 * Why a reading could not be had, with a message written for the person looking at the panel.
 */
export type GpuStatusErrorKind =
  /** No answer at all: the server stopped, or the network is down. */
  | 'unreachable'
  /** 401 or 403: the login expired or the token is wrong. */
  | 'unauthorized'
  /** 404: the server runs without the lightning_magic server extension. */
  | 'missing'
  /** Any other HTTP error. */
  | 'server'
  /** An answer that is not a GPU status reading. */
  | 'invalid';

export class GpuStatusError extends Error {
  constructor(
    readonly kind: GpuStatusErrorKind,
    message: string,
    readonly status: number | null = null
  ) {
    super(message);
    this.name = 'GpuStatusError';
  }
}

/**
 * The error for an HTTP status other than 2xx; `detail` is the server's own message, if any.
 */
export function httpError(status: number, detail: string): GpuStatusError {
  const said = detail ? `: ${detail}` : '';
  if (status === 401 || status === 403) {
    return new GpuStatusError(
      'unauthorized',
      `The Jupyter server refused to give GPU readings (HTTP ${status}${said}). ` +
        'Your login may have expired: reload the page and log in again.',
      status
    );
  }
  if (status === 404) {
    return new GpuStatusError(
      'missing',
      'The Jupyter server has no /gpu-status endpoint (HTTP 404): the lightning_magic ' +
        'server extension is not enabled there. Run ' +
        '`jupyter server extension enable lightning_magic` and restart Jupyter.',
      status
    );
  }
  return new GpuStatusError(
    'server',
    `The Jupyter server could not give GPU readings (HTTP ${status}${said}). ` +
      "The server's log says why.",
    status
  );
}

/**
 * Any failure as a GpuStatusError, so the panel always has something to say.
 */
export function asGpuStatusError(error: unknown): GpuStatusError {
  if (error instanceof GpuStatusError) {
    return error;
  }
  const detail = error instanceof Error ? error.message : String(error);
  return new GpuStatusError(
    'invalid',
    `Reading the GPU status failed unexpectedly: ${detail}`
  );
}
