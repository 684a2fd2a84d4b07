// Bridged egress, daemon side: policy → helper params, the resolver's hook (REFUSED for a name no
// rule allows; an allowed name's addresses admitted before the answer leaves), start-up reconcile
// and denial events, against a recording stand-in of the helper's verbs.
import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as T from '../../generated/types.gen.ts';
import {
  applyParams,
  BridgedEgress,
  nameRules,
  policyCidrs,
  type BridgedVm,
  type EgressPriv,
} from '../../src/egress/bridged.ts';
import type { EgressEvent } from '../../src/egress/events.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import {
  answerAddresses,
  buildResponse,
  DnsServer,
  encodeName,
  parseQuery,
  RCODE,
  TYPE,
} from '../../src/daemon/dns.ts';
import { createLogger } from '../../src/log/logger.ts';
import { MemoryLog } from '../helpers/logs.ts';

const plan = { bridge: 'br-banger', gateway: '10.213.0.1' };
const vm = (over: Partial<BridgedVm> = {}): BridgedVm => ({
  id: '0123456789ab',
  name: 'calm-otter',
  guestIp: '10.213.0.2',
  networkMode: 'bridge',
  egress: parseEgress('allow=api.test:443,*.cdn.test,10.9.0.0/16,192.0.2.7:8443'),
  ...over,
});

class FakePriv implements EgressPriv {
  calls: [string, unknown][] = [];
  events: T.PrivEgressEventsResult = { events: [], cursor: 0, dropped: false };
  failAllow = false;
  async egress_apply(p: T.PrivEgressApplyParams): Promise<T.PrivEgressApplyResult> {
    this.calls.push(['apply', p]);
    return { tap: p.tap, mode: p.mode, created: true, rules: 1 };
  }
  async egress_allow(p: T.PrivEgressAllowParams): Promise<T.PrivEgressAllowResult> {
    this.calls.push(['allow', p]);
    if (this.failAllow) throw new Error('helper down');
    return { tap: p.tap, added: p.entries.length };
  }
  async egress_remove(p: T.PrivEgressRemoveParams): Promise<T.PrivEgressRemoveResult> {
    this.calls.push(['remove', p]);
    return { tap: p.tap, removed: true };
  }
  async egress_events(p: T.PrivEgressEventsParams): Promise<T.PrivEgressEventsResult> {
    this.calls.push(['events', p]);
    return this.events;
  }
}

function setup(vms: BridgedVm[]): { priv: FakePriv; be: BridgedEgress; events: EgressEvent[] } {
  const priv = new FakePriv();
  const events: EgressEvent[] = [];
  const be = new BridgedEgress({
    priv: () => priv,
    plan,
    dnsPort: 5354,
    vms: () => vms,
    log: createLogger({ name: 't', stream: new MemoryLog() }),
    record: (e) => events.push(e),
  });
  return { priv, be, events };
}

describe('policy → helper params', () => {
  it('IP and CIDR rules become CIDRs; domain rules do not', () => {
    expect(policyCidrs(vm().egress)).toEqual([{ cidr: '10.9.0.0/16' }, { cidr: '192.0.2.7/32', port: 8443 }]);
    expect(policyCidrs(parseEgress('none'))).toEqual([]);
    expect(applyParams(vm(), { plan, dnsPort: 5354 })).toEqual({
      tap: 'bgt0123456789ab',
      guest_ip: '10.213.0.2',
      bridge: 'br-banger',
      mode: 'allow',
      cidrs: [{ cidr: '10.9.0.0/16' }, { cidr: '192.0.2.7/32', port: 8443 }],
      resolver: { ip: '10.213.0.1', port: 5354 },
      proxy: { ip: '10.213.0.1', port: 3128 },
    });
    expect(() => applyParams(vm({ guestIp: null }), { plan, dnsPort: 5354 })).toThrow(/no guest address/);
  });

  it('nameRules: exact domains, wildcards below their domain, the ports they allow', () => {
    const p = vm().egress;
    expect(nameRules(p, 'api.test')).toMatchObject({ anyPort: false, ports: [443] });
    expect(nameRules(p, 'a.b.cdn.test')).toMatchObject({ anyPort: true });
    expect(nameRules(p, 'cdn.test')).toBeUndefined();
    expect(nameRules(p, 'evil.api.test')).toBeUndefined();
    expect(nameRules(p, 'other.test')).toBeUndefined();
    expect(nameRules(parseEgress('all'), 'api.test')).toBeUndefined();
  });
});

