// User-mode egress: the netdev a policy gives (restrict=on, guestfwd to the proxy through the relay),
// its validation, the events ring, and what vm set --egress can change on a running VMM.
import { describe, expect, it } from 'vitest';
import { buildQemuArgv } from '../../src/engine/qemu-argv.ts';
import type { VmLaunchSpec } from '../../src/engine/index.ts';
import {
  EgressEvents,
  EGRESS_LOG_BURST,
  EGRESS_RING_SIZE,
  type EgressEvent,
} from '../../src/egress/events.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import { applyEgressChange, userNetdevOf } from '../../src/egress/set.ts';
import { userNetEgress, userProxySocket, type EgressHooks } from '../../src/egress/types.ts';
import { relayBinaryPath } from '../../src/egress/relay.ts';
import { guestCmdline } from '../../src/vm/machine.ts';
import type { VmRow } from '../../src/store/index.ts';
import { createLogger } from '../../src/log/logger.ts';
import { MemoryLog } from '../helpers/logs.ts';

function memLog(): { mem: MemoryLog; logger: ReturnType<typeof createLogger> } {
  const mem = new MemoryLog();
  return { mem, logger: createLogger({ name: 'test', stream: mem, level: 'info' }) };
}

const base: VmLaunchSpec = {
  id: 'a1b2c3d4e5f6',
  vmDir: '/state/vms/a1b2c3d4e5f6',
  kernel: '/k/vmlinux',
  cmdline: 'root=/dev/vda',
  vcpus: 1,
  memoryMiB: 256,
  disks: [{ path: '/state/vms/a1b2c3d4e5f6/overlay.qcow2', format: 'qcow2' }],
  net: { mode: 'user', sshHostPort: 42022 },
  serialLog: '/state/vms/a1b2c3d4e5f6/serial.log',
  accel: 'kvm',
};

function netdev(spec: VmLaunchSpec): string {
  const argv = buildQemuArgv(spec);
  return argv[argv.indexOf('-netdev') + 1] ?? '';
}

function row(over: Partial<VmRow>): VmRow {
  return {
    id: 'a1b2c3d4e5f6',
    name: 'calm-otter',
    networkMode: 'user',
    egress: parseEgress('all'),
    secrets: [],
    egressOpId: 'op-0123456789ab',
    ...over,
  } as VmRow;
}

describe('user-mode netdev for a policy', () => {
  it('all without secrets: the plain netdev', () => {
    expect(userNetEgress(row({}), '/state')).toEqual({});
  });
  it('a restricted policy: restrict=on and a guestfwd to the VM’s proxy socket through the relay', () => {
    const e = userNetEgress(row({ egress: parseEgress('none') }), '/state');
    const relay = relayBinaryPath();
    expect(relay).toMatch(/^\/.*\/build\/egress-relay$/);
    expect(e).toEqual({
      restrict: true,
      guestfwd: {
        ip: '10.0.2.100',
        port: 3128,
        unixSocket: '/state/egress/px/a1b2c3d4e5f6.sock',
        relay,
      },
    });
    expect(netdev({ ...base, net: { ...base.net, ...e } as VmLaunchSpec['net'] })).toBe(
      `user,id=net0,hostfwd=tcp:127.0.0.1:42022-:22,restrict=on,guestfwd=tcp:10.0.2.100:3128-cmd:${relay} /state/egress/px/a1b2c3d4e5f6.sock`,
    );
    // Without a relay (the engine on its own): socat, as before.
    const { relay: _r, ...viaSocat } = e.guestfwd!;
    expect(netdev({ ...base, net: { ...base.net, guestfwd: viaSocat } as VmLaunchSpec['net'] })).toContain(
      '-cmd:/usr/bin/socat -b 65536 STDIO UNIX-CONNECT:/state/egress/px/a1b2c3d4e5f6.sock',
    );
    // none and allow share the netdev, so changing between them needs no restart.
    expect(userNetEgress(row({ egress: parseEgress('allow=a.test') }), '/state')).toEqual(e);
  });
  it('secrets under all: the guestfwd without restrict', () => {
    const e = userNetEgress(row({ secrets: [{ name: 'K', hosts: ['api.test'] }] }), '/state');
    expect(e.restrict).toBeUndefined();
    expect(e.guestfwd?.unixSocket).toBe(userProxySocket('/state', 'a1b2c3d4e5f6'));
  });
  it('bridged VMs get nothing here (nftables enforces theirs)', () => {
    expect(userNetEgress(row({ networkMode: 'bridge', egress: parseEgress('none') }), '/state')).toEqual({});
  });
  it.each([
    '/state/egress/px/a b.sock',
    '/state/egress/px/a,b.sock',
    "/state/egress/px/a'b.sock",
    '/state/egress/px/a:b.sock',
    'relative/a.sock',
    `/${'x'.repeat(120)}.sock`,
  ])('refuses a guestfwd socket path QEMU or socat would read differently: %j', (unixSocket) => {
    const net = {
      ...base.net,
      guestfwd: { ip: '10.0.2.100', port: 3128, unixSocket },
    } as VmLaunchSpec['net'];
    expect(() => buildQemuArgv({ ...base, net })).toThrow(/guestfwd/);
  });
  it.each(['relative/egress-relay', '/opt/my relay', '/opt/a,b', "/opt/a'b", '/opt/a;rm'])(
    'refuses a relay path QEMU would split or read differently: %j',
    (relay) => {
      const net = {
        ...base.net,
        guestfwd: { ip: '10.0.2.100', port: 3128, unixSocket: '/s/a.sock', relay },
      } as VmLaunchSpec['net'];
      expect(() => buildQemuArgv({ ...base, net })).toThrow(/guestfwd\.relay/);
    },
  );
  it('refuses a bad guestfwd address or port', () => {
    const g = { ip: '10.0.2.300', port: 3128, unixSocket: '/s/a.sock' };
    expect(() =>
      buildQemuArgv({ ...base, net: { ...base.net, guestfwd: g } as VmLaunchSpec['net'] }),
    ).toThrow();
    const p = { ip: '10.0.2.100', port: 0, unixSocket: '/s/a.sock' };
    expect(() =>
      buildQemuArgv({ ...base, net: { ...base.net, guestfwd: p } as VmLaunchSpec['net'] }),
    ).toThrow();
  });
  it('a restricted guest boots without a default route (direct connections fail at once)', () => {
    expect(guestCmdline({ name: 'x', networkMode: 'user', egress: parseEgress('none') })).toContain(
      'ip=10.0.2.15:::255.255.255.0:x:eth0:off:10.0.2.3',
    );
    expect(guestCmdline({ name: 'x', networkMode: 'user', egress: parseEgress('all') })).toContain(
      'ip=10.0.2.15::10.0.2.2:255.255.255.0:x:eth0:off:10.0.2.3',
    );
  });
});

