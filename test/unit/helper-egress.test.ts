// The egress priv.* verbs: the closed vocabulary against hostile inputs, the nftables batches
// they write (pure builders), the kernel-log parser and the event ring.
import { describe, expect, it } from 'vitest';
import {
  allowCommands,
  applyCommands,
  egressPolicyHash,
  egressSpecFromParams,
  NftEgress,
  parseEgressState,
  removeCommands,
  vmChainRules,
  type EgressSpec,
} from '../../src/hostnet/egress.ts';
import { EgressLogRing, parseKmsgRecord } from '../../src/hostnet/egress-log.ts';
import type { Runner } from '../../src/hostnet/exec.ts';
import { applyParamsHash } from '../../src/egress/bridged.ts';
import { RecordingEgress } from '../../src/hostnet/egress-fake.ts';
import { RecordingHostnet } from '../../src/hostnet/index.ts';
import { PrivServiceImpl } from '../../src/helper/services/priv.ts';
import {
  poolContext,
  validateEgressAllow,
  validateEgressApply,
  validateEgressEvents,
  validateEgressRemove,
} from '../../src/helper/validate.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import type { RpcContext } from '../../src/rpc/context.ts';
import { createLogger } from '../../src/log/logger.ts';

const ctx = poolContext('10.213.0.0/16');
const TAP = 'bgt0123456789ab';
const ok = {
  tap: TAP,
  guest_ip: '10.213.0.2',
  bridge: 'br-banger',
  mode: 'allow',
  cidrs: [{ cidr: '192.0.2.0/24', port: 443 }, { cidr: '198.51.100.7/32' }],
  resolver: { ip: '10.213.0.1', port: 5354 },
  proxy: { ip: '10.213.0.1', port: 3128 },
};

function rejects(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ErrorResponse);
    expect((err as ErrorResponse).code).toBe('bad_request');
    return (err as ErrorResponse).message;
  }
  throw new Error('expected bad_request, got success');
}

const JUNK: unknown[] = [
  undefined,
  null,
  '',
  0,
  -1,
  NaN,
  true,
  [],
  {},
  '$(reboot)',
  ';nft flush ruleset',
  'x'.repeat(100_000),
];

