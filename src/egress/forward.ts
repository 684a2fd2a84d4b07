// The egress proxy's request handling (src/egress/proxy.ts owns the listeners and identities):
// the policy check, plain-HTTP forwarding, CONNECT tunnels, and for VMs with secrets the TLS
// termination that lets placeholders be replaced in headers. Plain HTTP is a byte pipe after its
// head (src/egress/http-pipe.ts), one request per connection. Every stream is piped with
// backpressure, every socket has an idle timeout, nothing buffers a body.
import { lookup } from 'node:dns/promises';
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect, isIP, isIPv4, type Socket } from 'node:net';
import { pipeline } from 'node:stream';
import type { Duplex } from 'node:stream';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createSecureContext, rootCertificates, TLSSocket } from 'node:tls';
import type { Logger } from '../log/logger.ts';
import type { EgressEvent } from './events.ts';
import { formatEgress, ruleFor, type EgressPolicy } from './rules.ts';
import type { EgressCa } from './ca.ts';
import { placeholdersIn, substituteHeaders, type VmSecret } from './secrets.ts';
import {
  connectionListed,
  HOP_HEADERS,
  pumpRequestBody,
  pumpResponse,
  requestFraming,
  upstreamRequestHead,
  upstreamSocket,
} from './http-pipe.ts';
import { canHandBack, directMessage, stayMessage } from './relay.ts';

export interface ProxyVm {
  id: string;
  name: string;
  policy: EgressPolicy;
  secrets: VmSecret[];
  opId?: string;
}

export interface ForwardTimeouts {
  /** Resolving the destination. */
  resolveMs: number;
  /** Connecting to it (TCP, and TLS for terminated CONNECTs). */
  connectMs: number;
  /** A connection with no traffic either way is closed after this. */
  idleMs: number;
}

export interface ForwardDeps {
  log: Logger;
  ca: EgressCa;
  secretValue: (name: string) => Promise<string | undefined>;
  record: (ev: EgressEvent) => void;
  upstreamCa: string[];
  /** The host resolver (dns.lookup, as the host's own programs resolve). */
  resolve?: (host: string) => Promise<string[]>;
  timeouts?: Partial<ForwardTimeouts>;
}

const DEFAULT_TIMEOUTS: ForwardTimeouts = { resolveMs: 10_000, connectMs: 15_000, idleMs: 300_000 };

/** A request the proxy refuses: the status and the one-line body the client sees. */
class Refusal extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

interface Checked {
  host: string;
  port: number;
  /** The address the policy was checked against and that the proxy connects to. */
  ip: string;
  rule?: string;
}

/** What the inner (TLS-terminated) parser needs to know of each connection. */
interface Terminated {
  vm: ProxyVm;
  dest: Checked;
}

async function defaultResolve(host: string): Promise<string[]> {
  const all = await lookup(host, { all: true, family: 4 });
  return all.map((a) => a.address);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** `host:port` of a CONNECT target; IPv6 in brackets. */
export function parseAuthority(text: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s/]+)):(\d{1,5})$/.exec(text);
  const host = (m?.[1] ?? m?.[2])?.toLowerCase();
  const port = Number(m?.[3]);
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { host, port };
}

export class Forwarder {
  private readonly d: ForwardDeps;
  private readonly t: ForwardTimeouts;
  private readonly resolve: (host: string) => Promise<string[]>;
  private readonly inner: HttpServer;
  private readonly terminated = new WeakMap<object, Terminated>();
  /** Client connections whose one plain-HTTP request is being piped. */
  private readonly piped = new WeakSet<object>();
  private readonly trusted: string[];