describe('userNetdevOf', () => {
  it('reads restrict and guestfwd from a running QEMU argv', () => {
    expect(
      userNetdevOf(['qemu', '-netdev', 'user,id=net0,restrict=on,guestfwd=tcp:1.2.3.4:1-cmd:x']),
    ).toEqual({
      restricted: true,
      proxied: true,
    });
    expect(userNetdevOf(['qemu', '-netdev', 'user,id=net0,hostfwd=tcp:127.0.0.1:1-:22'])).toEqual({
      restricted: false,
      proxied: false,
    });
    expect(userNetdevOf(['qemu', '-netdev', 'tap,id=net0'])).toBeUndefined();
  });
});

describe('applyEgressChange (vm set --egress)', () => {
  const calls: string[] = [];
  const hooks = {
    events: new EgressEvents({ log: memLog().logger }),
    attach: (vm: VmRow) => calls.push(`attach ${vm.egress.mode}`),
    update: (vm: VmRow) => calls.push(`update ${vm.egress.mode}`),
    detach: (id: string) => calls.push(`detach ${id}`),
  } satisfies EgressHooks;
  const deps = (netdevOpts: string | undefined) => ({
    vmmPid: () => (netdevOpts === undefined ? undefined : 4242),
    applyBridged: async (vm: VmRow) => void calls.push(`bridged ${vm.egress.mode}`),
    egress: hooks,
    readCmdline: async () => ['qemu', '-netdev', netdevOpts ?? ''],
  });
  const restricted = 'user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:3128-cmd:x';

  it('a stopped VM: next start', async () => {
    const r = await applyEgressChange(deps(undefined), row({}), row({ egress: parseEgress('none') }));
    expect(r.applied).toBe('next_start');
  });
  it('user mode between restricted policies: live, the proxy gets the new policy', async () => {
    calls.length = 0;
    const r = await applyEgressChange(
      deps(restricted),
      row({ egress: parseEgress('none') }),
      row({ egress: parseEgress('allow=a.test') }),
    );
    expect(r).toEqual({ applied: 'live' });
    expect(calls).toEqual(['update allow']);
  });
  it('user mode from all to restricted: next start, said why; nothing changes now', async () => {
    calls.length = 0;
    const r = await applyEgressChange(deps('user,id=net0'), row({}), row({ egress: parseEgress('none') }));
    expect(r.applied).toBe('next_start');
    expect(r.note).toMatch(/egress all.*next start.*vm restart calm-otter/);
    expect(calls).toEqual([]);
  });
  it('what the VMM runs with decides, not the stored policy (an earlier set may not have applied)', async () => {
    const r = await applyEgressChange(
      deps('user,id=net0'),
      row({ egress: parseEgress('none') }),
      row({ egress: parseEgress('allow=a.test') }),
    );
    expect(r.applied).toBe('next_start');
  });
  it('bridged: live through the host chains, and the proxy learns of the VM', async () => {
    calls.length = 0;
    const r = await applyEgressChange(
      deps('tap,id=net0'),
      row({ networkMode: 'bridge' }),
      row({ networkMode: 'bridge', egress: parseEgress('allow=a.test') }),
    );
    expect(r.applied).toBe('live');
    expect(calls).toEqual(['bridged allow', 'attach allow']);
  });
});

