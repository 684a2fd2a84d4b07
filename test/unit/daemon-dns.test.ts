// The .vm DNS server: wire encoding table tests, and a tiny DNS client querying a live listener.
import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  answer,
  buildResponse,
  DnsFormatError,
  DnsServer,
  encodeName,
  parseQuery,
  RCODE,
  TYPE,
  upstreamFrom,
  type VmLookup,
} from '../../src/daemon/dns.ts';
import { createLogger } from '../../src/log/logger.ts';
import { MemoryLog } from '../helpers/logs.ts';

/** A query as a stub resolver sends it: RD set, one question. */
function query(name: string, qtype: number = TYPE.A, id = 0x1234): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(0x0100, 2);
  h.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(qtype, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([h, encodeName(name), tail]);
}

interface Decoded {
  id: number;
  qr: boolean;
  aa: boolean;
  rd: boolean;
  rcode: number;
  qd: number;
  answers: { name: string; type: number; ttl: number; data: Buffer }[];
  authority: number;
}

/** The test's own decoder (independent of the server's encoder). */
function decode(b: Buffer): Decoded {
  const flags = b.readUInt16BE(2);
  const qd = b.readUInt16BE(4);
  const an = b.readUInt16BE(6);
  let off = 12;
  const readName = (): string => {
    const labels: string[] = [];
    for (let len = b[off]!; len !== 0; len = b[off]!) {
      labels.push(b.toString('latin1', off + 1, off + 1 + len));
      off += len + 1;
    }
    off += 1;
    return labels.join('.');
  };
  for (let i = 0; i < qd; i++) {
    readName();
    off += 4;
  }
  const answers = [];
  for (let i = 0; i < an; i++) {
    const name = readName();
    const type = b.readUInt16BE(off);
    const ttl = b.readUInt32BE(off + 4);
    const len = b.readUInt16BE(off + 8);
    answers.push({ name, type, ttl, data: b.subarray(off + 10, off + 10 + len) });
    off += 10 + len;
  }
  return {
    id: b.readUInt16BE(0),
    qr: (flags & 0x8000) !== 0,
    aa: (flags & 0x0400) !== 0,
    rd: (flags & 0x0100) !== 0,
    rcode: flags & 0xf,
    qd,
    answers,
    authority: b.readUInt16BE(8),
  };
}

const vms: Record<string, { ip?: string }> = {
  'calm-otter': { ip: '10.213.0.2' },
  stopped: {},
};
const lookup: VmLookup = (n) => vms[n];

