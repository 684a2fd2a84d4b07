// The proxy's side of the relay protocol (src/egress/relay.ts) with a fake relay: a unix-socket
// client that says the relay's hello and reads the proxy's decision as the relay would. Plus the
// control message's own validation. The real binary against the real proxy is
// test/integration/egress-relay.test.ts.
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EgressCa } from '../../src/egress/ca.ts';
import type { EgressEvent } from '../../src/egress/events.ts';
import { EgressProxy } from '../../src/egress/proxy.ts';
import { assertRelayBuilt, directMessage, RELAY_HELLO } from '../../src/egress/relay.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import { newPlaceholder } from '../../src/egress/secrets.ts';
import { createLogger } from '../../src/log/logger.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bgrl');
const socketDir = join(tmp.dir, 's');
mkdirSync(socketDir);
const events: EgressEvent[] = [];
let proxy: EgressProxy;
let port = 0;
let hits = 0;
let closeUpstream: () => void = () => undefined;

beforeAll(async () => {
  const up = createHttpServer((req, res) => {
    hits++;
    req.resume();
    req.on('end', () => res.end('upstream\n'));
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  port = (up.address() as AddressInfo).port;
  closeUpstream = () => up.close();
  proxy = new EgressProxy({
    log: createLogger({ name: 't', level: 'debug', stream: new MemoryLog() }),
    socketDir,
    ca: new EgressCa(join(tmp.dir, 'egress')),
    placeholder: () => newPlaceholder(),
    secretValue: async () => undefined,
    record: (ev) => events.push(ev),
    bridge: { host: '127.0.0.1', port: 0 },
    resolve: async (host) => (host === 'v6.test' ? ['::1'] : host.endsWith('.test') ? ['127.0.0.1'] : []),
  });
});
afterAll(() => {
  proxy.close();
  closeUpstream();
  tmp.cleanup();
});

function attach(policy: string, ip?: string): { sock: string; id: string } {
  const id = `vm${Math.random().toString(16).slice(2, 10)}`;
  const r = proxy.attach({
    id,
    name: `n-${id}`,
    policy: parseEgress(policy),
    secrets: [],
    ...(ip ? { ip } : {}),
  });
  return { sock: r.unixSocket, id };
}

/** A complete `direct` message (line and payloads): the proxy then keeps the socket open, silent. */
function directDone(b: Buffer): boolean {
  const nl = b.indexOf('\n');
  if (b[0] !== 0 || nl < 0) return false;
  const [word, , , up = '0', down = '0'] = b.subarray(1, nl).toString('latin1').split(' ');
  return word === 'direct' && b.length >= nl + 1 + Number(up) + Number(down);
}

/**
 * Everything the proxy writes back until it closes, or until a `direct` message is complete
 * (the fake relay then hangs up, as the real one stops reading), or `ms` passes.
 */
function exchange(s: Socket, chunks: (string | Buffer)[], ms = 3000): Promise<Buffer> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    const done = (): void => resolve(Buffer.concat(got));
    const t = setTimeout(() => {
      done();
      s.destroy();
    }, ms);
    s.on('data', (d: Buffer) => {
      got.push(d);
      if (directDone(Buffer.concat(got))) s.destroy();
    });
    s.on('close', () => {
      clearTimeout(t);
      done();
    });
    s.on('error', () => undefined);
    void (async () => {
      for (const c of chunks) {
        s.write(c);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
  });
}

describe('relay protocol: the proxy side', { timeout: 30_000 }, () => {
  it('an allowed GET is handed back: direct to the checked address with the rewritten head', async () => {
    const { sock, id } = attach('allow=api.test');
    events.length = 0;
    const out = await exchange(netConnect(sock), [
      RELAY_HELLO.subarray(0, 5),
      Buffer.concat([
        RELAY_HELLO.subarray(5),
        Buffer.from(`GET http://api.test:${port}/x?y=1 HTTP/1.1\r\nHost: evil.test\r\n`),
      ]),
      'Proxy-Authorization: Basic Zm9v\r\nAccept: */*\r\n\r\n',
    ]);
    const text = out.toString('latin1');
    const line = `\0direct 127.0.0.1 ${port} `;
    expect(text.startsWith(line)).toBe(true);
    const [ctl = '', ...rest] = text.split('\n');
    const [, , , upLen, downLen, body] = ctl.split(' ');
    expect([downLen, body]).toEqual(['0', '0']);
    const head = rest.join('\n');
    expect(head.length).toBe(Number(upLen));
    expect(head).toBe(
      `GET /x?y=1 HTTP/1.1\r\nHost: api.test:${port}\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
    );
    expect(events).toMatchObject([{ verdict: 'allow', host: 'api.test', rule: 'api.test' }]);
    proxy.detach(id);
  });

  it('a body with a length goes direct with that count; chunked stays (an explicit stay first)', async () => {
    const { sock, id } = attach('allow=api.test');
    const post = await exchange(netConnect(sock), [
      RELAY_HELLO,
      `POST http://api.test:${port}/p HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\n`,
    ]);
    expect(post.toString('latin1')).toMatch(new RegExp(`^\\0direct 127\\.0\\.0\\.1 ${port} \\d+ 0 5\\n`));
    expect(post.toString('latin1')).toContain('Content-Length: 5\r\n');
    const before = hits;
    const chunked = await exchange(netConnect(sock), [
      RELAY_HELLO,
      `POST http://api.test:${port}/c HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n`,
      '3\r\nabc\r\n0\r\n\r\n',
    ]);
    const t = chunked.toString('latin1');
    expect(t.startsWith('\0stay\nHTTP/1.1 200')).toBe(true);
    expect(t).toContain('upstream\n');
    expect(hits).toBe(before + 1);
    proxy.detach(id);
  });

  it('CONNECT without secrets is handed back as a tunnel, the 200 for the relay to send', async () => {
    const { sock, id } = attach('allow=api.test');
    const out = await exchange(netConnect(sock), [RELAY_HELLO, `CONNECT api.test:443 HTTP/1.1\r\n\r\n`]);
    const ok = 'HTTP/1.1 200 Connection Established\r\n\r\n';
    expect(out.toString('latin1')).toBe(`\0direct 127.0.0.1 443 0 ${ok.length} tunnel\n${ok}`);
    proxy.detach(id);
  });

  it('after direct the proxy keeps the socket, silent, until the VM is detached', async () => {
    const { sock, id } = attach('allow=api.test');
    const s = netConnect(sock);
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.write(Buffer.concat([RELAY_HELLO, Buffer.from(`CONNECT api.test:443 HTTP/1.1\r\n\r\n`)]));
    const closed = once(s, 'close');
    await new Promise((r) => setTimeout(r, 300));
    expect(directDone(Buffer.concat(got))).toBe(true);
    expect(s.destroyed).toBe(false);
    proxy.detach(id);
    await closed;
  });

  it('a refusal is the proxy answering itself (implicit stay): never a control message', async () => {
    const { sock, id } = attach('allow=api.test');
    const out = await exchange(netConnect(sock), [
      RELAY_HELLO,
      `GET http://other.test:${port}/ HTTP/1.1\r\nHost: other.test\r\n\r\n`,
    ]);
    expect(out.toString('latin1')).toMatch(/^HTTP\/1\.1 403 /);
    const c = await exchange(netConnect(sock), [RELAY_HELLO, `CONNECT other.test:443 HTTP/1.1\r\n\r\n`]);
    expect(c.toString('latin1')).toMatch(/^HTTP\/1\.1 403 /);
    proxy.detach(id);
  });

  it('an IPv6 destination is not handed back (the relay connects to IPv4 only): the proxy stays', async () => {
    const { sock, id } = attach('allow=v6.test');
    const out = await exchange(netConnect(sock), [
      RELAY_HELLO,
      `GET http://v6.test:${port}/ HTTP/1.1\r\nHost: v6.test\r\n\r\n`,
    ]);
    // An explicit stay, then the proxy's own answer (nothing listens on [::1]: a 502).
    expect(out.toString('latin1')).toMatch(/^\0stay\nHTTP\/1\.1 502 /);
    proxy.detach(id);
  });

  it('without the hello (socat) the proxy pipes the request itself, as before', async () => {
    const { sock, id } = attach('allow=api.test');
    const out = await exchange(netConnect(sock), [
      `GET http://api.test:${port}/ HTTP/1.1\r\nHost: api.test\r\n\r\n`,
    ]);
    expect(out.toString('latin1')).toMatch(/^HTTP\/1\.1 200 [\s\S]*upstream\n$/);
    proxy.detach(id);
  });

  it('a hello from a guest on the bridged TCP listener is just a bad request', async () => {
    const { id } = attach('allow=api.test', '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    const out = await exchange(netConnect(proxy.tcpAddress()!.port, '127.0.0.1'), [
      RELAY_HELLO,
      `CONNECT api.test:443 HTTP/1.1\r\n\r\n`,
    ]);
    expect(out.toString('latin1')).toMatch(/^HTTP\/1\.1 400 /);
    proxy.detach(id);
  });
});

