// The egress proxy against local upstreams: policy checks on absolute-URI requests and CONNECT,
// plain tunnels without secrets, TLS termination with secrets (placeholder replaced for the
// secret's host, refused for any other), upstream certificate failures, bridged identity by source.
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext } from 'node:tls';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EgressCa } from '../../src/egress/ca.ts';
import type { EgressEvent } from '../../src/egress/events.ts';
import { EgressProxy } from '../../src/egress/proxy.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import { newPlaceholder, type VmSecret } from '../../src/egress/secrets.ts';
import { createLogger } from '../../src/log/logger.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bgpx');
const socketDir = join(tmp.dir, 's');
mkdirSync(socketDir);
const bangerCa = new EgressCa(join(tmp.dir, 'egress'));
const upstreamCa = new EgressCa(join(tmp.dir, 'up-ca'));
const rogueCa = new EgressCa(join(tmp.dir, 'rogue-ca'));
const SECRET = 'sk-live-0123456789abcdef';
const seen: { host: string; url: string; headers: IncomingHttpHeaders }[] = [];
const events: EgressEvent[] = [];
const mem = new MemoryLog();
let httpPort = 0;
let httpsPort = 0;
let roguePort = 0;
let proxy: EgressProxy;
const closers: (() => void)[] = [];
const secret0: VmSecret = { name: 'API_KEY', hosts: ['api.test'], placeholder: newPlaceholder() };

async function listen(server: {
  listen: (p: number, h: string) => unknown;
  address: () => unknown;
}): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server as unknown as NodeJS.EventEmitter, 'listening');
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  const record = (
    req: { headers: IncomingHttpHeaders; url?: string },
    res: { end: (s: string) => void },
  ): void => {
    seen.push({ host: String(req.headers.host), url: req.url ?? '', headers: req.headers });
    res.end(`hello from ${String(req.headers.host)}\n`);
  };
  const plain = createHttpServer(record);
  httpPort = await listen(plain);
  // HTTPS upstreams: a certificate for whatever name the client asks for, from the test's CA
  // (trusted through upstreamCa) or from a CA nobody trusts.
  const sni =
    (ca: EgressCa) =>
    (name: string, cb: (e: Error | null, c?: ReturnType<typeof createSecureContext>) => void) =>
      void ca.leafFor(name || '127.0.0.1').then((l) => cb(null, createSecureContext(l)), cb);
  const fallback = await upstreamCa.leafFor('localhost');
  const secure = createHttpsServer({ ...fallback, SNICallback: sni(upstreamCa) }, record);
  httpsPort = await listen(secure);
  const rogue = createHttpsServer(
    { ...(await rogueCa.leafFor('localhost')), SNICallback: sni(rogueCa) },
    record,
  );
  roguePort = await listen(rogue);
  closers.push(
    () => plain.close(),
    () => secure.close(),
    () => rogue.close(),
  );
  proxy = new EgressProxy({
    log: createLogger({ name: 't', level: 'debug', stream: mem }),
    socketDir,
    ca: bangerCa,
    placeholder: (_vm, name) => (name === secret0.name ? secret0.placeholder : 'none'),
    secretValue: async (name) => (name === 'API_KEY' ? SECRET : undefined),
    record: (ev) => events.push(ev),
    upstreamCa: [await upstreamCa.certPem()],
    bridge: { host: '127.0.0.1', port: 0 },
    resolve: async (host) => (host.endsWith('.test') ? ['127.0.0.1'] : []),
  });
}, 30_000);
afterAll(() => {
  proxy.close();
  for (const c of closers) c();
  tmp.cleanup();
});
beforeEach(() => {
  seen.length = 0;
  events.length = 0;
});

interface Reply {
  status: number;
  body: string;
}

function parseReply(text: string): Reply {
  const [head = '', ...rest] = text.split('\r\n\r\n');
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), body: rest.join('\r\n\r\n') };
}

function readAll(s: NodeJS.ReadableStream & { on: Socket['on'] }): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('close', () => resolve(out));
    s.on('error', reject);
    // connectHead pauses the socket explicitly: a data listener alone would not resume it.
    s.resume();
  });
}

function dial(sock: string | { port: number }): Socket {
  return typeof sock === 'string' ? netConnect(sock) : netConnect(sock.port, '127.0.0.1');
}

