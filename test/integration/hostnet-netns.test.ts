// Root only: the real iproute2/nftables code paths, inside a throwaway network namespace this
// test creates and removes. Nothing touches the host's namespace (checked), and no packet is sent
// anywhere: NAT is verified by reading the ruleset back.
import { execFileSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HelperClient } from '../../generated/client.gen.ts';
import {
  execRunner,
  IpLinks,
  NftNat,
  RecordingHostnet,
  tapNameFor,
  type ForwardingControl,
  type Runner,
} from '../../src/hostnet/index.ts';
import { startHelper } from '../../src/helper/start.ts';
import { createLogger } from '../../src/log/logger.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const isRoot = process.getuid?.() === 0;
const NS = `bgtest-hostnet-${process.pid}`;
const BRIDGE = 'br-banger-t';
const VM_A = 'a1b2c3d4e5f6';
const VM_B = '0a0b0c0d0e0f';
const OWNER = 4242;

/** Runs every tool inside the namespace: `ip netns exec NS <tool> ...`. */
const nsRunner: Runner = (file, args, opts) =>
  execRunner('/usr/sbin/ip', ['netns', 'exec', NS, file, ...args], opts);

const nsForwarding: ForwardingControl = {
  get: async () => (await nsRunner('/usr/sbin/sysctl', ['-n', 'net.ipv4.ip_forward'])).trim() === '1',
  enable: async () => void (await nsRunner('/usr/sbin/sysctl', ['-qw', 'net.ipv4.ip_forward=1'])),
};

function ns(...argv: string[]): string {
  return execFileSync('ip', ['netns', 'exec', NS, ...argv], { encoding: 'utf8' });
}