describe('directMessage', () => {
  const ok = { ip: '10.1.2.3', port: 80, up: Buffer.from('GET / HTTP/1.1\r\n\r\n'), down: Buffer.alloc(0) };
  it('encodes the line and the payloads', () => {
    expect(directMessage({ ...ok, body: 7 }).toString('latin1')).toBe(
      '\0direct 10.1.2.3 80 18 0 7\nGET / HTTP/1.1\r\n\r\n',
    );
  });
  it.each([
    { ...ok, ip: 'api.test', body: 0 },
    { ...ok, ip: '::1', body: 0 },
    { ...ok, port: 0, body: 0 },
    { ...ok, port: 65536, body: 0 },
    { ...ok, body: -1 },
    { ...ok, body: 1.5 },
    { ...ok, body: 2e15 },
    { ...ok, up: Buffer.alloc(65537), body: 0 },
  ])('refuses what the relay would refuse: %#', (o) => {
    expect(() => directMessage(o)).toThrow(/relay/);
  });
});

describe('assertRelayBuilt', () => {
  it('says how to get the relay when it is missing (a restricted user-mode VM cannot start)', () => {
    expect(() => assertRelayBuilt('/nonexistent/build/egress-relay')).toThrow(
      'the egress relay /nonexistent/build/egress-relay is missing or not executable; run npm run build (it needs gcc)',
    );
  });
});