describe('BridgedEgress', () => {
  it('apply: a restricted policy writes the chain, all removes it, user mode is left alone', async () => {
    const { priv, be } = setup([]);
    await be.apply(vm());
    await be.apply(vm({ egress: parseEgress('all') }));
    await be.apply(vm({ networkMode: 'user' }));
    expect(priv.calls.map((c) => c[0])).toEqual(['apply', 'remove']);
    be.close();
  });

  it('the resolver hook refuses a name no rule allows and records a deny event', () => {
    const { be, events } = setup([vm()]);
    expect(be.dnsCheck('10.213.0.99', 'anything.test')).toBeUndefined(); // not a restricted VM
    const v = be.dnsCheck('10.213.0.2', 'other.test');
    expect(v?.allow).toBe(false);
    if (v && !v.allow) v.deny();
    expect(events).toEqual([
      expect.objectContaining({ vm: 'calm-otter', verdict: 'deny', proto: 'dns', host: 'other.test' }),
    ]);
  });

  it("an allowed name: its addresses go to the set (TTL at least 30 s, the rule's port) and an allow event", async () => {
    const { priv, be, events } = setup([vm()]);
    const v = be.dnsCheck('10.213.0.2', 'api.test');
    expect(v?.allow).toBe(true);
    if (!v?.allow) return;
    await v.admit([
      { ip: '192.0.2.10', ttl: 5 },
      { ip: '192.0.2.11', ttl: 600 },
    ]);
    expect(priv.calls).toEqual([
      [
        'allow',
        {
          tap: 'bgt0123456789ab',
          entries: [
            { ip: '192.0.2.10', ttl_s: 30, port: 443 },
            { ip: '192.0.2.11', ttl_s: 600, port: 443 },
          ],
        },
      ],
    ]);
    expect(events[0]).toMatchObject({ verdict: 'allow', host: 'api.test', rule: 'api.test:443' });
    const w = be.dnsCheck('10.213.0.2', 'x.cdn.test');
    if (w?.allow) await w.admit([{ ip: '198.51.100.1', ttl: 60 }]);
    expect(priv.calls.at(-1)).toEqual([
      'allow',
      { tap: 'bgt0123456789ab', entries: [{ ip: '198.51.100.1', ttl_s: 60 }] },
    ]);
  });

  it('reconcile: chains of gone or unrestricted VMs go, a restricted VM whose tap lost its chain gets it back', async () => {
    const gone = 'bgtffffffffffff';
    const freeVm = vm({
      id: 'aaaaaaaaaaaa',
      name: 'free',
      guestIp: '10.213.0.3',
      egress: parseEgress('all'),
    });
    const { priv, be } = setup([vm(), freeVm]);
    const r = await be.reconcile({
      taps: [
        { name: 'bgt0123456789ab', vm_id: '0123456789ab', up: true },
        { name: 'bgtaaaaaaaaaaaa', vm_id: 'aaaaaaaaaaaa', up: true },
      ],
      egress: [
        { tap: gone, ingress: true },
        { tap: 'bgtaaaaaaaaaaaa', ingress: true, guest_ip: '10.213.0.3' },
      ],
    });
    expect(r).toEqual({ removed: [gone, 'bgtaaaaaaaaaaaa'], applied: ['bgt0123456789ab'] });
    expect(priv.calls.map((c) => c[0])).toEqual(['remove', 'remove', 'apply']);
    be.close();
  });

  it('denials from the kernel log become deny events of the VM (DNS elsewhere said as such)', async () => {
    const { priv, be, events } = setup([vm()]);
    priv.events = {
      cursor: 2,
      dropped: false,
      events: [
        {
          seq: 1,
          time: 't1',
          tap: 'bgt0123456789ab',
          src: '10.213.0.2',
          dst: '192.0.2.50',
          proto: 'tcp',
          dport: 22,
        },
        {
          seq: 2,
          time: 't2',
          tap: 'bgt0123456789ab',
          src: '10.213.0.2',
          dst: '8.8.8.8',
          proto: 'udp',
          dport: 53,
        },
        {
          seq: 3,
          time: 't3',
          tap: 'bgtffffffffffff',
          src: '10.213.0.9',
          dst: '1.1.1.1',
          proto: 'tcp',
          dport: 80,
        },
      ],
    };
    await be.poll();
    expect(events).toEqual([
      expect.objectContaining({
        vm: 'calm-otter',
        verdict: 'deny',
        proto: 'tcp',
        ip: '192.0.2.50',
        port: 22,
      }),
      expect.objectContaining({ vm: 'calm-otter', verdict: 'deny', proto: 'dns', ip: '8.8.8.8', port: 53 }),
    ]);
    priv.events = { cursor: 2, dropped: false, events: [] };
    await be.poll();
    expect(priv.calls.filter((c) => c[0] === 'events').map((c) => c[1])).toEqual([
      { cursor: 0 },
      { cursor: 2 },
    ]);
  });
});