/** A plain request with an absolute URI through the proxy. */
async function plainGet(
  sock: string | { port: number },
  url: string,
  headers: string[] = [],
): Promise<Reply> {
  const s = dial(sock);
  const host = new URL(url).host;
  s.write(
    `GET ${url} HTTP/1.1\r\nHost: ${host}\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`,
  );
  return parseReply(await readAll(s));
}

/** Read a CONNECT answer's head; what follows stays in the socket. */
function connectHead(s: Socket, target: string): Promise<Reply> {
  s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      const rest = buf.subarray(end + 4);
      if (rest.length > 0) s.unshift(rest);
      s.pause();
      resolve(parseReply(buf.toString()));
    };
    s.on('data', onData);
    s.on('error', reject);
  });
}

/** CONNECT, then TLS to `host` trusting `ca`, then one request; the CONNECT's refusal as is. */
async function httpsGet(
  sock: string | { port: number },
  host: string,
  port: number,
  ca: string,
  headers: string[] = [],
): Promise<Reply & { tlsError?: string }> {
  const s = dial(sock);
  const head = await connectHead(s, `${host}:${port}`);
  if (head.status !== 200) {
    const rest = await readAll(s);
    return { status: head.status, body: head.body + rest };
  }
  const t = tlsConnect({ socket: s, servername: host, ca: [ca] });
  try {
    await once(t, 'secureConnect');
  } catch (err) {
    return { status: 0, body: '', tlsError: (err as NodeJS.ErrnoException).code ?? String(err) };
  }
  t.write(
    `GET /v1/thing HTTP/1.1\r\nHost: ${host}\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`,
  );
  return parseReply(await readAll(t));
}

function attach(policy: string, secrets: VmSecret[] = [], ip?: string): { sock: string; id: string } {
  const id = `vm${Math.random().toString(16).slice(2, 10)}`;
  const r = proxy.attach({
    id,
    name: `n-${id}`,
    policy: parseEgress(policy),
    secrets,
    opId: 'op-00000000000a',
    ...(ip ? { ip } : {}),
  });
  return { sock: r.unixSocket, id };
}

describe('EgressProxy, policy', { timeout: 30_000 }, () => {
  it('an absolute-URI request to an allowed host goes through; another host gets 403 and a deny event', async () => {
    const { sock, id } = attach('allow=api.test');
    const ok = await plainGet(sock, `http://api.test:${httpPort}/a?b=1`);
    expect(ok).toEqual({ status: 200, body: `hello from api.test:${httpPort}\n` });
    expect(seen.map((s) => s.url)).toEqual(['/a?b=1']);
    const no = await plainGet(sock, `http://api.evil.test:${httpPort}/`);
    expect(no.status).toBe(403);
    expect(no.body).toBe(`banger egress: api.evil.test:${httpPort} denied by policy allow=api.test\n`);
    expect(seen).toHaveLength(1);
    const deny = events.find((e) => e.verdict === 'deny');
    expect(deny).toMatchObject({
      vm: `n-${id}`,
      proto: 'http',
      host: 'api.evil.test',
      port: httpPort,
      op_id: 'op-00000000000a',
    });
    expect(events.find((e) => e.verdict === 'allow')).toMatchObject({ host: 'api.test', rule: 'api.test' });
    proxy.detach(id);
  });

  it('IP rules are checked against the address the proxy resolved, ports against the rule', async () => {
    const { sock, id } = attach(`allow=127.0.0.1:${httpPort}`);
    expect((await plainGet(sock, `http://whatever.test:${httpPort}/`)).status).toBe(200);
    expect((await plainGet(sock, `http://whatever.test:${httpsPort}/`)).status).toBe(403);
    expect((await plainGet(sock, `http://nowhere.example:${httpPort}/`)).status).toBe(502);
    proxy.detach(id);
  });

  it('CONNECT without secrets is a plain tunnel: the client sees the upstream certificate', async () => {
    const { sock, id } = attach('allow=api.test');
    const r = await httpsGet(sock, 'api.test', httpsPort, await upstreamCa.certPem(), [
      'Authorization: Bearer x',
    ]);
    expect(r.status).toBe(200);
    expect(seen[0]?.headers.authorization).toBe('Bearer x');
    const denied = await httpsGet(sock, 'other.test', httpsPort, await upstreamCa.certPem());
    expect(denied.status).toBe(403);
    expect(denied.body).toContain(`banger egress: other.test:${httpsPort} denied by policy allow=api.test`);
    proxy.detach(id);
  });

  it('policy none refuses everything; update() changes the policy of an attached VM', async () => {
    const { sock, id } = attach('none');
    expect((await plainGet(sock, `http://api.test:${httpPort}/`)).body).toContain('denied by policy none');
    proxy.update(id, parseEgress('allow=*.test'));
    expect((await plainGet(sock, `http://api.test:${httpPort}/`)).status).toBe(200);
    proxy.detach(id);
  });
});

