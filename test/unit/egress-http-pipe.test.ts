// The plain-HTTP byte pipe of the egress proxy (src/egress/http-pipe.ts): what the upstream
// receives byte for byte (origin form, Host from the checked URI, no Proxy-* headers, framing,
// Connection: close), what the client gets back (body untouched, Connection: close, the
// connection closed after one answer), and that nothing a client sends after its request's
// body reaches any host: a second request on the same connection is never forwarded.
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import {
  connect as netConnect,
  createServer as createNetServer,
  type AddressInfo,
  type Socket,
} from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EgressCa } from '../../src/egress/ca.ts';
import type { EgressEvent } from '../../src/egress/events.ts';
import {
  MAX_RESPONSE_HEAD,
  requestFraming,
  takeResponseHead,
  upstreamRequestHead,
} from '../../src/egress/http-pipe.ts';
import { EgressProxy } from '../../src/egress/proxy.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import { createLogger } from '../../src/log/logger.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bghp');
const socketDir = join(tmp.dir, 's');
mkdirSync(socketDir);
const events: EgressEvent[] = [];
/** Raw bytes each upstream connection received, by upstream. */
const got: { raw: string[]; evil: string[] } = { raw: [], evil: [] };
let rawPort = 0;
let evilPort = 0;
let bigPort = 0;
const BIG = 3 * 1024 * 1024 + 17;
/** Bytes that differ everywhere (a counter pattern), so a stale or reordered chunk is seen. */
const bigBody = Buffer.from(Array.from({ length: BIG }, (_, i) => (i * 7 + (i >> 16)) & 0xff));
/** What the raw upstream answers (set per test). */
let answer: (req: string, s: Socket) => void = () => undefined;
let proxy: EgressProxy;
const closers: (() => void)[] = [];