describe('EgressEvents', () => {
  const ev = (i: number, verdict: 'allow' | 'deny' = 'deny'): EgressEvent => ({
    time: new Date(1_700_000_000_000 + i).toISOString(),
    vm: 'calm-otter',
    verdict,
    proto: 'http',
    host: `h${i}.test`,
    port: 443,
    reason: 'no rule allows it',
  });
  it('keeps the last 1000 per VM, oldest first, and stamps the stored op id', () => {
    const { logger } = memLog();
    const e = new EgressEvents({ log: logger, opIdOf: () => 'op-abcdef012345' });
    for (let i = 0; i < EGRESS_RING_SIZE + 5; i++) e.recordEgress(ev(i));
    const all = e.recent('calm-otter', 1000);
    expect(all).toHaveLength(EGRESS_RING_SIZE);
    expect(all[0]?.host).toBe('h5.test');
    expect(all.at(-1)?.host).toBe(`h${EGRESS_RING_SIZE + 4}.test`);
    expect(e.recent('calm-otter', 2).map((x) => x.host)).toEqual([
      `h${EGRESS_RING_SIZE + 3}.test`,
      `h${EGRESS_RING_SIZE + 4}.test`,
    ]);
    expect(all[0]?.op_id).toBe('op-abcdef012345');
    expect(e.recent('other')).toEqual([]);
  });
  it('writes one log line per event with the VM, destination, rule and op id, bounded per window', () => {
    const { mem: log, logger } = memLog();
    let now = 0;
    const e = new EgressEvents({ log: logger, opIdOf: () => 'op-abcdef012345', now: () => now });
    e.recordEgress({ ...ev(1, 'allow'), rule: 'h1.test' });
    for (let i = 0; i < EGRESS_LOG_BURST + 50; i++) e.recordEgress(ev(i));
    const lines = log.records();
    const first = lines[0] as Record<string, unknown>;
    expect(first.msg).toBe('egress allow');
    expect(first).toMatchObject({
      vm: 'calm-otter',
      dest: 'h1.test:443',
      rule: 'h1.test',
      op_id: 'op-abcdef012345',
    });
    expect(lines.filter((l) => (l as { msg?: string }).msg === 'egress deny')).toHaveLength(
      EGRESS_LOG_BURST - 1,
    );
    now = 60_000;
    e.recordEgress(ev(9999));
    expect(
      log.records().some((l) => (l as { msg?: string }).msg?.startsWith('egress: log lines suppressed')),
    ).toBe(true);
  });
  it('watchers see new events until they stop watching; forget empties the ring', () => {
    const e = new EgressEvents({ log: memLog().logger });
    const seen: string[] = [];
    const stop = e.watch('calm-otter', (x) => seen.push(x.host ?? ''));
    e.recordEgress(ev(1));
    stop();
    e.recordEgress(ev(2));
    expect(seen).toEqual(['h1.test']);
    e.forget('calm-otter');
    expect(e.recent('calm-otter')).toEqual([]);
  });
});

describe('[vm_defaults] egress', () => {
  it('defaults to all, takes a policy, refuses a bad one naming the key', async () => {
    const { parseConfig, DEFAULT_CONFIG } = await import('../../src/daemon/config.ts');
    expect(DEFAULT_CONFIG.vm_defaults.egress).toBe('all');
    expect(parseConfig('[vm_defaults]\negress = "allow=a.test:443"\n', 'c.toml').vm_defaults.egress).toBe(
      'allow=a.test:443',
    );
    expect(() => parseConfig('[vm_defaults]\negress = "allow=*.*.com"\n', 'c.toml')).toThrow(
      /c\.toml: vm_defaults\.egress: .*label/,
    );
  });
});
