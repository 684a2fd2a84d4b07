// bangerd's authoritative DNS for `<name>.vm`: A records for running bridged VMs, NXDOMAIN for
// any other name under .vm, REFUSED outside it (unless the listener forwards, see below). UDP
// only (answers are a few dozen bytes; nothing here is ever truncated). The wire format is
// hand-rolled and minimal: one question, no compression in what we parse beyond what RFC 1035
// allows in queries (pointers are refused), compression-free answers.
//
// Two kinds of listener: 127.0.0.1:<port> for the host (systemd-resolved routes `~vm` here, or
// point any resolver at it), and <bridge address>:<port> for guests, whose resolv.conf names the
// bridge: the root helper redirects their port 53 here. The guest listener forwards names outside
// .vm to the host's upstream resolver, so guests with NAT resolve the internet too.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import type { Logger } from '../log/logger.ts';

export const DOMAIN = 'vm';
/** Answers and negative answers are short-lived: VMs come and go. */
export const TTL = 5;

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export const TYPE = { A: 1, NS: 2, SOA: 6, AAAA: 28, ANY: 255 } as const;
const CLASS_IN = 1;

export interface DnsQuery {
  id: number;
  /** Recursion desired, echoed back. */
  rd: boolean;
  opcode: number;
  /** Lower-cased, without the trailing dot; "" is the root. */
  name: string;
  qtype: number;
  qclass: number;
  /** The question section as received (echoed verbatim in the answer). */
  question: Buffer;
}

export class DnsFormatError extends Error {}

/** Parse a query: header plus exactly one question. Throws DnsFormatError. */
export function parseQuery(msg: Buffer): DnsQuery {
  if (msg.length < 12) throw new DnsFormatError('short header');
  const id = msg.readUInt16BE(0);
  const flags = msg.readUInt16BE(2);
  if (flags & 0x8000) throw new DnsFormatError('not a query');
  const qd = msg.readUInt16BE(4);
  if (qd !== 1) throw new DnsFormatError(`expected one question, got ${qd}`);
  const labels: string[] = [];
  let off = 12;
  let total = 0;
  for (;;) {
    if (off >= msg.length) throw new DnsFormatError('truncated name');
    const len = msg[off]!;
    off += 1;
    if (len === 0) break;
    if (len & 0xc0) throw new DnsFormatError('compressed or extended label in question');
    if (off + len > msg.length) throw new DnsFormatError('truncated label');
    total += len + 1;
    if (total > 255) throw new DnsFormatError('name too long');
    labels.push(msg.toString('latin1', off, off + len).toLowerCase());
    off += len;
  }
  if (off + 4 > msg.length) throw new DnsFormatError('truncated question');
  return {
    id,
    rd: (flags & 0x0100) !== 0,
    opcode: (flags >> 11) & 0xf,
    name: labels.join('.'),
    qtype: msg.readUInt16BE(off),
    qclass: msg.readUInt16BE(off + 2),
    question: msg.subarray(12, off + 4),
  };
}

export function encodeName(name: string): Buffer {
  const parts = name === '' ? [] : name.split('.');
  const bufs: Buffer[] = [];
  for (const p of parts) {
    const b = Buffer.from(p, 'latin1');
    if (b.length === 0 || b.length > 63) throw new RangeError(`bad DNS label in ${name}`);
    bufs.push(Buffer.from([b.length]), b);
  }
  bufs.push(Buffer.from([0]));
  return Buffer.concat(bufs);
}

export interface ResourceRecord {
  name: string;
  type: number;
  ttl: number;
  data: Buffer;
}

function encodeRecord(r: ResourceRecord): Buffer {
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(r.type, 0);
  fixed.writeUInt16BE(CLASS_IN, 2);
  fixed.writeUInt32BE(r.ttl, 4);
  fixed.writeUInt16BE(r.data.length, 8);
  return Buffer.concat([encodeName(r.name), fixed, r.data]);
}

export function aRecord(name: string, ip: string, ttl = TTL): ResourceRecord {
  const octets = ip.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255))
    throw new RangeError(`not an IPv4 address: ${ip}`);
  return { name, type: TYPE.A, ttl, data: Buffer.from(octets) };
}

/** The zone's SOA, sent with negative answers so resolvers cache them for TTL seconds only. */
export function soaRecord(): ResourceRecord {
  const nums = Buffer.alloc(20);
  nums.writeUInt32BE(1, 0); // serial
  nums.writeUInt32BE(3600, 4); // refresh
  nums.writeUInt32BE(600, 8); // retry
  nums.writeUInt32BE(86400, 12); // expire
  nums.writeUInt32BE(TTL, 16); // minimum (negative caching)
  return {
    name: DOMAIN,
    type: TYPE.SOA,
    ttl: TTL,
    data: Buffer.concat([encodeName(`ns.${DOMAIN}`), encodeName(`hostmaster.${DOMAIN}`), nums]),
  };
}