describe('answerAddresses', () => {
  it('reads A records (compressed names, CNAMEs skipped) from a response', () => {
    const q = parseQuery(
      Buffer.concat([
        Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        encodeName('api.test'),
        Buffer.from([0, 1, 0, 1]),
      ]),
    );
    const ptr = Buffer.from([0xc0, 12]);
    const rr = (type: number, ttl: number, data: Buffer): Buffer => {
      const f = Buffer.alloc(10);
      f.writeUInt16BE(type, 0);
      f.writeUInt16BE(1, 2);
      f.writeUInt32BE(ttl, 4);
      f.writeUInt16BE(data.length, 8);
      return Buffer.concat([ptr, f, data]);
    };
    const head = buildResponse(q, RCODE.NOERROR);
    head.writeUInt16BE(3, 6);
    const msg = Buffer.concat([
      head,
      rr(5, 300, encodeName('edge.cdn.test')),
      rr(TYPE.A, 42, Buffer.from([192, 0, 2, 10])),
      rr(TYPE.A, 7, Buffer.from([192, 0, 2, 11])),
    ]);
    expect(answerAddresses(msg)).toEqual([
      { ip: '192.0.2.10', ttl: 42 },
      { ip: '192.0.2.11', ttl: 7 },
    ]);
    expect(answerAddresses(msg.subarray(0, msg.length - 3))).toEqual([{ ip: '192.0.2.10', ttl: 42 }]);
    expect(answerAddresses(Buffer.from([1, 2, 3]))).toEqual([]);
  });
});

// Root: the fake upstream must listen on port 53 (the forwarder's port).
describe.skipIf(process.getuid?.() !== 0)('the guest listener under a policy', () => {
  const UPSTREAM = '127.0.0.77';
  const upstream = createSocket('udp4');
  const order: string[] = [];
  let admitFails = false;
  const server = new DnsServer({
    port: 0,
    lookup: () => undefined,
    log: createLogger({ name: 't', stream: new MemoryLog() }),
    upstream: () => UPSTREAM,
  });
  server.egress = {
    check: (_src, name) =>
      name === 'api.test'
        ? {
            allow: true,
            admit: async (answers) => {
              order.push(`admit ${answers.map((a) => `${a.ip}/${a.ttl}`).join(',')}`);
              if (admitFails) throw new Error('helper down');
            },
          }
        : { allow: false, deny: () => order.push(`deny ${name}`) },
  };
  let port = 0;
  beforeAll(async () => {
    upstream.on('message', (m, r) => {
      const q = parseQuery(m);
      order.push(`upstream ${q.name}`);
      const data = Buffer.from([192, 0, 2, 10]);
      const f = Buffer.alloc(10);
      f.writeUInt16BE(TYPE.A, 0);
      f.writeUInt16BE(1, 2);
      f.writeUInt32BE(120, 4);
      f.writeUInt16BE(4, 8);
      const head = buildResponse(q, RCODE.NOERROR);
      head.writeUInt16BE(1, 6);
      upstream.send(Buffer.concat([head, encodeName(q.name), f, data]), r.port, r.address);
    });
    await new Promise<void>((res) => upstream.bind(53, UPSTREAM, res));
    await server.listen('127.0.0.1', true);
    port = server.boundPort('127.0.0.1')!;
  });
  afterAll(async () => {
    upstream.close();
    await server.close();
  });

  function ask(name: string): Promise<Buffer> {
    const msg = Buffer.concat([
      Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      encodeName(name),
      Buffer.from([0, 1, 0, 1]),
    ]);
    return new Promise((resolve, reject) => {
      const s = createSocket('udp4');
      const t = setTimeout(() => reject(new Error('no answer')), 4000);
      s.on('message', (m) => {
        clearTimeout(t);
        order.push('reply');
        s.close();
        resolve(m);
      });
      s.send(msg, port, '127.0.0.1');
    });
  }

  it('a refused name never reaches the upstream; an allowed one is admitted before the reply; a failed admit is SERVFAIL', async () => {
    const r1 = await ask('other.test');
    expect(r1.readUInt16BE(2) & 0xf).toBe(RCODE.REFUSED);
    const r2 = await ask('api.test');
    expect(r2.readUInt16BE(2) & 0xf).toBe(RCODE.NOERROR);
    expect(answerAddresses(r2)).toEqual([{ ip: '192.0.2.10', ttl: 120 }]);
    expect(order).toEqual(['deny other.test', 'reply', 'upstream api.test', 'admit 192.0.2.10/120', 'reply']);
    admitFails = true;
    const r3 = await ask('api.test');
    expect(r3.readUInt16BE(2) & 0xf).toBe(RCODE.SERVFAIL);
  });
});
