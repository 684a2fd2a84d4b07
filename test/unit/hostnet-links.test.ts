// IpLinks against a scripted `ip`: the argv it runs for each state, and the parsers of `ip -json`.
import { describe, expect, it } from 'vitest';
import {
  HostnetError,
  IpLinks,
  parseAddrs,
  parseLinks,
  parseTunOwners,
  tapNameFor,
  vmIdOfTap,
  type Runner,
} from '../../src/hostnet/index.ts';

interface World {
  links: Record<string, unknown>[];
  addrs: Record<string, unknown>[];
  tuntap: Record<string, unknown>[];
}

/** A fake `ip` that answers the three JSON reads from `world` and records every other argv. */
function scripted(world: World): { runner: Runner; calls: string[] } {
  const calls: string[] = [];
  const runner: Runner = async (file, args) => {
    expect(file).toBe('/usr/sbin/ip');
    const a = args.join(' ');
    if (a === '-json -d link show') return JSON.stringify(world.links);
    if (a.startsWith('-json addr show'))
      return JSON.stringify(
        args[3] === 'dev' ? world.addrs.filter((x) => x.ifname === args[4]) : world.addrs,
      );
    if (a === '-json tuntap show') return JSON.stringify(world.tuntap);
    calls.push(a);
    return '';
  };
  return { runner, calls };
}

const bridge = (name: string, up = true): Record<string, unknown> => ({
  ifname: name,
  flags: up ? ['BROADCAST', 'UP'] : ['BROADCAST'],
  linkinfo: { info_kind: 'bridge' },
});
const tap = (name: string, master?: string, up = true): Record<string, unknown> => ({
  ifname: name,
  flags: up ? ['UP'] : [],
  ...(master ? { master } : {}),
  linkinfo: { info_kind: 'tun', info_data: { type: 'tap', user: 'someone' } },
});
const addr = (name: string, ...cidrs: string[]): Record<string, unknown> => ({
  ifname: name,
  addr_info: cidrs.map((c) => ({
    family: 'inet',
    local: c.split('/')[0],
    prefixlen: Number(c.split('/')[1]),
  })),
});

describe('IpLinks.ensureBridge', () => {
  it('creates, addresses and raises a missing bridge', async () => {
    const { runner, calls } = scripted({ links: [], addrs: [], tuntap: [] });
    const r = await new IpLinks({ runner }).ensureBridge('br-banger', '10.213.0.1/24');
    expect(r).toEqual({ created: true, changed: true });
    expect(calls).toEqual([
      'link add name br-banger type bridge',
      'addr add 10.213.0.1/24 dev br-banger',
      'link set dev br-banger up',
    ]);
  });

  it('does nothing when the bridge is already right', async () => {
    const { runner, calls } = scripted({
      links: [bridge('br-banger')],
      addrs: [addr('br-banger', '10.213.0.1/24')],
      tuntap: [],
    });
    expect(await new IpLinks({ runner }).ensureBridge('br-banger', '10.213.0.1/24')).toEqual({
      created: false,
      changed: false,
    });
    expect(calls).toEqual([]);
  });

  it('replaces an address it no longer wants and raises a downed bridge', async () => {
    const { runner, calls } = scripted({
      links: [bridge('br-banger', false)],
      addrs: [addr('br-banger', '10.213.9.1/24')],
      tuntap: [],
    });
    await new IpLinks({ runner }).ensureBridge('br-banger', '10.213.0.1/24');
    expect(calls).toEqual([
      'addr del 10.213.9.1/24 dev br-banger',
      'addr add 10.213.0.1/24 dev br-banger',
      'link set dev br-banger up',
    ]);
  });

  it('refuses to take over a non-bridge link of that name, and foreign names', async () => {
    const { runner, calls } = scripted({
      links: [{ ifname: 'br-banger', flags: [], linkinfo: { info_kind: 'veth' } }],
      addrs: [],
      tuntap: [],
    });
    await expect(new IpLinks({ runner }).ensureBridge('br-banger', '10.213.0.1/24')).rejects.toThrow(
      /is a veth link, not a bridge/,
    );
    await expect(new IpLinks({ runner }).ensureBridge('eth0', '10.213.0.1/24')).rejects.toBeInstanceOf(
      HostnetError,
    );
    expect(calls).toEqual([]);
  });
});