describe('validateEgressApply', () => {
  it('accepts well-formed params and returns exactly the checked fields', () => {
    expect(validateEgressApply(structuredClone(ok), ctx)).toEqual(ok);
    const { proxy: _p, ...noProxy } = ok;
    expect(validateEgressApply({ ...noProxy, mode: 'none', cidrs: [] }, ctx)).toEqual({
      ...noProxy,
      mode: 'none',
      cidrs: [],
    });
    expect(validateEgressApply({ ...ok, cidrs: [{ cidr: '0.0.0.0/0' }] }, ctx).cidrs).toEqual([
      { cidr: '0.0.0.0/0' },
    ]);
  });

  const with_ = (patch: Record<string, unknown>): unknown => ({ ...structuredClone(ok), ...patch });
  const cases: [string, unknown][] = [
    ...JUNK.map((j): [string, unknown] => [`params ${String(j).slice(0, 20)}`, j]),
    ...JUNK.map((j): [string, unknown] => [`tap ${String(j).slice(0, 20)}`, with_({ tap: j })]),
    ...['eth0', 'lo', 'br-banger', 'bgt0123456789AB', 'bgt0123456789ab\n', 'bgt"; flush'].map(
      (t): [string, unknown] => [`tap ${t}`, with_({ tap: t })],
    ),
    ...['8.8.8.8', '10.213.0.0', '10.213.255.255', '10.213.0.2/32', '0.0.0.0', '127.0.0.1'].map(
      (g): [string, unknown] => [`guest_ip ${g}`, with_({ guest_ip: g })],
    ),
    ['bridge eth0', with_({ bridge: 'eth0' })],
    ['bridge docker0', with_({ bridge: 'docker0' })],
    ...['ALL', 'deny', '', 'allow ', 1, null].map((m): [string, unknown] => [
      `mode ${String(m)}`,
      with_({ mode: m }),
    ]),
    ['none with cidrs', with_({ mode: 'none' })],
    ['all with cidrs', with_({ mode: 'all' })],
    ['cidrs not an array', with_({ cidrs: '10.0.0.0/8' })],
    ['cidrs object', with_({ cidrs: { cidr: '10.0.0.0/8' } })],
    ['too many cidrs', with_({ cidrs: Array.from({ length: 257 }, () => ({ cidr: '10.0.0.0/8' })) })],
    ...[
      '10.0.0.1/8',
      '10.0.0.0/33',
      '10.0.0.0',
      '10.0.0.0/08',
      '010.0.0.0/8',
      '::/0',
      '10.0.0.0/8 ',
      '10.0.0.0/8;',
      '10.0.0.0/8\n',
      'example.com',
      '*.example.com',
      '10.0.0.0/-1',
      42,
    ].map((c): [string, unknown] => [`cidr ${String(c)}`, with_({ cidrs: [{ cidr: c }] })]),
    ['cidr with a junk field', with_({ cidrs: [{ cidr: '10.0.0.0/8', action: 'accept' }] })],
    ['cidr port 0', with_({ cidrs: [{ cidr: '10.0.0.0/8', port: 0 }] })],
    ['cidr port 65536', with_({ cidrs: [{ cidr: '10.0.0.0/8', port: 65536 }] })],
    ['cidr port string', with_({ cidrs: [{ cidr: '10.0.0.0/8', port: '443' }] })],
    ['cidr port range', with_({ cidrs: [{ cidr: '10.0.0.0/8', port: '1-65535' }] })],
    ['resolver outside the pool (8.8.8.8)', with_({ resolver: { ip: '8.8.8.8', port: 53 } })],
    ['resolver missing port', with_({ resolver: { ip: '10.213.0.1' } })],
    ['resolver extra field', with_({ resolver: { ip: '10.213.0.1', port: 53, proto: 'any' } })],
    ['resolver is the guest', with_({ resolver: { ip: '10.213.0.2', port: 53 } })],
    ['resolver a string', with_({ resolver: '10.213.0.1:53' })],
    ['proxy outside the pool', with_({ proxy: { ip: '1.1.1.1', port: 3128 } })],
    ['proxy port 0', with_({ proxy: { ip: '10.213.0.1', port: 0 } })],
    [
      'missing resolver',
      (() => {
        const { resolver: _r, ...rest } = structuredClone(ok);
        return rest;
      })(),
    ],
    ['extra field', with_({ table: 'filter' })],
    ['__proto__', JSON.parse(`{"__proto__":{"x":1},${JSON.stringify(ok).slice(1)}`)],
  ];
  it.each(cases)('refuses %s', (_name, params) => {
    rejects(() => validateEgressApply(params, ctx));
  });
});