  constructor(d: ForwardDeps) {
    this.d = d;
    this.t = { ...DEFAULT_TIMEOUTS, ...d.timeouts };
    this.resolve = d.resolve ?? defaultResolve;
    this.trusted = [...rootCertificates, ...d.upstreamCa];
    // The parser of terminated TLS connections: relative requests, their destination is the CONNECT's.
    this.inner = createHttpServer({ headersTimeout: 30_000, requestTimeout: 0, keepAliveTimeout: 5_000 });
    this.inner.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const t = this.terminated.get(req.socket);
      if (!t) return void res.destroy();
      this.forwardTls(t, req, res).catch((err: unknown) => this.fail(t.vm, res, err));
    });
    this.inner.on('clientError', (_err: Error, socket: Duplex) => socket.destroy());
  }

  /** Nothing is kept per VM beyond its connections; kept for symmetry with attach. */
  forget(vmId: string): void {
    void vmId;
  }

  private event(vm: ProxyVm, verdict: 'allow' | 'deny', dest: Partial<Checked>, reason: string): void {
    const ev: EgressEvent = { time: new Date().toISOString(), vm: vm.name, verdict, proto: 'http', reason };
    if (dest.host !== undefined) ev.host = dest.host;
    if (dest.ip !== undefined) ev.ip = dest.ip;
    if (dest.port !== undefined) ev.port = dest.port;
    if (dest.rule !== undefined) ev.rule = dest.rule;
    if (vm.opId !== undefined) ev.op_id = vm.opId;
    try {
      this.d.record(ev);
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message }, 'egress proxy: recording an event failed');
    }
  }

  /** Resolve and check a destination; a Refusal (and a deny event) when the policy says no. */
  private async check(vm: ProxyVm, host: string, port: number): Promise<Checked> {
    const policy = vm.policy;
    const deny = (why: string, ip?: string): Refusal => {
      this.event(vm, 'deny', { host, port, ...(ip ? { ip } : {}) }, why);
      return new Refusal(403, `banger egress: ${host}:${port} ${why}`);
    };
    if (policy.mode === 'none') throw deny(`denied by policy ${formatEgress(policy)}`);
    let ip: string;
    if (isIP(host)) ip = host;
    else {
      let ips: string[];
      try {
        ips = await withTimeout(this.resolve(host), this.t.resolveMs, `resolving ${host}`);
      } catch (err) {
        this.event(vm, 'deny', { host, port }, `cannot resolve: ${(err as Error).message}`);
        throw new Refusal(502, `banger egress: cannot resolve ${host}: ${(err as Error).message}`);
      }
      if (ips.length === 0) throw new Refusal(502, `banger egress: ${host} has no IPv4 address`);
      ip = ips[0]!;
    }
    if (policy.mode === 'all') return { host, port, ip, rule: 'all' };
    const rule = ruleFor(policy, isIP(host) ? { ip, port } : { host, ip, port });
    if (!rule) throw deny(`denied by policy ${formatEgress(policy)}`, ip);
    return { host, port, ip, rule: rule.text };
  }

  private refuse(res: ServerResponse, r: Refusal): void {
    if (res.headersSent) return void res.destroy();
    const body = `${r.message}\n`;
    res.writeHead(r.status, {
      'content-type': 'text/plain',
      'content-length': Buffer.byteLength(body),
      connection: 'close',
    });
    res.end(body);
  }

  private fail(vm: ProxyVm, res: ServerResponse, err: unknown): void {
    if (err instanceof Refusal) return this.refuse(res, err);
    this.d.log.warn(
      { vm: vm.name, ...(vm.opId ? { op_id: vm.opId } : {}), err: (err as Error).message },
      'egress proxy: request failed',
    );
    this.refuse(res, new Refusal(502, `banger egress: ${(err as Error).message}`));
  }

  /** A plain-HTTP request with an absolute URI (`GET http://host/path`). */
  async request(vm: ProxyVm, req: IncomingMessage, res: ServerResponse): Promise<void> {
    // One request per connection (src/egress/http-pipe.ts): the parser may hand over pipelined
    // requests before the first one's check is done, so the mark is set here, synchronously.
    // A later request on the connection is dropped unanswered (and reaches nobody); the
    // connection closes after the first one's answer (a refusal says `connection: close` too).
    if (this.piped.has(req.socket)) return void req.resume();
    this.piped.add(req.socket);
    try {
      let url: URL;
      try {
        url = new URL(req.url ?? '');
      } catch {
        throw new Refusal(400, 'banger egress: a proxy request needs an absolute http:// URI');
      }
      if (url.protocol !== 'http:')
        throw new Refusal(400, `banger egress: ${url.protocol} URIs go through CONNECT, not a plain request`);
      const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
      const port = url.port ? Number(url.port) : 80;
      const leaked = placeholdersIn(`${req.url ?? ''}\n${req.rawHeaders.join('\n')}`, vm.secrets)[0];
      if (leaked) {
        // Secrets travel only inside TLS: a placeholder in plain HTTP is refused for every host.
        this.event(vm, 'deny', { host, port }, `secret ${leaked.name} not allowed for ${host} (plain HTTP)`);
        throw new Refusal(
          403,
          `banger egress: secret ${leaked.name} not allowed for ${host}:${port} over plain HTTP`,
        );
      }
      const dest = await this.check(vm, host, port);
      this.event(vm, 'allow', dest, 'http');
      this.pipeHttp(vm, dest, url, req, res);
    } catch (err) {
      this.fail(vm, res, err);
    }
  }

  /**
   * A checked plain-HTTP request as a byte pipe (src/egress/http-pipe.ts): the head rewritten in
   * origin form to the address that was checked, the body with its framing, the answer's bytes
   * straight back on the client's connection, which closes after it.
   */
  private pipeHttp(vm: ProxyVm, dest: Checked, url: URL, req: IncomingMessage, res: ServerResponse): void {
    const framing = requestFraming(req.headers);
    let head: string;
    try {
      head = upstreamRequestHead({
        method: req.method ?? '',
        path: `${url.pathname}${url.search}`,
        authority: url.host,
        rawHeaders: req.rawHeaders,
        framing,
      });
    } catch (err) {
      throw new Refusal(400, `banger egress: ${(err as Error).message}`);
    }
    const client = req.socket;
    // User mode's relay takes a request with a known body length off the proxy's hands: it
    // connects to the checked address, sends this head and exactly that many body bytes, and
    // splices the answer back (src/egress/relay.ts). Chunked bodies stay here (re-framed).
    // The socket stays open and silent: counted against the VM's limit, closed by a detach.
    // The relay connects to IPv4 addresses only: an IPv6 destination stays here.
    if (!framing.chunked && isIPv4(dest.ip) && canHandBack(client)) {
      client.write(
        directMessage({
          ip: dest.ip,
          port: dest.port,
          up: Buffer.from(head),
          down: Buffer.alloc(0),
          body: framing.length ?? 0,
        }),
      );
      return;
    }
    // The relay holds the body until the proxy has spoken: it says "stay" before waiting for it.
    if (canHandBack(client)) client.write(stayMessage());
    let onChunk: (chunk: Buffer) => boolean = () => true;
    const up = upstreamSocket({ host: dest.ip, port: dest.port }, () => onChunk);
    up.setNoDelay(true);
    up.setTimeout(this.t.connectMs);
    up.on('timeout', () =>
      up.destroy(new Error(`${up.connecting ? 'connecting to ' : ''}${dest.host}:${dest.port} timed out`)),
    );
    onChunk = pumpResponse({
      up,
      client,
      headRequest: req.method === 'HEAD',
      fail: (err) => this.fail(vm, res, upstreamError(dest, err)),
    });
    up.once('connect', () => {
      up.setTimeout(this.t.idleMs);
      up.write(head);
      pumpRequestBody(req, up, framing);
    });
  }

  /** Pipe a request into `upstream` and its response back, bounded by timeouts. */
  private relay(
    vm: ProxyVm,
    dest: Checked,
    req: IncomingMessage,
    res: ServerResponse,
    upstream: ClientRequest,
  ): void {
    upstream.on('socket', (s: Socket) => s.setTimeout(this.t.idleMs));
    upstream.on('timeout', () => upstream.destroy(new Error(`${dest.host}:${dest.port} timed out`)));
    upstream.on('response', (up: IncomingMessage) => {
      res.writeHead(up.statusCode ?? 502, up.statusMessage, responseHeaders(up.rawHeaders));
      pipeline(up, res, () => undefined);
    });
    upstream.on('error', (err: Error) => this.fail(vm, res, upstreamError(dest, err)));
    req.on('aborted', () => upstream.destroy());
    res.on('close', () => upstream.destroy());
    pipeline(req, upstream, () => undefined);
  }

  /** CONNECT host:port: a plain tunnel, or with secrets a terminated TLS connection. */
  async connect(vm: ProxyVm, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    // A CONNECT pipelined behind a plain request whose answer is being piped on this connection
    // would share the socket with it: one request per connection, so it is dropped with it.
    if (this.piped.has(socket)) return void socket.destroy();
    const target = parseAuthority(req.url ?? '');
    const answer = (status: number, text: string, body: string): void => {
      if (socket.writable)
        socket.end(
          `HTTP/1.1 ${status} ${text}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
    };
    if (!target) return answer(400, 'Bad Request', 'banger egress: CONNECT needs host:port\n');
    let dest: Checked;
    try {
      dest = await this.check(vm, target.host, target.port);
    } catch (err) {
      const r = err instanceof Refusal ? err : new Refusal(502, `banger egress: ${(err as Error).message}`);
      return answer(r.status, r.status === 403 ? 'Forbidden' : 'Bad Gateway', `${r.message}\n`);
    }
    this.event(vm, 'allow', dest, vm.secrets.length > 0 ? 'connect (tls terminated)' : 'connect');
    if (vm.secrets.length > 0) return this.terminate(vm, dest, socket, head);
    if (isIPv4(dest.ip) && canHandBack(socket as Socket)) {
      // The relay connects and tunnels itself; the guest gets the 200 once it is connected.
      socket.write(
        directMessage({
          ip: dest.ip,
          port: dest.port,
          up: head,
          down: Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n', 'latin1'),
          body: 'tunnel',
        }),
      );
      return;
    }

    const up = netConnect({ host: dest.ip, port: dest.port });
    up.setTimeout(this.t.connectMs);
    up.once('timeout', () => up.destroy(new Error(`connecting to ${dest.host}:${dest.port} timed out`)));
    up.once('error', (err) => {
      if (!up.connecting) return socket.destroy();
      answer(502, 'Bad Gateway', `banger egress: ${dest.host}:${dest.port}: ${err.message}\n`);
    });
    up.once('connect', () => {
      up.setTimeout(this.t.idleMs);
      up.on('timeout', () => up.destroy());
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) up.write(head);
      pipeline(socket, up, () => undefined);
      pipeline(up, socket, () => undefined);
    });
  }

  /** Answer the CONNECT, then speak TLS to the guest as `dest.host` and parse its requests. */
  private async terminate(vm: ProxyVm, dest: Checked, socket: Duplex, head: Buffer): Promise<void> {
    let leaf;
    try {
      leaf = await this.d.ca.leafFor(dest.host);
    } catch (err) {
      socket.end(`HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\n\r\n`);
      throw err;
    }
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) socket.unshift(head);
    const tls = new TLSSocket(socket as Socket, {
      isServer: true,
      secureContext: createSecureContext({ cert: leaf.cert, key: leaf.key }),
      ALPNProtocols: ['http/1.1'],
    });
    tls.setTimeout(this.t.idleMs);
    tls.on('timeout', () => tls.destroy());
    tls.on('error', () => {
      tls.destroy();
      socket.destroy();
    });
    this.terminated.set(tls, { vm, dest });
    this.inner.emit('connection', tls);
  }

  /** A request inside a terminated CONNECT: placeholders replaced for the secret's hosts only. */
  private async forwardTls(t: Terminated, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { vm, dest } = t;
    if ((req.url ?? '').includes('banger-secret-')) {
      const s = placeholdersIn(req.url ?? '', vm.secrets)[0];
      if (s) {
        this.event(vm, 'deny', dest, `secret ${s.name} in a URL (only headers carry secrets)`);
        throw new Refusal(403, `banger egress: secret ${s.name} not allowed in a URL`);
      }
    }
    const values = new Map<string, string>();
    for (const s of placeholdersIn(req.rawHeaders.join('\n'), vm.secrets)) {
      const v = await this.d.secretValue(s.name);
      if (v !== undefined) values.set(s.name, v);
    }
    const sub = substituteHeaders(req.rawHeaders, vm.secrets, dest.host, values);
    if (!sub.ok) {
      this.event(vm, 'deny', dest, sub.reason);
      throw new Refusal(403, `banger egress: ${sub.reason}`);
    }
    if (sub.used.length > 0)
      this.event(vm, 'allow', dest, `secrets ${sub.used.join(',')} sent to ${dest.host}`);
    const upstream = httpsRequest({
      host: dest.ip,
      port: dest.port,
      servername: isIP(dest.host) ? undefined : dest.host,
      ca: this.trusted,
      method: req.method,
      path: req.url,
      headers: forwardHeaders(sub.rawHeaders),
      setHost: false,
      timeout: this.t.connectMs,
      agent: false,
      lookup: (_h, _o, cb) => cb(null, dest.ip, 4),
    });
    this.relay(vm, dest, req, res, upstream as ClientRequest);
  }
}

/** The request's headers minus hop-by-hop ones, names as the client wrote them. */
function forwardHeaders(raw: readonly string[]): OutgoingHttpHeaders {
  const drop = new Set([...HOP_HEADERS, ...connectionListed(raw)]);
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] ?? '';
    if (drop.has(name.toLowerCase())) continue;
    const v = raw[i + 1] ?? '';
    const prev = out[name];
    out[name] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

function responseHeaders(raw: readonly string[]): OutgoingHttpHeaders {
  return forwardHeaders(raw);
}

/** An upstream failure as the client should read it: certificate problems say so. */
function upstreamError(dest: Checked, err: Error): Refusal {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT_ALTNAME/.test(code))
    return new Refusal(
      502,
      `banger egress: ${dest.host}:${dest.port} presented a certificate banger does not trust (${code}: ${err.message}); a private CA goes in [egress] ca_bundles`,
    );
  return new Refusal(502, `banger egress: ${dest.host}:${dest.port}: ${err.message}`);
}