describe('EgressProxy, secrets', { timeout: 30_000 }, () => {
  const secret = secret0;

  it('terminates TLS with the banger CA and puts the real value in the headers for the secret’s host', async () => {
    const { sock, id } = attach('allow=*.test', [secret]);
    const r = await httpsGet(sock, 'api.test', httpsPort, await bangerCa.certPem(), [
      `Authorization: Bearer ${secret.placeholder}`,
    ]);
    expect(r).toEqual({ status: 200, body: 'hello from api.test\n' });
    expect(seen[0]?.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(events.some((e) => e.verdict === 'allow' && e.reason.includes('API_KEY'))).toBe(true);
    // Neither the value nor the placeholder's replacement is logged.
    expect(mem.lines.join('\n')).not.toContain(SECRET);
    proxy.detach(id);
  });

  it('the placeholder to another host is refused (403 + deny event), and nothing reaches it', async () => {
    const { sock, id } = attach('allow=*.test', [secret]);
    const r = await httpsGet(sock, 'other.test', httpsPort, await bangerCa.certPem(), [
      `X-Api-Key: ${secret.placeholder}`,
    ]);
    expect(r.status).toBe(403);
    expect(r.body).toBe('banger egress: secret API_KEY not allowed for other.test\n');
    expect(seen).toHaveLength(0);
    expect(events.find((e) => e.verdict === 'deny')).toMatchObject({
      host: 'other.test',
      reason: 'secret API_KEY not allowed for other.test',
    });
    // Without the placeholder the same host is fine (the upstream sees the header as sent).
    const ok = await httpsGet(sock, 'other.test', httpsPort, await bangerCa.certPem(), ['X-Api-Key: mine']);
    expect(ok.status).toBe(200);
    expect(seen[0]?.headers['x-api-key']).toBe('mine');
    proxy.detach(id);
  });

  it('a placeholder in plain HTTP is refused even for the secret’s host', async () => {
    const { sock, id } = attach('allow=*.test', [secret]);
    const r = await plainGet(sock, `http://api.test:${httpPort}/`, [`Authorization: ${secret.placeholder}`]);
    expect(r.status).toBe(403);
    expect(seen).toHaveLength(0);
    proxy.detach(id);
  });

  it('an upstream certificate banger does not trust is a clear 502', async () => {
    const { sock, id } = attach('allow=*.test', [secret]);
    const r = await httpsGet(sock, 'api.test', roguePort, await bangerCa.certPem(), [
      `Authorization: Bearer ${secret.placeholder}`,
    ]);
    expect(r.status).toBe(502);
    expect(r.body).toMatch(/^banger egress: api\.test:\d+ presented a certificate banger does not trust/);
    expect(seen).toHaveLength(0);
    proxy.detach(id);
  });
});

describe('EgressProxy, identity', { timeout: 30_000 }, () => {
  it('bridged: the TCP listener serves a connection by its source address; detach closes the socket', async () => {
    const { sock, id } = attach('allow=api.test', [], '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    const port = proxy.tcpAddress()!.port;
    expect((await plainGet({ port }, `http://api.test:${httpPort}/`)).status).toBe(200);
    expect((await plainGet({ port }, `http://x.test:${httpPort}/`)).status).toBe(403);
    proxy.detach(id);
    const s = netConnect(sock);
    const err = await once(s, 'error').then(([e]) => (e as NodeJS.ErrnoException).code);
    expect(err).toBe('ENOENT');
  });
});