describe('validateEgressAllow / Remove / Events', () => {
  it('accepts well-formed params', () => {
    const p = {
      tap: TAP,
      entries: [
        { ip: '192.0.2.1', ttl_s: 0 },
        { ip: '192.0.2.2', port: 443, ttl_s: 300 },
      ],
    };
    expect(validateEgressAllow(structuredClone(p))).toEqual(p);
    expect(validateEgressRemove({ tap: TAP })).toEqual({ tap: TAP });
    expect(validateEgressEvents({ cursor: 0 })).toEqual({ cursor: 0 });
  });
  const e = (entry: unknown): unknown => ({ tap: TAP, entries: [entry] });
  const cases: [string, () => unknown][] = [
    ...JUNK.map((j): [string, () => unknown] => [
      `allow params ${String(j).slice(0, 20)}`,
      () => validateEgressAllow(j),
    ]),
    ['allow: no entries', () => validateEgressAllow({ tap: TAP, entries: [] })],
    [
      'allow: 65 entries',
      () =>
        validateEgressAllow({
          tap: TAP,
          entries: Array.from({ length: 65 }, () => ({ ip: '1.2.3.4', ttl_s: 1 })),
        }),
    ],
    ['allow: eth0', () => validateEgressAllow({ tap: 'eth0', entries: [{ ip: '1.2.3.4', ttl_s: 1 }] })],
    ...['1.2.3', '1.2.3.4/32', '::1', '01.2.3.4', '1.2.3.4 ', 'localhost', 7].map(
      (ip): [string, () => unknown] => [
        `allow: ip ${String(ip)}`,
        () => validateEgressAllow(e({ ip, ttl_s: 30 })),
      ],
    ),
    ...[-1, 1.5, '30', 2 ** 32, NaN, Infinity, null].map((t): [string, () => unknown] => [
      `allow: ttl ${String(t)}`,
      () => validateEgressAllow(e({ ip: '1.2.3.4', ttl_s: t })),
    ]),
    ['allow: port 0', () => validateEgressAllow(e({ ip: '1.2.3.4', ttl_s: 1, port: 0 }))],
    ['allow: extra', () => validateEgressAllow(e({ ip: '1.2.3.4', ttl_s: 1, set: 'other' }))],
    ['allow: missing ttl', () => validateEgressAllow(e({ ip: '1.2.3.4' }))],
    ...JUNK.map((j): [string, () => unknown] => [
      `remove: tap ${String(j).slice(0, 20)}`,
      () => validateEgressRemove({ tap: j }),
    ]),
    ['remove: lo', () => validateEgressRemove({ tap: 'lo' })],
    ['remove: extra', () => validateEgressRemove({ tap: TAP, all: true })],
    ...[-1, 1.5, '0', 2 ** 60, null, NaN].map((c): [string, () => unknown] => [
      `events: cursor ${String(c)}`,
      () => validateEgressEvents({ cursor: c }),
    ]),
    ['events: extra', () => validateEgressEvents({ cursor: 0, tap: TAP })],
  ];
  it.each(cases)('refuses %s', (_name, fn) => {
    rejects(fn);
  });
});

const spec: EgressSpec = {
  tap: TAP,
  guestIp: '10.213.0.2',
  bridge: 'br-banger',
  mode: 'allow',
  cidrs: [{ cidr: '192.0.2.0/24', port: 443 }, { cidr: '198.51.100.7/32' }],
  resolver: { ip: '10.213.0.1', port: 5354 },
  proxy: { ip: '10.213.0.1', port: 3128 },
  pool: '10.213.0.0/16',
};

