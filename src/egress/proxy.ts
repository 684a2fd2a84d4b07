// The daemon's egress proxy: an HTTP forward proxy (absolute-URI requests and CONNECT) that every
// VM with a policy other than `all`, or with secrets, reaches its outside world through.
// Who is asking: in user mode each VM has its own unix socket (QEMU's guestfwd runs a bridge per
// guest connection to it), in bridged mode one TCP listener on the bridge gateway serves every
// VM and the source address says which. Each request is checked with the VM's policy (the host
// as the client named it, and the address the proxy resolved it to itself, which is the address
// it then connects to: the guest cannot make it check one and reach another).
// With secrets, CONNECT is terminated with a leaf of banger's CA (src/egress/ca.ts) so the
// placeholders in the headers can be seen and replaced (src/egress/forward.ts).
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log/logger.ts';
import type { EgressEvent } from './events.ts';
import type { EgressPolicy } from './rules.ts';
import type { EgressCa } from './ca.ts';
import type { VmSecret } from './secrets.ts';

/** A secret as the VM's record holds it: name and hosts; the proxy derives its placeholder. */
export interface SecretRef {
  name: string;
  hosts: string[];
}
import { Forwarder, type ForwardDeps, type ProxyVm } from './forward.ts';
import { takeHello } from './relay.ts';

export type { ProxyVm } from './forward.ts';

export interface EgressProxyDeps {
  log: Logger;
  /** Where the per-VM unix sockets go (STATE/egress/sockets): short, a socket path has 108 bytes. */
  socketDir: string;
  ca: EgressCa;
  /** The placeholder a VM's guest holds for a secret (derivePlaceholder with the install key). */
  placeholder: (vmId: string, name: string) => string;
  /** A secret's value (the store); undefined when it is not set. */
  secretValue: (name: string) => Promise<string | undefined>;
  /** The event ring (recordEgress of src/egress/events.ts). */
  record: (ev: EgressEvent) => void;
  /** Extra CA certificates (PEM) trusted for upstreams besides the system's: `[egress] ca_bundles`. */
  upstreamCa?: string[];
  /** Bridged mode's listener: the bridge gateway address and the proxy port (default 3128). */
  bridge?: { host: string; port: number };
  /** Test seams and limits (defaults in forward.ts). */
  resolve?: ForwardDeps['resolve'];
  timeouts?: ForwardDeps['timeouts'];
}

export interface AttachVm {
  id: string;
  name: string;
  policy: EgressPolicy;
  secrets: SecretRef[];
  opId?: string;
  /** A bridged VM's address: the TCP listener knows the VM by it. */
  ip?: string;
}

export interface AttachResult {
  unixSocket: string;
  tcp?: { host: string; port: number };
}

/** Connections one VM may hold open at once (each is two sockets and a few buffers). */
const MAX_CONNECTIONS_PER_VM = 256;

interface Attached {
  vm: ProxyVm;
  unix: NetServer;
  unixSocket: string;
  ip?: string;
  sockets: Set<Socket>;
}

export class EgressProxy {
  private readonly d: EgressProxyDeps;
  private readonly vms = new Map<string, Attached>();
  private readonly byIp = new Map<string, string>();
  private readonly owner = new WeakMap<Socket, Attached>();
  private readonly http: HttpServer;
  private readonly fwd: Forwarder;
  private tcp: NetServer | undefined;

