import { ServerConnection } from '@jupyterlab/services';
import { describe, expect, it, vi } from 'vitest';

import { GpuStatusError } from '../errors';
import { requestGpuStatus } from '../request';
import { readingJson } from './fixtures';

const BASE_URL = 'http://127.0.0.1:8888/user/ada/';

function settingsAnswering(answer: (request: Request) => Promise<Response>) {
  const fetch = vi.fn((input: RequestInfo | URL, init?: RequestInit) =>
    answer(new Request(input, init))
  );
  const settings = ServerConnection.makeSettings({
    baseUrl: BASE_URL,
    token: 'secret-token',
    fetch
  });
  return { settings, fetch };
}

function json(status: number, body: unknown): Promise<Response> {
  return Promise.resolve(
    new Response(JSON.stringify(body), {
      status,
      headers: { 'Content-Type': 'application/json' }
    })
  );
}

async function failure(promise: Promise<unknown>): Promise<GpuStatusError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(GpuStatusError);
    return error as GpuStatusError;
  }
  throw new Error('the request succeeded');
}

describe('requestGpuStatus', () => {
  it("asks the page's server, below its base URL, with its token", async () => {
    const { settings, fetch } = settingsAnswering(() =>
      json(200, readingJson())
    );
    const reading = await requestGpuStatus(settings);
    expect(reading).toEqual(readingJson());
    expect(fetch).toHaveBeenCalledTimes(1);
    const [input, init] = fetch.mock.calls[0];
    const request = new Request(input, init);
    // ServerConnection adds a cache-busting query string; the path is what matters.
    const url = new URL(request.url);
    expect(`${url.origin}${url.pathname}`).toBe(`${BASE_URL}gpu-status`);
    expect(request.method).toBe('GET');
    expect(request.headers.get('Authorization')).toBe('token secret-token');
  });

  it('says the server is unreachable when the request cannot be made', async () => {
    const { settings } = settingsAnswering(() =>
      Promise.reject(new TypeError('Failed to fetch'))
    );
    const error = await failure(requestGpuStatus(settings));
    expect(error.kind).toBe('unreachable');
    expect(error.message).toContain('Cannot reach the Jupyter server');
  });

  it('says how to enable the server extension on 404', async () => {
    const { settings } = settingsAnswering(() =>
      json(404, { message: 'Not Found' })
    );
    const error = await failure(requestGpuStatus(settings));
    expect(error.kind).toBe('missing');
    expect(error.status).toBe(404);
    expect(error.message).toContain(
      'jupyter server extension enable lightning_magic'
    );
  });

  it('says to log in again on 403', async () => {
    const { settings } = settingsAnswering(() =>
      json(403, { message: 'Forbidden' })
    );
    const error = await failure(requestGpuStatus(settings));
    expect(error.kind).toBe('unauthorized');
    expect(error.message).toContain('HTTP 403: Forbidden');
    expect(error.message).toContain('log in again');
  });

  it("repeats the server's message on other errors", async () => {
    const { settings } = settingsAnswering(() =>
      json(503, { message: 'No reading of the machine within 30 s' })
    );
    const error = await failure(requestGpuStatus(settings));
    expect(error.kind).toBe('server');
    expect(error.message).toContain(
      'HTTP 503: No reading of the machine within 30 s'
    );
  });

  it('rejects an answer that is not JSON', async () => {
    const { settings } = settingsAnswering(() =>
      Promise.resolve(new Response('<html>login</html>', { status: 200 }))
    );
    const error = await failure(requestGpuStatus(settings));
    expect(error.kind).toBe('invalid');
    expect(error.message).toContain('not JSON');
  });
});