describe('nftables batches', () => {
  it('apply: base tables and chains, the tap chain ends in log + reject, dispatch from forward and input', () => {
    const cmds = applyCommands(spec, {
      chains: new Set(),
      ingress: new Set(),
      sets: new Set(),
      dispatch: [],
    });
    const text = JSON.stringify(cmds);
    expect(text).toContain('"hook":"forward"');
    expect(text).toContain('"hook":"input"');
    expect(text).toContain(`"dev":"${TAP}"`);
    expect(text).toContain('"hook":"ingress"');
    const rules = vmChainRules(spec);
    const last = JSON.stringify(rules.slice(-3));
    expect(last).toContain('"log"');
    expect(last).toContain('"tcp reset"');
    expect(last).toContain('admin-prohibited');
    // The DNS reject comes before the first CIDR accept.
    const dnsAt = rules.findIndex((r) => JSON.stringify(r).includes('[53,853]'));
    const cidrAt = rules.findIndex((r) => JSON.stringify(r).includes('192.0.2.0'));
    expect(dnsAt).toBeGreaterThan(0);
    expect(cidrAt).toBeGreaterThan(dnsAt);
    const dispatch = cmds.filter((c) => JSON.stringify(c).includes('"jump"'));
    expect(dispatch).toHaveLength(2);
  });

  it('mode none: no CIDR and no set accept', () => {
    const text = JSON.stringify(vmChainRules({ ...spec, mode: 'none', cidrs: [] }));
    expect(text).not.toContain('@dom_');
    expect(text).toContain('10.213.0.1');
  });

  it("apply replaces what the tap had; remove deletes exactly the tap's objects", () => {
    const st = parseEgressState({
      nftables: [
        { chain: { family: 'inet', table: 'banger_egress', name: `vm_${TAP}` } },
        { chain: { family: 'inet', table: 'banger_egress', name: 'vm_bgtffffffffffff' } },
        { chain: { family: 'netdev', table: 'banger_egress', name: `in_${TAP}` } },
        { set: { family: 'inet', table: 'banger_egress', name: `dom_${TAP}` } },
        {
          rule: {
            family: 'inet',
            table: 'banger_egress',
            chain: 'forward',
            handle: 7,
            comment: `banger egress ${TAP}`,
            expr: [
              {
                match: {
                  op: '==',
                  left: { payload: { protocol: 'ip', field: 'saddr' } },
                  right: '10.213.0.2',
                },
              },
            ],
          },
        },
        {
          rule: {
            family: 'inet',
            table: 'other',
            chain: 'forward',
            handle: 8,
            comment: `banger egress ${TAP}`,
          },
        },
        {
          rule: {
            family: 'inet',
            table: 'banger_egress',
            chain: 'forward',
            handle: 9,
            comment: 'banger egress eth0',
          },
        },
      ],
    });
    expect(st.dispatch).toEqual([{ tap: TAP, chain: 'forward', handle: 7, guestIp: '10.213.0.2' }]);
    const rm = JSON.stringify(removeCommands(TAP, st));
    expect(rm).toContain('"handle":7');
    expect(rm).not.toContain('"handle":8');
    expect(rm).not.toContain('ffffffffffff');
    expect(rm).toContain(`in_${TAP}`);
    expect(rm).toContain(`dom_${TAP}`);
    expect(rm).not.toContain(`domp_${TAP}`); // not present: deleting it would fail the batch
  });

  it("the dispatch rules' comment carries the policy hash; it changes with everything an apply writes", () => {
    const cmds = applyCommands(spec, {
      chains: new Set(),
      ingress: new Set(),
      sets: new Set(),
      dispatch: [],
    });
    const comments = cmds.flatMap((c) => {
      const r = (c as { add?: { rule?: { comment?: string } } }).add?.rule;
      return r?.comment ? [r.comment] : [];
    });
    const h = egressPolicyHash(spec);
    expect(h).toMatch(/^[0-9a-f]{16}$/);
    expect(comments).toEqual([`banger egress ${TAP} ${h}`, `banger egress ${TAP} ${h}`]);
    // The helper's pool and the tap are not part of it (the daemon knows neither in its params).
    const elsewhere: EgressSpec = { ...spec, pool: '10.0.0.0/8', tap: 'bgtffffffffffff' };
    expect(egressPolicyHash(elsewhere)).toBe(h);
    const variants: Partial<EgressSpec>[] = [
      { guestIp: '10.213.0.3' },
      { bridge: 'br-banger2' },
      { mode: 'none', cidrs: [] },
      { cidrs: [{ cidr: '192.0.2.0/24' }, { cidr: '198.51.100.7/32' }] },
      { cidrs: [{ cidr: '192.0.2.0/24', port: 444 }, { cidr: '198.51.100.7/32' }] },
      { cidrs: [{ cidr: '192.0.2.0/24', port: 443 }] },
      { resolver: { ip: '10.213.0.1', port: 53 } },
      { proxy: { ip: '10.213.0.1', port: 3129 } },
      { proxy: undefined },
    ];
    const hashes = variants.map((v) => egressPolicyHash({ ...spec, ...v }));
    expect(new Set([h, ...hashes]).size).toBe(variants.length + 1);
  });

  it.each([
    ['no hash (chains written before hashes)', `banger egress ${TAP}`, undefined],
    ['a hash', `banger egress ${TAP} 0123456789abcdef`, '0123456789abcdef'],
    ['upper case', `banger egress ${TAP} 0123456789ABCDEF`, undefined],
    ['too short', `banger egress ${TAP} 0123456789abcde`, undefined],
    ['too long', `banger egress ${TAP} 0123456789abcdef0`, undefined],
    ['trailing words', `banger egress ${TAP} 0123456789abcdef extra`, undefined],
    ['two spaces', `banger egress ${TAP}  0123456789abcdef`, undefined],
    ['not hex', `banger egress ${TAP} 0123456789abcdeg`, undefined],
    ['a quote', `banger egress ${TAP} "0123456789abcdef"`, undefined],
  ])('a dispatch comment with %s parses to its tap and hash', (_what, comment, hash) => {
    const st = parseEgressState({
      nftables: [{ rule: { family: 'inet', table: 'banger_egress', chain: 'forward', handle: 3, comment } }],
    });
    expect(st.dispatch).toEqual([
      { tap: TAP, chain: 'forward', handle: 3, ...(hash ? { policyHash: hash } : {}) },
    ]);
  });

  it.each([
    ['not a banger tap', 'banger egress eth0 0123456789abcdef'],
    ['no tap', 'banger egress  0123456789abcdef'],
    ['another prefix', `banger nat ${TAP} 0123456789abcdef`],
  ])('a dispatch comment with %s is not banger egress', (_what, comment) => {
    const st = parseEgressState({
      nftables: [{ rule: { family: 'inet', table: 'banger_egress', chain: 'forward', handle: 3, comment } }],
    });
    expect(st.dispatch).toEqual([]);
  });

  it('list: a hash only when every dispatch rule of the tap carries the same one', async () => {
    const ruleOf = (handle: number, comment: string): unknown => ({
      rule: {
        family: 'inet',
        table: 'banger_egress',
        chain: handle % 2 ? 'forward' : 'input',
        handle,
        comment,
      },
    });
    const listing =
      (rules: unknown[]): Runner =>
      async (_cmd, args) =>
        args.includes('tables')
          ? JSON.stringify({ nftables: [{ table: { family: 'inet', name: 'banger_egress' } }] })
          : JSON.stringify({
              nftables: [{ chain: { family: 'inet', table: 'banger_egress', name: `vm_${TAP}` } }, ...rules],
            });
    const a = '0123456789abcdef';
    const b = 'fedcba9876543210';
    const same = new NftEgress({
      runner: listing([ruleOf(1, `banger egress ${TAP} ${a}`), ruleOf(2, `banger egress ${TAP} ${a}`)]),
    });
    expect(await same.list()).toEqual([{ tap: TAP, ingress: false, policyHash: a }]);
    const mixed = new NftEgress({
      runner: listing([ruleOf(1, `banger egress ${TAP} ${a}`), ruleOf(2, `banger egress ${TAP} ${b}`)]),
    });
    expect(await mixed.list()).toEqual([{ tap: TAP, ingress: false }]);
    const half = new NftEgress({
      runner: listing([ruleOf(1, `banger egress ${TAP} ${a}`), ruleOf(2, `banger egress ${TAP}`)]),
    });
    expect(await half.list()).toEqual([{ tap: TAP, ingress: false }]);
  });

  it('allow: add-delete-add per entry, ttl clamped to at least 30 s', () => {
    const cmds = allowCommands(TAP, [
      { ip: '192.0.2.9', ttlS: 5 },
      { ip: '192.0.2.10', port: 443, ttlS: 600 },
    ]);
    expect(cmds).toHaveLength(6);
    expect(JSON.stringify(cmds[0])).toContain('"timeout":30');
    expect(JSON.stringify(cmds[3])).toContain(`domp_${TAP}`);
    expect(JSON.stringify(cmds[5])).toContain('"timeout":600');
  });
});