  constructor(deps: EgressProxyDeps) {
    this.d = deps;
    this.fwd = new Forwarder({
      log: deps.log,
      ca: deps.ca,
      secretValue: deps.secretValue,
      record: deps.record,
      upstreamCa: deps.upstreamCa ?? [],
      ...(deps.resolve ? { resolve: deps.resolve } : {}),
      ...(deps.timeouts ? { timeouts: deps.timeouts } : {}),
    });
    // One HTTP parser for every listener: connections are handed to it with their VM attached.
    this.http = createHttpServer({ headersTimeout: 30_000, requestTimeout: 0, keepAliveTimeout: 5_000 });
    this.http.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const a = this.owner.get(req.socket);
      if (!a) return void res.destroy();
      this.fwd.request(a.vm, req, res).catch((err: unknown) => this.failed(a.vm, err, res));
    });
    this.http.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const a = this.owner.get(req.socket);
      if (!a) return void socket.destroy();
      this.fwd.connect(a.vm, req, socket, head).catch((err: unknown) => {
        this.d.log.warn(
          { vm: a.vm.name, ...(a.vm.opId ? { op_id: a.vm.opId } : {}), err: (err as Error).message },
          'egress proxy: CONNECT failed',
        );
        socket.destroy();
      });
    });
    this.http.on('clientError', (_err: Error, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      socket.destroy();
    });
  }

  private failed(vm: ProxyVm, err: unknown, res: ServerResponse): void {
    this.d.log.warn(
      { vm: vm.name, ...(vm.opId ? { op_id: vm.opId } : {}), err: (err as Error).message },
      'egress proxy: request failed',
    );
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' });
      res.end(`banger egress: ${(err as Error).message}\n`);
    } else res.destroy();
  }

  /**
   * Hand a connection to the parser as `a`'s (counted and closed with it). `relay`: a unix-socket
   * connection, whose other end is normally user mode's relay (src/egress/relay.ts): its hello
   * is taken off first. Never on the bridged TCP listener, where the guest itself is the peer.
   */
  private adopt(a: Attached, socket: Socket, relay = false): void {
    if (a.sockets.size >= MAX_CONNECTIONS_PER_VM) {
      socket.destroy();
      return;
    }
    a.sockets.add(socket);
    socket.on('close', () => a.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    this.owner.set(socket, a);
    if (!relay) return void this.http.emit('connection', socket);
    takeHello(socket, () => {
      this.http.emit('connection', socket);
      socket.resume();
    });
  }

  /** Start proxying for a VM: its unix socket now, and the bridged listener when it has an address. */
  attach(vm: AttachVm): AttachResult {
    this.detach(vm.id);
    const unixSocket = proxySocketPath(this.d.socketDir, vm.id);
    const secrets: VmSecret[] = vm.secrets.map((s) => ({
      ...s,
      placeholder: this.d.placeholder(vm.id, s.name),
    }));
    rmSync(unixSocket, { force: true });
    const a: Attached = {
      vm: { id: vm.id, name: vm.name, policy: vm.policy, secrets, ...(vm.opId ? { opId: vm.opId } : {}) },
      unix: createNetServer((s) => this.adopt(a, s, true)),
      unixSocket,
      sockets: new Set(),
      ...(vm.ip ? { ip: vm.ip } : {}),
    };
    a.unix.on('error', (err) =>
      this.d.log.error(
        { vm: vm.name, socket: unixSocket, err: err.message },
        'egress proxy: unix socket failed',
      ),
    );
    a.unix.listen(unixSocket);
    this.vms.set(vm.id, a);
    const out: AttachResult = { unixSocket };
    if (vm.ip && this.d.bridge) {
      this.byIp.set(vm.ip, vm.id);
      this.ensureTcp(this.d.bridge);
      out.tcp = { ...this.d.bridge };
    }
    return out;
  }

  /** A new policy for an attached VM: connections from now on are checked against it. */
  update(vmId: string, policy: EgressPolicy): void {
    const a = this.vms.get(vmId);
    if (a) a.vm = { ...a.vm, policy };
  }

  /** Stop proxying for a VM: its socket goes, its open connections are closed. */
  detach(vmId: string): void {
    const a = this.vms.get(vmId);
    if (!a) return;
    this.vms.delete(vmId);
    if (a.ip && this.byIp.get(a.ip) === vmId) this.byIp.delete(a.ip);
    a.unix.close();
    rmSync(a.unixSocket, { force: true });
    for (const s of a.sockets) s.destroy();
    this.fwd.forget(vmId);
    if (this.byIp.size === 0 && this.tcp) {
      this.tcp.close();
      this.tcp = undefined;
    }
  }

  /** Every VM detached and every listener closed (daemon stop). */
  close(): void {
    for (const id of [...this.vms.keys()]) this.detach(id);
    this.tcp?.close();
    this.tcp = undefined;
    this.http.close();
  }

  /** The bridged listener's address once listening (tests bind port 0). */
  tcpAddress(): { host: string; port: number } | undefined {
    const a = this.tcp?.address();
    return a && typeof a === 'object' ? { host: a.address, port: a.port } : undefined;
  }

  private ensureTcp(at: { host: string; port: number }): void {
    if (this.tcp) return;
    const server = createNetServer((s) => {
      const id = this.byIp.get(normaliseIp(s.remoteAddress ?? ''));
      const a = id ? this.vms.get(id) : undefined;
      // Only attached VMs' addresses are served: anything else is closed without a word.
      if (!a) return void s.destroy();
      this.adopt(a, s);
    });
    server.on('error', (err) => {
      this.d.log.error({ listen: `${at.host}:${at.port}`, err: err.message }, 'egress proxy: cannot listen');
      // The next bridged attach tries again (the bridge may not have had its address yet).
      if (this.tcp === server) this.tcp = undefined;
    });
    server.listen(at.port, at.host);
    this.tcp = server;
  }
}

/** A user-mode VM's proxy socket: deterministic, so a VMM's argv is the same after a restart. */
export function proxySocketPath(socketDir: string, vmId: string): string {
  return join(socketDir, `${vmId}.sock`);
}

function normaliseIp(a: string): string {
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}