export function buildResponse(
  q: Pick<DnsQuery, 'id' | 'rd' | 'opcode' | 'question'>,
  rcode: number,
  opts: { answers?: ResourceRecord[]; authority?: ResourceRecord[]; authoritative?: boolean } = {},
): Buffer {
  const answers = opts.answers ?? [];
  const authority = opts.authority ?? [];
  const h = Buffer.alloc(12);
  h.writeUInt16BE(q.id, 0);
  let flags = 0x8000 | ((q.opcode & 0xf) << 11) | (rcode & 0xf);
  if (opts.authoritative) flags |= 0x0400;
  if (q.rd) flags |= 0x0100;
  h.writeUInt16BE(flags, 2);
  h.writeUInt16BE(q.question.length > 0 ? 1 : 0, 4);
  h.writeUInt16BE(answers.length, 6);
  h.writeUInt16BE(authority.length, 8);
  h.writeUInt16BE(0, 10);
  return Buffer.concat([h, q.question, ...answers.map(encodeRecord), ...authority.map(encodeRecord)]);
}

/** VM name → its address, when the VM is running and reachable by address (bridge mode). */
export type VmLookup = (name: string) => { ip?: string } | undefined;

/**
 * The answer to one query, or undefined when the query is for a name outside .vm (the caller
 * forwards it or refuses it). Pure: table-tested.
 */
export function answer(q: DnsQuery, lookup: VmLookup): Buffer | undefined {
  if (q.opcode !== 0) return buildResponse(q, RCODE.NOTIMP);
  if (q.name !== DOMAIN && !q.name.endsWith(`.${DOMAIN}`)) return undefined;
  if (q.qclass !== CLASS_IN && q.qclass !== 255) return buildResponse(q, RCODE.REFUSED);
  const nodata = (): Buffer =>
    buildResponse(q, RCODE.NOERROR, { authority: [soaRecord()], authoritative: true });
  if (q.name === DOMAIN) {
    return q.qtype === TYPE.SOA
      ? buildResponse(q, RCODE.NOERROR, { answers: [soaRecord()], authoritative: true })
      : nodata();
  }
  const label = q.name.slice(0, -(DOMAIN.length + 1));
  const vm = label.includes('.') ? undefined : lookup(label);
  if (!vm?.ip) return buildResponse(q, RCODE.NXDOMAIN, { authority: [soaRecord()], authoritative: true });
  if (q.qtype === TYPE.A || q.qtype === TYPE.ANY)
    return buildResponse(q, RCODE.NOERROR, { answers: [aRecord(q.name, vm.ip)], authoritative: true });
  return nodata();
}

/**
 * The A records of a response's answer section (CNAMEs and other types skipped; names may be
 * compressed), or [] for anything unparsable. Pure.
 */
export function answerAddresses(msg: Buffer): { ip: string; ttl: number }[] {
  try {
    if (msg.length < 12) return [];
    const qd = msg.readUInt16BE(4);
    const an = msg.readUInt16BE(6);
    let off = 12;
    const skipName = (): void => {
      for (let hops = 0; hops < 128; hops++) {
        const len = msg[off];
        if (len === undefined) throw new DnsFormatError('truncated name');
        if ((len & 0xc0) === 0xc0) {
          off += 2;
          return;
        }
        off += 1 + len;
        if (len === 0) return;
      }
      throw new DnsFormatError('name too long');
    };
    for (let i = 0; i < qd; i++) {
      skipName();
      off += 4;
    }
    const out: { ip: string; ttl: number }[] = [];
    for (let i = 0; i < an; i++) {
      skipName();
      if (off + 10 > msg.length) break;
      const type = msg.readUInt16BE(off);
      const klass = msg.readUInt16BE(off + 2);
      const ttl = msg.readUInt32BE(off + 4);
      const len = msg.readUInt16BE(off + 8);
      off += 10;
      if (off + len > msg.length) break;
      if (type === TYPE.A && klass === CLASS_IN && len === 4)
        out.push({ ip: [...msg.subarray(off, off + 4)].join('.'), ttl });
      off += len;
    }
    return out;
  } catch {
    return [];
  }
}

/**
 * What the resolver does for a guest under a restricted egress policy (src/egress/bridged.ts):
 * a name no rule allows is answered REFUSED (not NXDOMAIN: the name may well exist, the policy
 * says no, and nothing caches a refusal as "no such name"); an allowed name's addresses are
 * admitted into the VM's nftables sets before the answer leaves.
 */
export interface DnsEgressHook {
  check(
    src: string,
    name: string,
  ):
    | { allow: false; deny: () => void }
    | { allow: true; admit: (answers: { ip: string; ttl: number }[]) => Promise<void> }
    | undefined;
}

/** The first nameserver of a resolv.conf that is not one of our own listeners. */
export function upstreamFrom(resolvConf: string, exclude: string[]): string | undefined {
  for (const line of resolvConf.split('\n')) {
    const m = /^\s*nameserver\s+([0-9.]+)\s*$/.exec(line);
    if (m && !exclude.includes(m[1]!)) return m[1];
  }
  return undefined;
}