/** A TCP server that records every connection's bytes and answers with `answer` once a head is in. */
async function rawServer(into: string[], onHead: () => (req: string, s: Socket) => void): Promise<number> {
  const server = createNetServer((s) => {
    const i = into.push('') - 1;
    let answered = false;
    s.on('data', (d: Buffer) => {
      into[i] += d.toString('latin1');
      if (!answered && into[i]!.includes('\r\n\r\n')) {
        answered = true;
        onHead()(into[i]!, s);
      }
    });
    s.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  rawPort = await rawServer(got.raw, () => answer);
  evilPort = await rawServer(
    got.evil,
    () => (_r, s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil'),
  );
  const big = createHttpServer((_q, res) => {
    res.writeHead(200, { 'content-length': BIG });
    // Written in pieces of odd sizes, so reads and writes do not line up.
    for (let i = 0; i < BIG; i += 77_777) res.write(bigBody.subarray(i, Math.min(BIG, i + 77_777)));
    res.end();
  });
  big.listen(0, '127.0.0.1');
  await once(big, 'listening');
  bigPort = (big.address() as AddressInfo).port;
  closers.push(() => big.close());
  proxy = new EgressProxy({
    log: createLogger({ name: 't', level: 'debug', stream: new MemoryLog() }),
    socketDir,
    ca: new EgressCa(join(tmp.dir, 'egress')),
    placeholder: () => 'none',
    secretValue: async () => undefined,
    record: (ev) => events.push(ev),
    upstreamCa: [],
    resolve: async (host) => (host.endsWith('.test') ? ['127.0.0.1'] : []),
  });
});
afterAll(() => {
  proxy.close();
  for (const c of closers) c();
  tmp.cleanup();
});
beforeEach(() => {
  got.raw.length = 0;
  got.evil.length = 0;
  events.length = 0;
  answer = (_r, s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
});

function attach(policy: string): { sock: string; id: string } {
  const id = `vm${Math.random().toString(16).slice(2, 10)}`;
  return {
    sock: proxy.attach({ id, name: `n-${id}`, policy: parseEgress(policy), secrets: [] }).unixSocket,
    id,
  };
}

/** Send `text` on a fresh connection; everything the proxy answers until it closes. */
async function exchange(sock: string, text: string | Buffer): Promise<Buffer> {
  const s = netConnect(sock);
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  s.write(text);
  await Promise.race([
    once(s, 'close'),
    new Promise((_, rej) => setTimeout(() => rej(new Error('no close')), 10_000)),
  ]);
  return Buffer.concat(parts);
}

describe('upstreamRequestHead / takeResponseHead (pure)', () => {
  it('origin form, Host from the URI, hop-by-hop and Proxy-* headers out, framing and Connection: close in', () => {
    const head = upstreamRequestHead({
      method: 'POST',
      path: '/p?q=1',
      authority: 'api.test:8080',
      rawHeaders: [
        'Host',
        'evil.test',
        'Proxy-Authorization',
        'Basic eA==',
        'Proxy-Connection',
        'keep-alive',
        'Connection',
        'keep-alive, X-Hop',
        'X-Hop',
        'drop me',
        'Content-Length',
        '999',
        'Transfer-Encoding',
        'chunked',
        'Expect',
        '100-continue',
        'X-Keep',
        'a',
        'x-keep',
        'b',
      ],
      framing: { length: 5, chunked: false },
    });
    expect(head).toBe(
      'POST /p?q=1 HTTP/1.1\r\nHost: api.test:8080\r\nX-Keep: a\r\nx-keep: b\r\nContent-Length: 5\r\nConnection: close\r\n\r\n',
    );
  });

  it('refuses what could smuggle a second request or header', () => {
    const base = { path: '/', authority: 'a.test', framing: { chunked: false } };
    expect(() => upstreamRequestHead({ ...base, method: 'GET /x HTTP/1.1\r\n', rawHeaders: [] })).toThrow();
    expect(() =>
      upstreamRequestHead({ ...base, method: 'GET', path: '/ HTTP/1.1\r\nX: y', rawHeaders: [] }),
    ).toThrow();
    expect(() =>
      upstreamRequestHead({ ...base, method: 'GET', rawHeaders: ['X', 'a\r\nHost: evil'] }),
    ).toThrow();
    expect(() => upstreamRequestHead({ ...base, method: 'GET', rawHeaders: ['X Y', 'a'] })).toThrow();
    expect(() =>
      upstreamRequestHead({ ...base, method: 'GET', path: 'http://evil/', rawHeaders: [] }),
    ).toThrow();
  });

  it('request framing: chunked wins, a length otherwise, none for no body', () => {
    expect(requestFraming({ 'transfer-encoding': 'chunked', 'content-length': '3' })).toEqual({
      chunked: true,
    });
    expect(requestFraming({ 'content-length': '3' })).toEqual({ length: 3, chunked: false });
    expect(requestFraming({ 'content-length': '0' })).toEqual({ chunked: false });
    expect(requestFraming({})).toEqual({ chunked: false });
  });

  it('response heads: incomplete, rewritten, bounded, conflicting lengths refused', () => {
    expect(takeResponseHead(Buffer.from('HTTP/1.1 200 OK\r\nContent-Le'))).toBeUndefined();
    const h = takeResponseHead(
      Buffer.from(
        'HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\nX-A:  b \r\n\r\nabcNEXT',
      ),
    )!;
    expect(h).toMatchObject({ status: 200, length: 3 });
    expect(h.text).toBe('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\nConnection: close\r\n\r\n');
    expect(h.rest.toString()).toBe('abcNEXT');
    const chunked = takeResponseHead(
      Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n'),
    )!;
    expect(chunked.length).toBeUndefined();
    expect(chunked.text).toContain('Transfer-Encoding: chunked\r\n');
    expect(() => takeResponseHead(Buffer.alloc(MAX_RESPONSE_HEAD + 1, 'a'))).toThrow(/too long/);
    expect(() => takeResponseHead(Buffer.from('SSH-2.0-x\r\n\r\n'))).toThrow(/HTTP/);
    expect(() =>
      takeResponseHead(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')),
    ).toThrow(/conflicting/);
    expect(() => takeResponseHead(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n'))).toThrow(
      /Content-Length/,
    );
    expect(() => takeResponseHead(Buffer.from('HTTP/1.1 200 OK\r\n folded\r\n\r\n'))).toThrow(/malformed/);
  });
});

describe('EgressProxy plain-HTTP byte pipe', { timeout: 30_000 }, () => {
  it('the upstream gets origin form, the checked Host, no Proxy-* headers, Connection: close', async () => {
    const { sock, id } = attach('allow=api.test');
    const out = await exchange(
      sock,
      `GET http://api.test:${rawPort}/a?b=1 HTTP/1.1\r\nHost: evil.test\r\nProxy-Authorization: Basic eA==\r\n` +
        'Proxy-Connection: keep-alive\r\nUser-Agent: t\r\n\r\n',
    );
    expect(got.raw).toEqual([
      `GET /a?b=1 HTTP/1.1\r\nHost: api.test:${rawPort}\r\nUser-Agent: t\r\nConnection: close\r\n\r\n`,
    ]);
    expect(out.toString()).toBe('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
    proxy.detach(id);
  });

  it('a body of megabytes comes back byte for byte, and the client connection closes after it', async () => {
    const { sock, id } = attach('allow=big.test');
    const out = await exchange(sock, `GET http://big.test:${bigPort}/ HTTP/1.1\r\nHost: big.test\r\n\r\n`);
    const end = out.indexOf('\r\n\r\n');
    expect(out.subarray(0, end).toString()).toMatch(
      /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 3145745\r\n[^]*Connection: close$/i,
    );
    const body = out.subarray(end + 4);
    expect(body.length).toBe(BIG);
    // Every byte (the upstream socket reuses one read buffer: a view written too late would show).
    expect(body.equals(bigBody)).toBe(true);
    proxy.detach(id);
  });

  it('a pipelined second request, to another host or the same, reaches nobody', async () => {
    const { sock, id } = attach(`allow=api.test,127.0.0.1:${evilPort}`);
    // Keep-alive answers: the upstream would serve a second request on its connection.
    answer = (_r, s) => s.write('HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok');
    const out = await exchange(
      sock,
      `GET http://api.test:${rawPort}/one HTTP/1.1\r\nHost: api.test\r\n\r\n` +
        `GET http://evil.test:${evilPort}/two HTTP/1.1\r\nHost: evil.test\r\n\r\n` +
        `GET /three HTTP/1.1\r\nHost: api.test\r\n\r\n`,
    );
    expect(out.toString()).toBe('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
    expect(got.raw).toHaveLength(1);
    expect(got.raw[0]).not.toContain('/two');
    expect(got.raw[0]).not.toContain('/three');
    expect(got.evil).toEqual([]);
    proxy.detach(id);
  });

  it('after a refused request, a pipelined allowed one on the same connection is not served either', async () => {
    const { sock, id } = attach('allow=api.test');
    const out = await exchange(
      sock,
      `GET http://evil.test:${evilPort}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n` +
        `GET http://api.test:${rawPort}/second HTTP/1.1\r\nHost: api.test\r\n\r\n`,
    );
    expect(out.toString()).toMatch(/^HTTP\/1\.1 403 [^]*denied by policy allow=api\.test\n$/);
    expect(got.raw).toEqual([]);
    expect(got.evil).toEqual([]);
    proxy.detach(id);
  });

  it('a CONNECT pipelined behind a plain request is not tunnelled', async () => {
    const { sock, id } = attach(`allow=api.test,127.0.0.1:${evilPort}`);
    answer = (_r, s) => setTimeout(() => s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), 100);
    await exchange(
      sock,
      `GET http://api.test:${rawPort}/one HTTP/1.1\r\nHost: api.test\r\n\r\n` +
        `CONNECT 127.0.0.1:${evilPort} HTTP/1.1\r\nHost: 127.0.0.1:${evilPort}\r\n\r\nGET /tunnelled HTTP/1.1\r\n\r\n`,
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(got.evil).toEqual([]);
    expect(got.raw).toHaveLength(1);
    proxy.detach(id);
  });

  it('bytes after a Content-Length body are not forwarded (no request smuggled in a body)', async () => {
    const { sock, id } = attach('allow=api.test');
    answer = (req, s) => setTimeout(() => s.end(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok`), 100);
    await exchange(
      sock,
      `POST http://api.test:${rawPort}/u HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\nhello` +
        `GET http://evil.test:${evilPort}/smuggled HTTP/1.1\r\nHost: evil.test\r\n\r\n`,
    );
    expect(got.raw).toEqual([
      `POST /u HTTP/1.1\r\nHost: api.test:${rawPort}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`,
    ]);
    expect(got.evil).toEqual([]);
    proxy.detach(id);
  });

  it('a chunked request body arrives re-chunked and complete; what follows it is not forwarded', async () => {
    const { sock, id } = attach('allow=api.test');
    answer = (req, s) => {
      if (req.endsWith('0\r\n\r\n')) s.end('HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n');
      else s.once('data', () => s.end('HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n'));
    };
    const out = await exchange(
      sock,
      `POST http://api.test:${rawPort}/c HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n` +
        '3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: api.test\r\n\r\n',
    );
    expect(out.toString()).toBe('HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    const body = got.raw[0]!.slice(got.raw[0]!.indexOf('\r\n\r\n') + 4);
    expect(got.raw[0]).toContain('Transfer-Encoding: chunked\r\n');
    expect(body.endsWith('\r\n0\r\n\r\n')).toBe(true);
    expect(body.replace(/[0-9a-f]+\r\n([^\r]*)\r\n/g, '$1')).toBe('abcde');
    expect(got.raw.join('')).not.toContain('/after');
    proxy.detach(id);
  });

  it('Content-Length together with Transfer-Encoding is refused by the parser; nothing is forwarded', async () => {
    const { sock, id } = attach('allow=api.test');
    const out = await exchange(
      sock,
      `POST http://api.test:${rawPort}/x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    );
    expect(out.toString()).toMatch(/^HTTP\/1\.1 400 /);
    expect(got.raw).toEqual([]);
    proxy.detach(id);
  });

  it('an upstream that keeps its connection open still ends the answer after Content-Length bytes', async () => {
    const { sock, id } = attach('allow=api.test');
    answer = (_r, s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcGARBAGE');
    const out = await exchange(sock, `GET http://api.test:${rawPort}/k HTTP/1.1\r\nHost: api.test\r\n\r\n`);
    expect(out.toString()).toBe('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc');
    proxy.detach(id);
  });

  it('a HEAD answer ends after its head; a malformed upstream answer is a 502', async () => {
    const { sock, id } = attach('allow=api.test');
    answer = (_r, s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n');
    const head = await exchange(sock, `HEAD http://api.test:${rawPort}/h HTTP/1.1\r\nHost: api.test\r\n\r\n`);
    expect(head.toString()).toBe('HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n');
    answer = (_r, s) => s.end('NOT HTTP\r\n\r\n');
    const bad = await exchange(sock, `GET http://api.test:${rawPort}/b HTTP/1.1\r\nHost: api.test\r\n\r\n`);
    expect(bad.toString()).toMatch(
      /^HTTP\/1\.1 502 [^]*banger egress: api\.test:\d+: the upstream did not answer HTTP\/1\.x\n$/,
    );
    proxy.detach(id);
  });

  it('a denied request still gets its 403 and a deny event; nothing is forwarded', async () => {
    const { sock, id } = attach('allow=api.test');
    const out = await exchange(sock, `GET http://evil.test:${evilPort}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n`);
    expect(out.toString()).toMatch(/^HTTP\/1\.1 403 /);
    expect(got.evil).toEqual([]);
    expect(events.find((e) => e.verdict === 'deny')).toMatchObject({ host: 'evil.test', port: evilPort });
    proxy.detach(id);
  });
});