describe('IpLinks taps', () => {
  const t = tapNameFor('0123456789ab');

  it('creates a persistent tap owned by the uid, on the bridge, up', async () => {
    const { runner, calls } = scripted({ links: [bridge('br-banger')], addrs: [], tuntap: [] });
    expect(await new IpLinks({ runner }).createTap(t, 'br-banger', 1000)).toEqual({ created: true });
    expect(calls).toEqual([
      `tuntap add dev ${t} mode tap user 1000`,
      `link set dev ${t} master br-banger`,
      `link set dev ${t} up`,
    ]);
  });

  it('is a no-op for a correct tap and recreates one with the wrong owner', async () => {
    const world: World = {
      links: [bridge('br-banger'), tap(t, 'br-banger')],
      addrs: [],
      tuntap: [{ ifname: t, flags: ['tap', 'persist'], user: 1000 }],
    };
    const a = scripted(world);
    expect(await new IpLinks({ runner: a.runner }).createTap(t, 'br-banger', 1000)).toEqual({
      created: false,
    });
    expect(a.calls).toEqual([]);
    const b = scripted(world);
    expect(await new IpLinks({ runner: b.runner }).createTap(t, 'br-banger', 1001)).toEqual({
      created: true,
    });
    expect(b.calls[0]).toBe(`link del dev ${t}`);
    expect(b.calls[1]).toBe(`tuntap add dev ${t} mode tap user 1001`);
  });

  it('needs the bridge to exist', async () => {
    const { runner } = scripted({ links: [], addrs: [], tuntap: [] });
    await expect(new IpLinks({ runner }).createTap(t, 'br-banger', 1000)).rejects.toThrow(
      /bridge br-banger does not exist/,
    );
  });

  it('deletes only what exists, and only banger taps', async () => {
    const present = scripted({ links: [tap(t)], addrs: [], tuntap: [] });
    expect(await new IpLinks({ runner: present.runner }).deleteTap(t)).toEqual({ deleted: true });
    expect(present.calls).toEqual([`link del dev ${t}`]);
    const absent = scripted({ links: [], addrs: [], tuntap: [] });
    expect(await new IpLinks({ runner: absent.runner }).deleteTap(t)).toEqual({ deleted: false });
    expect(absent.calls).toEqual([]);
    await expect(new IpLinks({ runner: absent.runner }).deleteTap('eth0')).rejects.toThrow(
      /not named by banger/,
    );
  });

  it('lists only banger bridges and taps', async () => {
    const { runner } = scripted({
      links: [bridge('br-banger'), bridge('docker0'), tap(t, 'br-banger'), tap('tap0'), { ifname: 'eth0' }],
      addrs: [addr('br-banger', '10.213.0.1/24'), addr('docker0', '172.17.0.1/16')],
      tuntap: [{ ifname: t, user: 1000 }],
    });
    const links = new IpLinks({ runner });
    expect(await links.listBridges()).toEqual([
      { name: 'br-banger', up: true, addresses: ['10.213.0.1/24'] },
    ]);
    expect(await links.listTaps()).toEqual([{ name: t, up: true, master: 'br-banger', ownerUid: 1000 }]);
  });

  it('wraps a tool failure in a HostnetError naming the operation', async () => {
    const runner: Runner = async (_f, args) => {
      if (args[0] === '-json') return '[]';
      throw new Error('RTNETLINK answers: Operation not permitted');
    };
    const err = await new IpLinks({ runner })
      .ensureBridge('br-banger', '10.213.0.1/24')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostnetError);
    expect((err as HostnetError).op).toBe('ensure_bridge');
    expect((err as Error).message).toMatch(/Operation not permitted/);
  });
});

describe('parsers', () => {
  it('survive garbage without trusting it', () => {
    expect(() => parseLinks({})).toThrow(HostnetError);
    expect(parseLinks([null, 1, 'x', { ifname: 7 }, { ifname: 'x'.repeat(16) }, { ifname: 'ok' }])).toEqual([
      { name: 'ok', kind: undefined, tunType: undefined, master: undefined, up: false },
    ]);
    expect(
      parseAddrs([{ ifname: 'a', addr_info: [{ family: 'inet', local: '999.1.1.1', prefixlen: 24 }] }]),
    ).toEqual(new Map([['a', []]]));
    expect(
      parseTunOwners([
        { ifname: 'a', user: -1 },
        { ifname: 'b', user: 'root' },
        { ifname: 'c', user: 0 },
      ]),
    ).toEqual(new Map([['c', 0]]));
  });

  it('tap names derive from the VM id and back', () => {
    expect(tapNameFor('0123456789ab')).toBe('bgt0123456789ab');
    expect(vmIdOfTap('bgt0123456789ab')).toBe('0123456789ab');
    expect(vmIdOfTap('eth0')).toBeUndefined();
    expect(() => tapNameFor('../x')).toThrow(RangeError);
  });
});