export interface DnsServerOptions {
  port: number;
  lookup: VmLookup;
  log: Logger;
  /** Where names outside .vm go for guest listeners (default: /etc/resolv.conf's first server). */
  upstream?: () => string | undefined;
  /** The upstream's port (53; tests use an unprivileged one). */
  upstreamPort?: number;
}

interface Listener {
  socket: Socket;
  forward: boolean;
}

export class DnsServer {
  private readonly o: DnsServerOptions;
  private readonly listeners = new Map<string, Listener>();
  /** Egress policy of bridged guests (set once the network exists); guest listeners only. */
  egress: DnsEgressHook | undefined;

  constructor(opts: DnsServerOptions) {
    this.o = opts;
  }

  get port(): number {
    return this.o.port;
  }

  addresses(): string[] {
    return [...this.listeners.keys()];
  }

  /** The port a listener is bound to (differs from `port` only when that was 0: tests). */
  boundPort(address: string): number | undefined {
    return this.listeners.get(address)?.socket.address().port;
  }

  /**
   * Listen on address:port (idempotent). `forward`: relay names outside .vm upstream (guest
   * listener); otherwise refuse them. Resolves once bound; rejects with the bind error.
   */
  listen(address: string, forward: boolean): Promise<void> {
    if (this.listeners.has(address)) return Promise.resolve();
    const socket = createSocket({ type: 'udp4', reuseAddr: false });
    const l: Listener = { socket, forward };
    this.listeners.set(address, l);
    socket.on('message', (msg, rinfo) => void this.onMessage(l, msg, rinfo));
    return new Promise((resolve, reject) => {
      socket.once('error', (err) => {
        this.listeners.delete(address);
        socket.close();
        reject(err);
      });
      socket.bind(this.o.port, address, () => {
        socket.removeAllListeners('error');
        socket.on('error', (err) => this.o.log.warn({ err: err.message, address }, 'dns socket error'));
        this.o.log.info({ address, port: this.o.port, forward }, 'dns listening for .vm');
        resolve();
      });
    });
  }

  private async onMessage(l: Listener, msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    let reply: Buffer | undefined;
    let q: DnsQuery;
    try {
      q = parseQuery(msg);
    } catch {
      // Echo the id with FORMERR when there is at least a header; drop anything shorter.
      if (msg.length >= 12)
        reply = buildResponse(
          {
            id: msg.readUInt16BE(0),
            rd: false,
            opcode: (msg.readUInt16BE(2) >> 11) & 0xf,
            question: Buffer.alloc(0),
          },
          RCODE.FORMERR,
        );
      if (reply) l.socket.send(reply, rinfo.port, rinfo.address);
      return;
    }
    reply = answer(q, this.o.lookup);
    if (!reply)
      reply = l.forward ? await this.forwardChecked(msg, q, rinfo.address) : buildResponse(q, RCODE.REFUSED);
    l.socket.send(reply, rinfo.port, rinfo.address);
  }

  /** Forward a guest's query, under its VM's egress policy when it has one. */
  private async forwardChecked(msg: Buffer, q: DnsQuery, src: string): Promise<Buffer> {
    const verdict = this.egress?.check(src, q.name);
    if (!verdict) return this.forward(msg, q);
    if (!verdict.allow) {
      verdict.deny();
      return buildResponse(q, RCODE.REFUSED);
    }
    const reply = await this.forward(msg, q);
    try {
      // Before the guest has the answer: its first connection must already pass.
      await verdict.admit(answerAddresses(reply));
    } catch (err) {
      this.o.log.warn(
        { name: q.name, src, err: (err as Error).message },
        'egress: could not admit resolved addresses',
      );
      return buildResponse(q, RCODE.SERVFAIL);
    }
    return reply;
  }

  /** Relay one query to the upstream resolver; SERVFAIL when there is none or it is silent. */
  private forward(msg: Buffer, q: DnsQuery): Promise<Buffer> {
    const upstream = (this.o.upstream ?? defaultUpstream(this.addresses()))();
    if (!upstream) return Promise.resolve(buildResponse(q, RCODE.SERVFAIL));
    return new Promise((resolve) => {
      const s = createSocket('udp4');
      const done = (b: Buffer): void => {
        clearTimeout(timer);
        s.close();
        resolve(b);
      };
      const timer = setTimeout(() => done(buildResponse(q, RCODE.SERVFAIL)), 3000);
      s.on('error', () => done(buildResponse(q, RCODE.SERVFAIL)));
      s.on('message', (m) => {
        if (m.length >= 2 && m.readUInt16BE(0) === q.id) done(m);
      });
      s.send(msg, this.o.upstreamPort ?? 53, upstream);
    });
  }

  async close(): Promise<void> {
    const all = [...this.listeners.values()];
    this.listeners.clear();
    await Promise.all(all.map((l) => new Promise<void>((r) => l.socket.close(() => r()))));
  }
}

function defaultUpstream(own: string[]): () => string | undefined {
  return () => {
    try {
      return upstreamFrom(readFileSync('/etc/resolv.conf', 'utf8'), ['127.0.0.1', ...own]);
    } catch {
      return undefined;
    }
  };
}
