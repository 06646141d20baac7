import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { GpuStatusError, httpError } from './errors';
import { parseGpuStatus } from './payload';
import { IGpuStatus } from './types';

/** The endpoint's path below the server's base URL. */
export const GPU_STATUS_PATH = 'gpu-status';

/**
 * One reading from `GET {base_url}gpu-status`.
 *
 * The request goes through ServerConnection, so the base URL, the token, the XSRF cookie and
 * JupyterHub prefixes are those of the page. Every failure is a GpuStatusError.
 */
export async function requestGpuStatus(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<IGpuStatus> {
  const url = URLExt.join(settings.baseUrl, GPU_STATUS_PATH);
  let response: Response;
  let body: string;
  try {
    response = await ServerConnection.makeRequest(
      url,
      { method: 'GET' },
      settings
    );
    body = await response.text();
  } catch (error) {
    throw new GpuStatusError(
      'unreachable',
      'Cannot reach the Jupyter server: it may have stopped, or the network is down.'
    );
  }
  if (!response.ok) {
    throw httpError(response.status, serverMessage(body));
  }
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (error) {
    throw new GpuStatusError(
      'invalid',
      "The server's answer to /gpu-status is not JSON. A proxy between this page and " +
        'Jupyter may be answering instead of the server.'
    );
  }
  return parseGpuStatus(json);
}

/** The `message` of a Jupyter error body, or nothing. */
function serverMessage(body: string): string {
  try {
    const json = JSON.parse(body);
    if (json && typeof json.message === 'string') {
      return json.message;
    }
  } catch {
    // not JSON: an HTML error page says nothing worth repeating
  }
  return '';
}