function hostLinkNames(): string[] {
  return (
    JSON.parse(execFileSync('ip', ['-json', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string }[]
  ).map((l) => l.ifname);
}

describe.skipIf(!isRoot)('hostnet in a throwaway network namespace', () => {
  let hostLinksBefore: string[];
  const links = new IpLinks({ runner: nsRunner });
  const nat = new NftNat({ runner: nsRunner, forwarding: nsForwarding });

  beforeAll(() => {
    hostLinksBefore = hostLinkNames();
    execFileSync('ip', ['netns', 'add', NS]);
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', NS]);
  });

  it('ensure_bridge creates the bridge once, addressed and up; a repeat changes nothing', async () => {
    expect(await links.ensureBridge(BRIDGE, '10.213.0.1/24')).toEqual({ created: true, changed: true });
    expect(await links.ensureBridge(BRIDGE, '10.213.0.1/24')).toEqual({ created: false, changed: false });
    const [l] = JSON.parse(ns('ip', '-json', '-d', 'addr', 'show', 'dev', BRIDGE)) as {
      flags: string[];
      linkinfo: { info_kind: string };
      addr_info: { family: string; local: string; prefixlen: number }[];
    }[];
    expect(l!.linkinfo.info_kind).toBe('bridge');
    expect(l!.flags).toContain('UP');
    expect(l!.addr_info.filter((a) => a.family === 'inet')).toEqual([
      expect.objectContaining({ local: '10.213.0.1', prefixlen: 24 }),
    ]);
    expect(await links.listBridges()).toEqual([{ name: BRIDGE, up: true, addresses: ['10.213.0.1/24'] }]);
  });

  it('create_tap makes a persistent tap owned by the uid, enslaved to the bridge; idempotent', async () => {
    const tap = tapNameFor(VM_A);
    expect(await links.createTap(tap, BRIDGE, OWNER)).toEqual({ created: true });
    expect(await links.createTap(tap, BRIDGE, OWNER)).toEqual({ created: false });
    const owners = JSON.parse(ns('ip', '-json', 'tuntap', 'show')) as { ifname: string; user?: number }[];
    expect(owners).toContainEqual(expect.objectContaining({ ifname: tap, user: OWNER }));
    const [l] = JSON.parse(ns('ip', '-json', 'link', 'show', 'dev', tap)) as {
      master?: string;
      flags: string[];
    }[];
    expect(l!.master).toBe(BRIDGE);
    expect(l!.flags).toContain('UP');
    // A tap of the wrong owner (a crash leftover) is replaced, not reused.
    expect(await links.createTap(tap, BRIDGE, OWNER + 1)).toEqual({ created: true });
    expect(await links.listTaps()).toEqual([{ name: tap, up: true, master: BRIDGE, ownerUid: OWNER + 1 }]);
    expect(await links.deleteTap(tap)).toEqual({ deleted: true });
    expect(await links.deleteTap(tap)).toEqual({ deleted: false });
    expect(await links.listTaps()).toEqual([]);
  });

  it('ensure_nat writes one masquerade for the guest plus forwarding; read back with nft -j list ruleset', async () => {
    expect(await nat.ensure(VM_A, '10.213.0.2', BRIDGE)).toEqual({ created: true, rules: 3 });
    expect(await nat.ensure(VM_A, '10.213.0.2', BRIDGE)).toEqual({ created: false, rules: 3 });
    await nat.ensure(VM_B, '10.213.0.3', BRIDGE);
    const ruleset = JSON.parse(ns('nft', '-j', 'list', 'ruleset')) as { nftables: Record<string, unknown>[] };
    const rules = ruleset.nftables
      .map((i) => i.rule as { table: string; chain: string; comment?: string; expr: unknown[] } | undefined)
      .filter((r) => r !== undefined);
    const mineA = rules.filter((r) => r.comment === `banger vm ${VM_A}`);
    expect(mineA).toHaveLength(3);
    const masq = mineA.filter((r) => JSON.stringify(r.expr).includes('"masquerade"'));
    expect(masq).toHaveLength(1);
    expect(masq[0]!.table).toBe('banger');
    expect(JSON.stringify(masq[0]!.expr)).toContain('"right":"10.213.0.2"');
    expect(ns('nft', 'list', 'table', 'ip', 'banger')).toMatch(
      /ip saddr 10\.213\.0\.2 oifname != "br-banger-t" masquerade comment "banger vm a1b2c3d4e5f6"/,
    );
    expect(ns('sysctl', '-n', 'net.ipv4.ip_forward').trim()).toBe('1');

    expect(await nat.remove(VM_A)).toEqual({ removed: 3 });
    expect(await nat.remove(VM_A)).toEqual({ removed: 0 });
    const after = ns('nft', '-j', 'list', 'ruleset');
    expect(after).not.toContain(`banger vm ${VM_A}`);
    expect(after).toContain(`banger vm ${VM_B}`);
    expect(await nat.purge()).toEqual({ deleted: true });
    expect(ns('nft', '-j', 'list', 'ruleset')).not.toContain('"banger"');
  });

  it('the guest DNS redirect: udp and tcp port 53 on the bridge address go to the daemon port; idempotent', async () => {
    expect(await nat.ensureDnsRedirect(BRIDGE, '10.213.0.1', 5354)).toEqual({ created: true });
    expect(await nat.ensureDnsRedirect(BRIDGE, '10.213.0.1', 5354)).toEqual({ created: false });
    const text = ns('nft', 'list', 'table', 'ip', 'banger');
    expect(text).toMatch(
      /iifname "br-banger-t" ip daddr 10\.213\.0\.1 udp dport 53 redirect to :5354 comment "banger dns br-banger-t"/,
    );
    expect(text).toMatch(/tcp dport 53 redirect to :5354/);
    // A new port replaces the pair.
    expect(await nat.ensureDnsRedirect(BRIDGE, '10.213.0.1', 5399)).toEqual({ created: true });
    expect(await nat.listDnsRedirects()).toEqual([
      {
        bridge: BRIDGE,
        gateway: '10.213.0.1',
        port: 5399,
        handles: [expect.any(Number), expect.any(Number)],
      },
    ]);
    expect(await nat.purge()).toEqual({ deleted: true });
  });

  describe('bangerd-root over its socket, with the real tools in the namespace', () => {
    const tmp = shortTempDir('bgh');
    const log = new MemoryLog();
    let server: Server;
    let client: HelperClient;

    beforeAll(async () => {
      execFileSync(process.execPath, [
        fileURLToPath(new URL('../../scripts/build-addon.mjs', import.meta.url)),
      ]);
      chmodSync(tmp.dir, 0o755);
      const sock = join(tmp.dir, 'root', 'h.sock');
      ({ server } = await startHelper({
        socket: sock,
        ownerUid: OWNER,
        log: createLogger({ name: 'bangerd-root', stream: log }),
        hostnet: { links, nat, resolver: new RecordingHostnet() },
      }));
      client = new HelperClient(new SocketTransport(sock));
    });
    afterAll(() => {
      server.close();
      tmp.cleanup();
    });

    it('serves the verbs, tap owned by the configured owner uid, and lists what banger owns', async () => {
      await client.priv.ensure_bridge({ bridge: BRIDGE, address: '10.213.0.1/24' });
      const t = await client.priv.create_tap({ tap: tapNameFor(VM_B), bridge: BRIDGE });
      expect(t).toEqual({ tap: tapNameFor(VM_B), bridge: BRIDGE, owner_uid: OWNER, created: true });
      await client.priv.ensure_nat({ vm_id: VM_B, guest_ip: '10.213.0.3', bridge: BRIDGE });
      const owned = await client.priv.list_owned();
      expect(owned.bridges).toEqual([{ name: BRIDGE, up: true, addresses: ['10.213.0.1/24'] }]);
      expect(owned.taps).toEqual([
        { name: tapNameFor(VM_B), vm_id: VM_B, up: true, bridge: BRIDGE, owner_uid: OWNER },
      ]);
      expect(owned.nat.map((r) => [r.vm_id, r.chain, r.guest_ip])).toEqual([
        [VM_B, 'postrouting', '10.213.0.3'],
        [VM_B, 'forward', '10.213.0.3'],
        [VM_B, 'forward', '10.213.0.3'],
      ]);
      expect(owned.ip_forward).toBe(true);
      expect(await client.priv.sync_resolver_routing({ bridge: BRIDGE, dns_port: 5354 })).toEqual({
        applied: false,
        detail: 'systemd-resolved is not running (fake)',
      });
      await client.priv.remove_nat({ vm_id: VM_B });
      await client.priv.delete_tap({ tap: tapNameFor(VM_B) });
      const empty = await client.priv.list_owned();
      expect(empty.taps).toEqual([]);
      expect(empty.nat).toEqual([]);
    });

    it.each([
      ['priv.delete_tap', { tap: 'eth0' }],
      ['priv.delete_tap', { tap: 'lo' }],
      ['priv.create_tap', { tap: tapNameFor(VM_A), bridge: 'eth0' }],
      ['priv.ensure_bridge', { bridge: BRIDGE, address: '192.168.0.1/24' }],
      ['priv.ensure_bridge', { bridge: 'docker0', address: '10.213.0.1/24' }],
      ['priv.ensure_nat', { vm_id: VM_A, guest_ip: '8.8.8.8', bridge: BRIDGE }],
      ['priv.ensure_nat', { vm_id: VM_A, guest_ip: '10.213.0.2', bridge: BRIDGE, extra: 1 }],
      ['priv.remove_nat', { vm_id: '../../x' }],
      ['priv.sync_resolver_routing', { bridge: BRIDGE, dns_port: 1e9 }],
    ] as const)('refuses %s %j with bad_request, touching nothing', async (method, params) => {
      const before = ns('ip', '-json', 'link', 'show') + ns('nft', '-j', 'list', 'ruleset');
      const err = await (client.call as (m: string, p: unknown) => Promise<unknown>)(method, params).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ErrorResponse);
      expect((err as ErrorResponse).code).toBe('bad_request');
      expect(ns('ip', '-json', 'link', 'show') + ns('nft', '-j', 'list', 'ruleset')).toBe(before);
    });
  });

  it('left the host namespace alone', () => {
    const created = hostLinkNames().filter((n) => !hostLinksBefore.includes(n));
    expect(created.filter((n) => n.startsWith('bgt') || n.startsWith('br-banger'))).toEqual([]);
  });
});
