// Bridged egress, daemon side: policy → helper params, the resolver's hook (REFUSED for a name no
// rule allows; an allowed name's addresses admitted before the answer leaves), start-up reconcile
// and denial events, against a recording stand-in of the helper's verbs.
import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as T from '../../generated/types.gen.ts';
import {
  applyParams,
  applyParamsHash,
  BridgedEgress,
  nameRules,
  policyCidrs,
  type BridgedVm,
  type EgressPriv,
} from '../../src/egress/bridged.ts';
import type { EgressEvent } from '../../src/egress/events.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import { egressPolicyHash, egressSpecFromParams, type EgressSpec } from '../../src/hostnet/egress.ts';
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

  it('the resolver hook reads the store once, not per query; apply and remove keep its view current', async () => {
    const rows = [vm()];
    let listed = 0;
    const priv = new FakePriv();
    const be = new BridgedEgress({
      priv: () => priv,
      plan,
      dnsPort: 5354,
      vms: () => {
        listed++;
        return rows;
      },
      log: createLogger({ name: 't', stream: new MemoryLog() }),
      record: () => undefined,
    });
    for (let i = 0; i < 100; i++) expect(be.dnsCheck('10.213.0.2', 'api.test')?.allow).toBe(true);
    expect(listed).toBe(1);
    // vm set --egress allow=other.test: applied before the store has it; the hook follows at once.
    await be.apply(vm({ egress: parseEgress('allow=other.test') }));
    expect(be.dnsCheck('10.213.0.2', 'api.test')?.allow).toBe(false);
    expect(be.dnsCheck('10.213.0.2', 'other.test')?.allow).toBe(true);
    // A failed apply keeps the policy the host still enforces.
    priv.egress_apply = () => Promise.reject(new Error('helper down'));
    await expect(be.apply(vm({ egress: parseEgress('allow=third.test') }))).rejects.toThrow('helper down');
    expect(be.dnsCheck('10.213.0.2', 'other.test')?.allow).toBe(true);
    // All: not restricted any more; a new VM on another address; a delete.
    await be.apply(vm({ egress: parseEgress('all') }));
    expect(be.dnsCheck('10.213.0.2', 'api.test')).toBeUndefined();
    delete (priv as Partial<FakePriv>).egress_apply;
    await be.apply(vm({ id: 'bbbbbbbbbbbb', name: 'b', guestIp: '10.213.0.5', egress: parseEgress('none') }));
    expect(be.dnsCheck('10.213.0.5', 'api.test')?.allow).toBe(false);
    await be.remove({ id: 'bbbbbbbbbbbb' });
    expect(be.dnsCheck('10.213.0.5', 'api.test')).toBeUndefined();
    expect(listed).toBe(1);
    // Reconcile reads the store afresh.
    rows.push(vm({ id: 'cccccccccccc', name: 'c', guestIp: '10.213.0.6', egress: parseEgress('none') }));
    await be.reconcile({ taps: [], egress: [] });
    expect(be.dnsCheck('10.213.0.6', 'x.test')?.allow).toBe(false);
    expect(be.dnsCheck('10.213.0.2', 'api.test')?.allow).toBe(true);
    be.close();
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

  it('reconcile: chains that enforce another policy than the store holds are written again (a vm set killed before its row)', async () => {
    // The store says allow=192.0.2.7:8443 (policy A); the host may enforce B (written by a vm set
    // killed before it wrote the row), A, or A as written before chains carried a hash.
    const a = vm({ egress: parseEgress('allow=192.0.2.7:8443') });
    const hashA = applyParamsHash(applyParams(a, { plan, dnsPort: 5354 }));
    const hashB = applyParamsHash(
      applyParams(vm({ egress: parseEgress('allow=10.0.0.0/8') }), { plan, dnsPort: 5354 }),
    );
    expect(hashB).not.toBe(hashA);
    const tap = 'bgt0123456789ab';
    const run = async (policy_hash?: string): Promise<FakePriv> => {
      const { priv, be } = setup([a]);
      const r = await be.reconcile({
        taps: [{ name: tap, vm_id: '0123456789ab', up: true }],
        egress: [{ tap, ingress: true, guest_ip: '10.213.0.2', ...(policy_hash ? { policy_hash } : {}) }],
      });
      be.close();
      expect(r.removed).toEqual([]);
      return priv;
    };
    const b = await run(hashB);
    expect(b.calls).toEqual([['apply', applyParams(a, { plan, dnsPort: 5354 })]]);
    expect((await run(hashA)).calls).toEqual([]);
    expect((await run(undefined)).calls.map((c) => c[0])).toEqual(['apply']);
    // A changed config (the resolver's port) changes what the chain must say too.
    const { priv, be } = setup([a]);
    await be.reconcile({
      taps: [{ name: tap, vm_id: '0123456789ab', up: true }],
      egress: [{ tap, ingress: true, guest_ip: '10.213.0.2', policy_hash: hashA }],
    });
    expect(priv.calls).toEqual([]);
    const moved = new BridgedEgress({
      priv: () => priv,
      plan,
      dnsPort: 5355,
      vms: () => [a],
      log: createLogger({ name: 't', stream: new MemoryLog() }),
    });
    await moved.reconcile({
      taps: [{ name: tap, vm_id: '0123456789ab', up: true }],
      egress: [{ tap, ingress: true, guest_ip: '10.213.0.2', policy_hash: hashA }],
    });
    expect(priv.calls.map((c) => c[0])).toEqual(['apply']);
    be.close();
    moved.close();
  });

  it('the daemon and the helper hash an apply the same way: one reading of the params, every field in it', () => {
    const p = applyParams(vm(), { plan, dnsPort: 5354 });
    // The helper applies { ...egressSpecFromParams(p), pool } (src/helper/services/priv.ts); the
    // chains carry egressPolicyHash of that spec.
    const spec = egressSpecFromParams(p);
    expect(spec).toEqual({
      tap: 'bgt0123456789ab',
      guestIp: '10.213.0.2',
      bridge: 'br-banger',
      mode: 'allow',
      cidrs: [{ cidr: '10.9.0.0/16' }, { cidr: '192.0.2.7/32', port: 8443 }],
      resolver: { ip: '10.213.0.1', port: 5354 },
      proxy: { ip: '10.213.0.1', port: 3128 },
    });
    const applied: EgressSpec = { ...spec, pool: '10.213.0.0/16' };
    expect(applyParamsHash(p)).toBe(egressPolicyHash(applied));
    // Every field the chains depend on moves the hash (a field the reading dropped would not).
    const variants: Partial<T.PrivEgressApplyParams>[] = [
      { guest_ip: '10.213.0.9' },
      { bridge: 'br-banger-x' },
      { mode: 'none', cidrs: [] },
      { cidrs: [{ cidr: '10.9.0.0/16' }] },
      { cidrs: [{ cidr: '10.9.0.0/16' }, { cidr: '192.0.2.7/32', port: 8444 }] },
      { resolver: { ip: '10.213.0.1', port: 53 } },
      { proxy: { ip: '10.213.0.1', port: 3129 } },
    ];
    const { proxy: _proxy, ...noProxy } = p;
    const hashes = [applyParamsHash(noProxy), ...variants.map((v) => applyParamsHash({ ...p, ...v }))];
    expect(new Set([applyParamsHash(p), ...hashes]).size).toBe(hashes.length + 1);
    // Mode all has no chains: nothing to read.
    expect(() => egressSpecFromParams({ ...p, mode: 'all', cidrs: [] })).toThrow(/no egress chains/);
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

// The fake upstream on an ephemeral port of 127.0.0.1: nothing of the host's own DNS is touched
// (a local resolver may hold port 53 on every address), and no root is needed.
describe('the guest listener under a policy', () => {
  const UPSTREAM = '127.0.0.1';
  const upstream = createSocket('udp4');
  let upstreamPort = 0;
  const order: string[] = [];
  let admitFails = false;
  const server = new DnsServer({
    port: 0,
    lookup: () => undefined,
    log: createLogger({ name: 't', stream: new MemoryLog() }),
    upstream: () => UPSTREAM,
    get upstreamPort() {
      return upstreamPort;
    },
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
    await new Promise<void>((res) => upstream.bind(0, UPSTREAM, res));
    upstreamPort = upstream.address().port;
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