describe('kernel log', () => {
  it('parses a netfilter log record of a denial', () => {
    const rec = `4,1234,5678901,-;banger-egress ${TAP} IN=br-banger OUT=eth0 MAC=aa:bb SRC=10.213.0.2 DST=192.0.2.77 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=1 DF PROTO=TCP SPT=40000 DPT=8443 WINDOW=64240 RES=0x00 SYN URGP=0 \n`;
    expect(parseKmsgRecord(rec)).toEqual({
      tap: TAP,
      src: '10.213.0.2',
      dst: '192.0.2.77',
      proto: 'tcp',
      sport: 40000,
      dport: 8443,
    });
    expect(
      parseKmsgRecord(
        `6,1,2,-;banger-egress ${TAP} IN=br-banger SRC=10.213.0.2 DST=10.213.0.1 PROTO=ICMP TYPE=8`,
      ),
    ).toEqual({
      tap: TAP,
      src: '10.213.0.2',
      dst: '10.213.0.1',
      proto: 'icmp',
    });
  });
  it.each([
    '4,1,2,-;something else SRC=1.2.3.4 DST=5.6.7.8',
    '4,1,2,-;banger-egress eth0 SRC=1.2.3.4 DST=5.6.7.8',
    `4,1,2,-;banger-egress ${TAP} no addresses`,
    'garbage',
  ])('ignores %j', (rec) => {
    expect(parseKmsgRecord(rec)).toBeUndefined();
  });

  it('the ring hands out events after a cursor and says when some were lost', () => {
    const ring = new EgressLogRing(3);
    const ev = { tap: TAP, src: '10.213.0.2', dst: '1.2.3.4', proto: 'udp' };
    ring.push(ev);
    ring.push(ev);
    const a = ring.since(0);
    expect(a.events.map((e) => e.seq)).toEqual([1, 2]);
    expect(a.cursor).toBe(2);
    expect(ring.since(a.cursor)).toEqual({ events: [], cursor: 2, dropped: false });
    for (let i = 0; i < 5; i++) ring.push(ev);
    const b = ring.since(a.cursor);
    expect(b.events.map((e) => e.seq)).toEqual([5, 6, 7]);
    expect(b.dropped).toBe(true);
    // A cursor from an earlier helper (beyond ours) starts over.
    expect(ring.since(1000).events.map((e) => e.seq)).toEqual([5, 6, 7]);
  });
});

