// The byte pipe behind plain-HTTP proxy requests (`GET http://host/path`; issue 16's cost): the
// request head is parsed by Node's HTTP parser (llhttp) and checked in forward.ts; here it is
// written to the upstream in origin form, the body follows with its framing, and the upstream's
// bytes go back to the client as they come (no re-parsing, re-chunking or per-chunk objects of
// http.request/ServerResponse). Only the response head is read, to force `Connection: close`.
// Security: one request per client connection. The upstream gets `Connection: close`, the
// client gets `Connection: close` and its connection is closed after the response; the proxy
// never forwards a byte the parser did not frame as this request's body, so a second request on
// the same connection (pipelined or not) reaches nobody without its own check.
import type { IncomingMessage } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';

/** The longest response head read (status line + headers); longer is a 502. */
export const MAX_RESPONSE_HEAD = 64 * 1024;

// Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never forwarded (forward.ts too).
export const HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
// Plus what the pipe decides itself: Host (replaced by the checked URI's authority, RFC 9112
// 3.2.2: the guest cannot name one host to the policy and another to a shared server), framing
// (re-stated from the parsed body), Expect (Node's parser already answered 100-continue).
const REQUEST_DROP = new Set([...HOP_HEADERS, 'content-length', 'host', 'expect']);
// The response keeps its framing (Content-Length, Transfer-Encoding): its body is passed as is.
const RESPONSE_DROP = new Set(['connection', 'proxy-connection', 'keep-alive', 'proxy-authenticate']);

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const FIELD_VALUE = /^[^\0\r\n]*$/;

/** The names a Connection header lists: hop-by-hop too. */
export function connectionListed(raw: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i < raw.length; i += 2)
    if ((raw[i] ?? '').toLowerCase() === 'connection')
      for (const n of (raw[i + 1] ?? '').split(',')) out.add(n.trim().toLowerCase());
  return out;
}

export interface RequestFraming {
  /** The body's length as the client declared it; undefined with `chunked` or no body. */
  length?: number;
  /** The body was chunked: it is re-chunked as the parser hands it over. */
  chunked: boolean;
}

/** How the parsed request's body is framed upstream. Pure. */
export function requestFraming(headers: IncomingMessage['headers']): RequestFraming {
  if (headers['transfer-encoding'] !== undefined) return { chunked: true };
  const cl = headers['content-length'];
  return cl !== undefined && cl !== '0' ? { length: Number(cl), chunked: false } : { chunked: false };
}

/**
 * The head the upstream gets: origin form, HTTP/1.1, the client's end-to-end headers as it
 * wrote them, Host from the checked URI, the body's framing, `Connection: close`. Throws when a
 * header would not survive being written again (the parser should have refused it already). Pure.
 */
export function upstreamRequestHead(o: {
  method: string;
  path: string;
  authority: string;
  rawHeaders: readonly string[];
  framing: RequestFraming;
}): string {
  if (!TOKEN.test(o.method)) throw new Error(`bad method ${JSON.stringify(o.method)}`);
  if (!/^\/[^\s\0]*$/.test(o.path)) throw new Error('bad request path');
  const drop = new Set([...REQUEST_DROP, ...connectionListed(o.rawHeaders)]);
  const lines = [`${o.method} ${o.path} HTTP/1.1`, `Host: ${o.authority}`];
  for (let i = 0; i < o.rawHeaders.length; i += 2) {
    const name = o.rawHeaders[i] ?? '';
    const value = o.rawHeaders[i + 1] ?? '';
    if (drop.has(name.toLowerCase())) continue;
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) throw new Error(`bad header ${JSON.stringify(name)}`);
    lines.push(`${name}: ${value}`);
  }
  if (o.framing.chunked) lines.push('Transfer-Encoding: chunked');
  else if (o.framing.length !== undefined) lines.push(`Content-Length: ${o.framing.length}`);
  lines.push('Connection: close');
  return `${lines.join('\r\n')}\r\n\r\n`;
}

export interface ResponseHead {
  status: number;
  /** The head as the client gets it (hop-by-hop headers out, `Connection: close` in). */
  text: string;
  /** Content-Length of the body, when declared (and no Transfer-Encoding). */
  length?: number;
  /** Bytes of the buffer after this head. */
  rest: Buffer;
}

/**
 * One response head off the front of `buf`: undefined while incomplete; throws on a head the
 * client should not get (too long, not HTTP/1.x, bad lines, conflicting lengths). Pure.
 */
export function takeResponseHead(buf: Buffer): ResponseHead | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) {
    if (buf.length > MAX_RESPONSE_HEAD) throw new Error('the upstream response head is too long');
    return undefined;
  }
  if (end > MAX_RESPONSE_HEAD) throw new Error('the upstream response head is too long');
  const [statusLine = '', ...fields] = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: [^\0\r\n]*)?$/.exec(statusLine);
  if (!m) throw new Error('the upstream did not answer HTTP/1.x');
  const raw: string[] = [];
  for (const f of fields) {
    const colon = f.indexOf(':');
    const name = colon > 0 ? f.slice(0, colon) : '';
    const value = f.slice(colon + 1).trim();
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value))
      throw new Error('the upstream sent a malformed header line');
    raw.push(name, value);
  }
  const drop = new Set([...RESPONSE_DROP, ...connectionListed(raw)]);
  const lines = [statusLine];
  const lengths = new Set<string>();
  let chunked = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (lower === 'content-length') lengths.add(raw[i + 1]!);
    if (lower === 'transfer-encoding') chunked = true;
    if (!drop.has(lower)) lines.push(`${name}: ${raw[i + 1]!}`);
  }
  if (lengths.size > 1) throw new Error('the upstream sent conflicting Content-Length headers');
  const [cl] = [...lengths];
  if (cl !== undefined && !/^\d{1,15}$/.test(cl)) throw new Error('the upstream sent a bad Content-Length');
  lines.push('Connection: close');
  return {
    status: Number(m[1]),
    text: `${lines.join('\r\n')}\r\n\r\n`,
    ...(cl !== undefined && !chunked ? { length: Number(cl) } : {}),
    rest: buf.subarray(end + 4),
  };
}

