// HTTP(S) requests for the registry client on node:http/https: redirects followed (credentials
// dropped when the host changes: blob redirects go to CDNs), an idle timeout on the socket for the
// whole exchange (headers and body), and the classification of failures into transient ones
// (connection errors, timeouts, 5xx, 429) worth a retry with backoff, and the rest.
import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export interface HttpRequest {
  method?: 'GET' | 'HEAD' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** No byte for this long (connect, headers or body) fails the request (default 30 s). */
  idleTimeoutMs?: number;
  /** Accept any TLS certificate (--insecure). */
  insecureTls?: boolean;
  /** Follow at most this many redirects (default 5). */
  maxRedirects?: number;
}

export interface HttpResponse {
  status: number;
  statusText: string;
  headers: IncomingMessage['headers'];
  /** The URL that answered (after redirects). */
  url: URL;
  body: IncomingMessage;
}

/** A failure worth retrying: connection refused/reset, timeout, truncated body, 5xx, 429. */
export class TransientError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TransientError';
  }
}

const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

export function isTransient(e: unknown): boolean {
  if (e instanceof TransientError) return true;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code !== undefined && TRANSIENT_CODES.has(code);
}

export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/** Loopback registries may speak plain HTTP without --insecure (docker does the same). */
export function isLoopbackHost(host: string): boolean {
  const bracketed = /^\[(.*)\](?::\d+)?$/.exec(host);
  // A bare IPv6 address has colons of its own and no port.
  const h = (bracketed?.[1] ?? (host.split(':').length > 2 ? host : host.replace(/:\d+$/, ''))).toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Send a request; redirects are followed. The caller must consume or destroy `body`. */
export async function httpRequest(url: URL, req: HttpRequest = {}): Promise<HttpResponse> {
  let current = url;
  let headers = { ...req.headers };
  for (let hop = 0; ; hop++) {
    const res = await once(current, { ...req, headers });
    if (res.status >= 300 && res.status < 400 && res.headers.location !== undefined) {
      res.body.resume();
      if (hop >= (req.maxRedirects ?? 5)) throw new Error(`${url.host}: too many redirects`);
      const next = new URL(res.headers.location, current);
      if (next.host !== current.host) {
        // Registry credentials are for the registry only, never for the CDN it redirects to.
        const { authorization: _a, Authorization: _b, ...rest } = headers;
        headers = rest;
      }
      if (current.protocol === 'https:' && next.protocol !== 'https:') {
        throw new Error(`${url.host}: refusing a redirect from https to ${next.protocol}`);
      }
      current = next;
      continue;
    }
    return res;
  }
}

function once(url: URL, req: HttpRequest): Promise<HttpResponse> {
  return new Promise<HttpResponse>((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const timeoutMs = req.idleTimeoutMs ?? 30_000;
    const r = mod.request(url, {
      method: req.method ?? 'GET',
      headers: req.headers,
      signal: req.signal,
      // A fresh connection each time: a pooled socket's idle timeout and error state are not ours.
      agent: false,
      ...(url.protocol === 'https:' && req.insecureTls ? { rejectUnauthorized: false } : {}),
    });
    r.setTimeout(timeoutMs, () => {
      r.destroy(new TransientError(`${url.host}: no data for ${timeoutMs} ms (timeout)`));
    });
    r.on('error', (e) => reject(e));
    r.on('response', (res) => {
      // Errors after the headers (reset, timeout) surface on the body stream.
      res.on('aborted', () => res.destroy(new TransientError(`${url.host}: connection closed mid-response`)));
      resolve({
        status: res.statusCode ?? 0,
        statusText: res.statusMessage ?? '',
        headers: res.headers,
        url,
        body: res,
      });
    });
    r.end(req.body);
  });
}

export async function readBody(res: HttpResponse, max: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of res.body as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) {
      res.body.destroy();
      throw new Error(`${res.url.host}: response larger than ${max} bytes`);
    }
    parts.push(c);
  }
  return Buffer.concat(parts);
}

export interface RetryPolicy {
  /** Attempts in all (default 5). */
  attempts?: number;
  /** First delay; doubles each time, with jitter (default 500 ms). */
  baseDelayMs?: number;
  /** Cap on one delay (default 10 s). */
  maxDelayMs?: number;
}

/** Run fn until it succeeds, a non-transient error, or the attempts run out. */
export async function withRetry<T>(
  policy: RetryPolicy,
  signal: AbortSignal | undefined,
  fn: (attempt: number) => Promise<T>,
  onRetry?: (attempt: number, e: unknown, delayMs: number) => void,
): Promise<T> {
  const attempts = policy.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (signal?.aborted || !isTransient(e) || attempt >= attempts) {
        if (isTransient(e) && attempt > 1 && e instanceof Error) e.message += ` (after ${attempt} attempts)`;
        throw e;
      }
      const base = Math.min((policy.baseDelayMs ?? 500) * 2 ** (attempt - 1), policy.maxDelayMs ?? 10_000);
      const delay = Math.round(base * (0.75 + Math.random() * 0.5));
      onRetry?.(attempt, e, delay);
      await sleep(delay, undefined, { signal });
    }
  }
}