describe('priv.egress_* service', () => {
  const fake = new RecordingHostnet();
  const egress = new RecordingEgress();
  const ring = new EgressLogRing();
  const svc = new PrivServiceImpl({
    links: fake,
    nat: fake,
    resolver: fake,
    egress,
    egressLog: ring,
    ownerUid: 1000,
    vocabulary: ctx,
  });
  const rctx = { log: createLogger({ name: 't', level: 'silent' }) } as unknown as RpcContext;

  it('apply, allow, list, mode all removes, events', async () => {
    const r = await svc.egressApply(structuredClone(ok) as never, rctx);
    expect(r).toEqual({ tap: TAP, mode: 'allow', created: true, rules: 12 });
    // The helper's reading of the params is the daemon's (applyParamsHash hashes the same spec).
    expect(egress.chains.get(TAP)).toEqual({ ...egressSpecFromParams(ok), pool: '10.213.0.0/16' });
    await svc.egressAllow({ tap: TAP, entries: [{ ip: '192.0.2.50', ttl_s: 5 }] }, rctx);
    expect(egress.sets.get(TAP)?.get('192.0.2.50')).toBe(30);
    expect((await svc.listOwned(rctx)).egress).toEqual([
      { tap: TAP, guest_ip: '10.213.0.2', ingress: true, policy_hash: applyParamsHash(ok as never) },
    ]);
    expect(await svc.egressApply({ ...structuredClone(ok), mode: 'all', cidrs: [] } as never, rctx)).toEqual({
      tap: TAP,
      mode: 'all',
      created: false,
      rules: 0,
    });
    expect(egress.chains.has(TAP)).toBe(false);
    ring.push({ tap: TAP, src: '10.213.0.2', dst: '9.9.9.9', proto: 'udp', dport: 53 });
    const ev = await svc.egressEvents({ cursor: 0 }, rctx);
    expect(ev.events).toHaveLength(1);
    expect(ev.events[0]).toMatchObject({ dst: '9.9.9.9', dport: 53 });
  });

  it('a hostile apply reaches nothing', async () => {
    const before = egress.transcript.length;
    await expect(svc.egressApply({ ...structuredClone(ok), tap: 'eth0' } as never, rctx)).rejects.toThrow(
      /not banger's/,
    );
    expect(egress.transcript.length).toBe(before);
  });
});