/**
 * The parsed request's body into `up`, framed as announced (chunked: re-chunked), with
 * backpressure. `up` is not ended: half-closing a connection means "abort" to some servers.
 */
export function pumpRequestBody(req: IncomingMessage, up: Socket, framing: RequestFraming): void {
  req.on('data', (d: Buffer) => {
    if (d.length === 0) return;
    let ok: boolean;
    if (framing.chunked) {
      up.write(`${d.length.toString(16)}\r\n`);
      up.write(d);
      ok = up.write('\r\n');
    } else ok = up.write(d);
    if (!ok) {
      req.pause();
      up.once('drain', () => req.resume());
    }
  });
  req.on('end', () => {
    if (framing.chunked) up.write('0\r\n\r\n');
  });
}

/**
 * The upstream's answer to the client: heads of 1xx answers and the final one rewritten
 * (takeResponseHead), then the body as raw bytes, with backpressure. With a Content-Length (or
 * no body: HEAD, 204, 304) the client connection is ended right after the body; otherwise when
 * the upstream closes (it was asked to). `fail` runs when nothing reached the client yet (the
 * caller answers 502); afterwards a failure just closes the client. Installed before `up`
 * connects: its connect errors come here too.
 */
export function pumpResponse(o: {
  up: Socket;
  client: Socket;
  /** The request was HEAD: the final answer has no body whatever its headers say. */
  headRequest: boolean;
  fail: (err: Error) => void;
}): (chunk: Buffer) => boolean {
  const { up, client } = o;
  let head: Buffer | undefined = Buffer.alloc(0);
  let left: number | undefined;
  let sent = false;
  const failed = (err: Error): void => {
    up.destroy();
    if (sent) client.destroy();
    else o.fail(err);
  };
  const finish = (): void => {
    up.destroy();
    client.end();
  };
  // Reading resumes once the client has flushed everything (the last write's callback; 'drain'
  // comes only after a write that crossed the high-water mark).
  let resumeOnFlush = false;
  const flushed = (): void => {
    if (!resumeOnFlush || client.writableLength > 0) return;
    resumeOnFlush = false;
    up.resume();
  };
  const write = (b: Buffer | string): void => {
    sent = true;
    client.write(b, flushed);
  };
  const body = (d: Buffer): void => {
    if (left === undefined) return write(d);
    const n = Math.min(left, d.length);
    if (n > 0) write(n === d.length ? d : d.subarray(0, n));
    left -= n;
    if (left === 0) finish();
  };
  // What the upstream sent, in `up`'s one reused read buffer (upstreamSocket): the view is
  // valid only until this returns true, so a head is copied (Buffer.concat) and reading stops
  // while the client still holds unwritten bytes (they may be views of the buffer: a socket
  // write keeps a reference, no copy): false pauses `up`, `flushed` resumes it.
  const onChunk = (d: Buffer): boolean => {
    if (head !== undefined) {
      head = Buffer.concat([head, d]);
      try {
        for (;;) {
          const h: ResponseHead | undefined = takeResponseHead(head);
          if (!h) break;
          if (h.status === 101) throw new Error('the upstream switched protocols, which was not asked for');
          write(h.text);
          head = h.rest;
          if (h.status < 200) continue;
          head = undefined;
          left = o.headRequest || h.status === 204 || h.status === 304 ? 0 : h.length;
          if (left === 0) finish();
          else if (h.rest.length > 0) body(h.rest);
          break;
        }
      } catch (err) {
        failed(err as Error);
        return false;
      }
    } else body(d);
    if (client.writableLength === 0 || client.destroyed) return true;
    resumeOnFlush = true;
    return false;
  };
  up.on('error', failed);
  up.on('end', () => {
    if (head !== undefined) return failed(new Error('the upstream closed without a complete answer'));
    if (left !== undefined && left > 0) return void client.destroy();
    client.end();
  });
  up.on('close', () => {
    if (!client.writableEnded && sent) client.destroy();
  });
  client.on('close', () => up.destroy());
  return onChunk;
}

/** The size of the one read buffer an upstream socket of the pipe reuses for every read. */
export const PIPE_READ_BUFFER = 64 * 1024;

/**
 * A connection to the upstream that reads into one reused buffer (`net` `onread`) instead of a
 * new 64 KiB Buffer per read: less allocation and garbage collection per byte relayed (about
 * 15% of a relay's time on the dev host). `onChunk` gets a view of the buffer; returning false
 * pauses reading (see pumpResponse).
 */
export function upstreamSocket(
  at: { host: string; port: number },
  onChunk: () => (chunk: Buffer) => boolean,
): Socket {
  const buffer = Buffer.allocUnsafe(PIPE_READ_BUFFER);
  return netConnect({
    host: at.host,
    port: at.port,
    onread: {
      buffer,
      callback: (n: number, buf: Uint8Array) => onChunk()(Buffer.from(buf.buffer, buf.byteOffset, n)),
    },
  });
}