describe('dns wire format', () => {
  it('parses a query and lower-cases the name', () => {
    const q = parseQuery(query('Calm-Otter.VM'));
    expect(q).toMatchObject({ id: 0x1234, rd: true, opcode: 0, name: 'calm-otter.vm', qtype: 1, qclass: 1 });
  });

  it.each([
    ['short header', Buffer.alloc(5)],
    ['a response', Buffer.from([0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1])],
    ['two questions', Buffer.from([0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1])],
    ['no question', Buffer.from([0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
    ['truncated label', Buffer.concat([query('a.vm').subarray(0, 12), Buffer.from([9, 97, 98])])],
    [
      'compression pointer',
      Buffer.concat([query('a.vm').subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]),
    ],
    [
      'missing type/class',
      Buffer.concat([query('a.vm').subarray(0, 12), encodeName('a.vm'), Buffer.from([0])]),
    ],
    [
      'overlong name',
      Buffer.concat([
        query('a.vm').subarray(0, 12),
        ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 97)])),
        Buffer.from([0, 0, 1, 0, 1]),
      ]),
    ],
  ])('refuses %s', (_n, msg) => {
    expect(() => parseQuery(msg)).toThrow(DnsFormatError);
  });

  it('A for a running VM: authoritative, TTL 5, the question echoed', () => {
    const r = decode(answer(parseQuery(query('calm-otter.vm')), lookup)!);
    expect(r).toMatchObject({ id: 0x1234, qr: true, aa: true, rd: true, rcode: RCODE.NOERROR, qd: 1 });
    expect(r.answers).toEqual([
      { name: 'calm-otter.vm', type: TYPE.A, ttl: 5, data: Buffer.from([10, 213, 0, 2]) },
    ]);
  });

  it.each([
    ['a stopped VM', 'stopped.vm', TYPE.A, RCODE.NXDOMAIN],
    ['an unknown VM', 'nope.vm', TYPE.A, RCODE.NXDOMAIN],
    ['a sub-name', 'x.calm-otter.vm', TYPE.A, RCODE.NXDOMAIN],
    ['AAAA of a running VM (no data)', 'calm-otter.vm', TYPE.AAAA, RCODE.NOERROR],
    ['the zone apex', 'vm', TYPE.A, RCODE.NOERROR],
  ])('%s → rcode %s with the SOA, no answer', (_n, name, qtype, rcode) => {
    const r = decode(answer(parseQuery(query(name, qtype)), lookup)!);
    expect(r.rcode).toBe(rcode);
    expect(r.answers).toEqual([]);
    expect(r.authority).toBe(1);
    expect(r.aa).toBe(true);
  });

  it('names outside .vm are not ours; other opcodes are not implemented', () => {
    expect(answer(parseQuery(query('example.com')), lookup)).toBeUndefined();
    expect(answer(parseQuery(query('vmx')), lookup)).toBeUndefined();
    const status = query('calm-otter.vm');
    status.writeUInt16BE(0x1000 | 0x0100, 2); // opcode 2 (STATUS)
    expect(decode(answer(parseQuery(status), lookup)!).rcode).toBe(RCODE.NOTIMP);
  });

  it('picks an upstream that is not our own listener', () => {
    expect(upstreamFrom('# x\nnameserver 10.213.0.1\nnameserver 192.0.2.53\n', ['10.213.0.1'])).toBe(
      '192.0.2.53',
    );
    expect(upstreamFrom('search lan\n', [])).toBeUndefined();
  });

  it('buildResponse sets the header counts', () => {
    const q = parseQuery(query('calm-otter.vm'));
    const b = buildResponse(q, RCODE.SERVFAIL);
    expect(decode(b)).toMatchObject({ rcode: RCODE.SERVFAIL, qd: 1, answers: [], authority: 0, aa: false });
  });
});

describe('a live listener on 127.0.0.1', () => {
  const server = new DnsServer({
    port: 0,
    lookup,
    log: createLogger({ name: 't', stream: new MemoryLog() }),
  });
  let port = 0;
  beforeAll(async () => {
    await server.listen('127.0.0.1', false);
    port = server.boundPort('127.0.0.1')!;
  });
  afterAll(() => server.close());

  function ask(msg: Buffer): Promise<Decoded> {
    return new Promise((resolve, reject) => {
      const s = createSocket('udp4');
      const t = setTimeout(() => reject(new Error('no answer')), 2000);
      s.on('message', (m) => {
        clearTimeout(t);
        s.close();
        resolve(decode(m));
      });
      s.send(msg, port, '127.0.0.1');
    });
  }

  it('answers A, NXDOMAIN, REFUSED and FORMERR over UDP', async () => {
    const a = await ask(query('calm-otter.vm', TYPE.A, 7));
    expect(a.id).toBe(7);
    expect(a.answers[0]!.data).toEqual(Buffer.from([10, 213, 0, 2]));
    expect((await ask(query('stopped.vm'))).rcode).toBe(RCODE.NXDOMAIN);
    expect((await ask(query('example.com'))).rcode).toBe(RCODE.REFUSED);
    const bad = Buffer.concat([query('x.vm', TYPE.A, 99).subarray(0, 12), Buffer.from([0xc0, 0x0c])]);
    const f = await ask(bad);
    expect(f).toMatchObject({ id: 99, rcode: RCODE.FORMERR });
  });

  it('listen is idempotent per address', async () => {
    await server.listen('127.0.0.1', false);
    expect(server.addresses()).toEqual(['127.0.0.1']);
  });
});
