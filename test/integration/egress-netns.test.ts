// Root only: bridged egress enforcement with real packets, no VM. Three throwaway network
// namespaces this test creates: HOST (banger's bridge, the resolver and proxy stand-ins, a host
// service), GUEST (a veth pair whose HOST end is named like a VM's tap and sits on the bridge:
// it stands in for the tap) and NET (the "internet": a routed peer with services). The real
// bangerd-root code writes the chains in HOST through its socket; probes run in GUEST. No packet
// leaves the namespaces.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HelperClient } from '../../generated/client.gen.ts';
import type { PrivEgressApplyParams } from '../../generated/types.gen.ts';
import { applyParamsHash } from '../../src/egress/bridged.ts';
import { NftEgress } from '../../src/hostnet/egress.ts';
import { execRunner, IpLinks, NftNat, RecordingHostnet, type Runner } from '../../src/hostnet/index.ts';
import { startHelper } from '../../src/helper/start.ts';
import { createLogger } from '../../src/log/logger.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const isRoot = process.getuid?.() === 0;
const HOST = `bgx-host-${process.pid}`;
const GUEST = `bgx-guest-${process.pid}`;
const NET = `bgx-net-${process.pid}`;
const BRIDGE = 'br-banger-x';
const TAP = 'bgt0e0e0e0e0e0e';
const GW = '10.213.0.1';
const GUEST_IP = '10.213.0.2';
const NET_IP = '192.0.2.10';
const NET_IP2 = '198.51.100.7';
const NF_LOG_ALL = '/proc/sys/net/netfilter/nf_log_all_netns';

const nsRunner: Runner = (file, args, opts) =>
  execRunner('/usr/sbin/ip', ['netns', 'exec', HOST, file, ...args], opts);

function inNs(ns: string, ...argv: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8' });
}

// Listens on every "ip:port/proto" given; answers "ok" (tcp: on accept; udp: to any datagram).
const SERVER = `
import socket, sys, threading
def tcp(ip, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((ip, port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"ok"); c.close()
def udp(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, port))
    while True:
        _, a = s.recvfrom(512); s.sendto(b"ok", a)
for spec in sys.argv[1:]:
    addr, proto = spec.split("/"); ip, port = addr.split(":")
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(ip, int(port)), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`;

// One connection attempt: prints {"r": ok|refused|unreachable|timeout|error, "ms": N}.
const PROBE = `
import json, socket, sys, time
proto, ip, port, src = sys.argv[1], sys.argv[2], int(sys.argv[3]), (sys.argv[4] if len(sys.argv) > 4 else None)
t = time.monotonic(); r = "error"
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(2.0)
    if src: s.bind((src, 0))
    s.connect((ip, port))
    if proto == "udp": s.send(b"q")
    r = "ok" if s.recv(16) == b"ok" else "error"
except ConnectionRefusedError: r = "refused"
except (OSError) as e:
    r = "timeout" if isinstance(e, socket.timeout) else ("unreachable" if e.errno in (113, 101) else "error:%d" % (e.errno or 0))
print(json.dumps({"r": r, "ms": int((time.monotonic() - t) * 1000)}))
`;

function probe(proto: 'tcp' | 'udp', ip: string, port: number, src?: string): { r: string; ms: number } {
  const out = inNs(GUEST, 'python3', '-c', PROBE, proto, ip, String(port), ...(src ? [src] : []));
  return JSON.parse(out) as { r: string; ms: number };
}

function startServer(ns: string, specs: string[]): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', SERVER, ...specs], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.stdout.once('data', () => resolve(child));
    child.once('exit', (c) => reject(new Error(`server in ${ns} exited ${c}`)));
  });
}

describe.skipIf(!isRoot)('bridged egress with real packets between namespaces', () => {
  const tmp = shortTempDir('bgx');
  const log = new MemoryLog();
  const servers: ChildProcess[] = [];
  let server: Server;
  let client: HelperClient;
  let nfLogBefore: string | undefined;

  const apply = (p: Partial<PrivEgressApplyParams>): Promise<unknown> =>
    client.priv.egress_apply({
      tap: TAP,
      guest_ip: GUEST_IP,
      bridge: BRIDGE,
      mode: 'allow',
      cidrs: [],
      resolver: { ip: GW, port: 5354 },
      proxy: { ip: GW, port: 3128 },
      ...p,
    });

  beforeAll(async () => {
    for (const ns of [HOST, GUEST, NET]) execFileSync('ip', ['netns', 'add', ns]);
    const sh = (ns: string, ...a: string[]): string => inNs(ns, ...a);
    for (const ns of [HOST, GUEST, NET]) sh(ns, 'ip', 'link', 'set', 'lo', 'up');
    // GUEST eth0 <-> HOST TAP (on the bridge, as a VM's tap would be).
    sh(HOST, 'ip', 'link', 'add', TAP, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', GUEST);
    sh(GUEST, 'ip', 'addr', 'add', `${GUEST_IP}/24`, 'dev', 'eth0');
    sh(GUEST, 'ip', 'link', 'set', 'eth0', 'up');
    sh(GUEST, 'ip', 'route', 'add', 'default', 'via', GW);
    // HOST uplink <-> NET.
    sh(HOST, 'ip', 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NET);
    sh(HOST, 'ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'up0');
    sh(HOST, 'ip', 'link', 'set', 'up0', 'up');
    sh(HOST, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    sh(HOST, 'ip', 'route', 'add', `${NET_IP2}/32`, 'via', NET_IP);
    sh(NET, 'ip', 'addr', 'add', `${NET_IP}/24`, 'dev', 'eth0');
    sh(NET, 'ip', 'addr', 'add', `${NET_IP2}/32`, 'dev', 'eth0');
    sh(NET, 'ip', 'link', 'set', 'eth0', 'up');
    sh(NET, 'ip', 'route', 'add', '10.213.0.0/24', 'via', '192.0.2.1');

    execFileSync(process.execPath, [
      fileURLToPath(new URL('../../scripts/build-addon.mjs', import.meta.url)),
    ]);
    chmodSync(tmp.dir, 0o755);
    const sock = join(tmp.dir, 'root', 'h.sock');
    // The kernel logs netfilter lines from a non-initial namespace only with this set.
    nfLogBefore = readFileSync(NF_LOG_ALL, 'utf8').trim();
    writeFileSync(NF_LOG_ALL, '1');
    ({ server } = await startHelper({
      socket: sock,
      ownerUid: 4242,
      log: createLogger({ name: 'bangerd-root', stream: log }),
      hostnet: {
        links: new IpLinks({ runner: nsRunner }),
        nat: new NftNat({ runner: nsRunner, forwarding: { get: async () => true, enable: async () => {} } }),
        resolver: new RecordingHostnet(),
        egress: new NftEgress({ runner: nsRunner }),
      },
    }));
    client = new HelperClient(new SocketTransport(sock));
    // The bridge with the guests' DNS redirect (port 53 of the gateway → 5354), as the daemon asks.
    await client.priv.ensure_bridge({ bridge: BRIDGE, address: `${GW}/24`, dns_port: 5354 });
    sh(HOST, 'ip', 'link', 'set', TAP, 'master', BRIDGE);
    sh(HOST, 'ip', 'link', 'set', TAP, 'up');
    servers.push(
      await startServer(HOST, [`${GW}:5354/udp`, `${GW}:3128/tcp`, `${GW}:2222/tcp`]),
      await startServer(NET, [
        `${NET_IP}:443/tcp`,
        `${NET_IP}:8080/tcp`,
        `${NET_IP}:53/udp`,
        `${NET_IP}:9999/udp`,
        `${NET_IP2}:443/tcp`,
      ]),
    );
  }, 60_000);

  afterAll(() => {
    for (const s of servers) s.kill();
    server?.close();
    if (nfLogBefore !== undefined) writeFileSync(NF_LOG_ALL, nfLogBefore);
    for (const ns of [HOST, GUEST, NET]) execFileSync('ip', ['netns', 'delete', ns]);
    tmp.cleanup();
  });

  it('without a policy (mode all) the guest reaches everything', async () => {
    expect(probe('tcp', NET_IP, 8080).r).toBe('ok');
    expect(probe('udp', NET_IP, 53).r).toBe('ok');
    expect(probe('tcp', GW, 2222).r).toBe('ok');
  });

  it('allow=CIDR:port: the CIDR on its port passes; another port, another address, the host and DNS elsewhere are rejected fast', async () => {
    expect(await apply({ cidrs: [{ cidr: '192.0.2.0/24', port: 443 }] })).toMatchObject({ created: true });
    expect(probe('tcp', NET_IP, 443).r).toBe('ok');
    for (const [proto, ip, port, want] of [
      ['tcp', NET_IP, 8080, 'refused'],
      ['tcp', NET_IP2, 443, 'refused'],
      ['tcp', GW, 2222, 'refused'], // a host service
      ['udp', NET_IP, 53, 'unreachable'], // another resolver
      ['udp', NET_IP, 9999, 'unreachable'],
    ] as const) {
      const p = probe(proto, ip, port);
      expect({ proto, ip, port, r: p.r }).toEqual({ proto, ip, port, r: want });
      expect(p.ms).toBeLessThan(1000);
    }
    // banger's resolver (port 53 of the gateway, redirected) and the proxy stay reachable.
    expect(probe('udp', GW, 53).r).toBe('ok');
    expect(probe('tcp', GW, 3128).r).toBe('ok');
  });

  it('DNS to another server is rejected even inside an allowed CIDR', async () => {
    await apply({ cidrs: [{ cidr: '192.0.2.0/24' }] });
    expect(probe('tcp', NET_IP, 8080).r).toBe('ok');
    expect(probe('udp', NET_IP, 9999).r).toBe('ok');
    expect(probe('udp', NET_IP, 53).r).toBe('unreachable');
  });

  it('a spoofed source address gets nothing', async () => {
    await apply({ cidrs: [{ cidr: '192.0.2.0/24' }] });
    inNs(GUEST, 'ip', 'addr', 'add', '10.213.0.99/24', 'dev', 'eth0');
    try {
      expect(probe('tcp', NET_IP, 8080, '10.213.0.99').r).toBe('timeout');
      expect(probe('tcp', NET_IP, 8080, GUEST_IP).r).toBe('ok');
    } finally {
      inNs(GUEST, 'ip', 'addr', 'del', '10.213.0.99/24', 'dev', 'eth0');
    }
  });

  it('egress_allow opens an address for its TTL; with a port, only that port', async () => {
    await apply({ mode: 'allow', cidrs: [] });
    expect(probe('tcp', NET_IP2, 443).r).toBe('refused');
    await client.priv.egress_allow({ tap: TAP, entries: [{ ip: NET_IP2, port: 443, ttl_s: 60 }] });
    expect(probe('tcp', NET_IP2, 443).r).toBe('ok');
    expect(probe('tcp', NET_IP, 443).r).toBe('refused');
    await client.priv.egress_allow({ tap: TAP, entries: [{ ip: NET_IP, ttl_s: 45 }] });
    expect(probe('tcp', NET_IP, 8080).r).toBe('ok');
    const set = inNs(HOST, 'nft', 'list', 'set', 'inet', 'banger_egress', `dom_${TAP}`);
    expect(set).toMatch(new RegExp(`${NET_IP.replaceAll('.', '\\.')} timeout 45s`));
    // A re-apply (a policy change) empties the sets.
    await apply({ mode: 'none', cidrs: [] });
    expect(probe('tcp', NET_IP, 8080).r).toBe('refused');
  });

  it('reads back as nftables JSON and lists in list_owned, with the hash of what it applied', async () => {
    const params = {
      tap: TAP,
      guest_ip: GUEST_IP,
      bridge: BRIDGE,
      mode: 'allow' as const,
      cidrs: [{ cidr: '192.0.2.0/24', port: 443 }],
      resolver: { ip: GW, port: 5354 },
      proxy: { ip: GW, port: 3128 },
    };
    await apply(params);
    const j = JSON.parse(inNs(HOST, 'nft', '-j', 'list', 'table', 'inet', 'banger_egress')) as {
      nftables: Record<string, { name?: string; chain?: string; comment?: string; hook?: string }>[];
    };
    const chains = j.nftables.flatMap((i) => (i.chain ? [i.chain.name] : []));
    expect(chains).toEqual(expect.arrayContaining(['forward', 'input', `vm_${TAP}`]));
    const dispatch = j.nftables.filter(
      (i) => i.rule?.comment === `banger egress ${TAP} ${applyParamsHash(params)}`,
    );
    expect(dispatch.map((i) => i.rule?.chain).sort()).toEqual(['forward', 'input']);
    const nd = inNs(HOST, 'nft', 'list', 'table', 'netdev', 'banger_egress');
    expect(nd).toContain(`chain in_${TAP}`);
    expect(nd).toMatch(new RegExp(`hook ingress device "?${TAP}"? priority -500`));
    expect((await client.priv.list_owned()).egress).toEqual([
      { tap: TAP, guest_ip: GUEST_IP, ingress: true, policy_hash: applyParamsHash(params) },
    ]);
    // Another policy, another hash: what start-up reconcile compares with the store's.
    await apply({ ...params, cidrs: [{ cidr: '192.0.2.0/24', port: 8443 }] });
    const after = (await client.priv.list_owned()).egress?.[0]?.policy_hash;
    expect(after).toMatch(/^[0-9a-f]{16}$/);
    expect(after).not.toBe(applyParamsHash(params));
    expect(after).toBe(applyParamsHash({ ...params, cidrs: [{ cidr: '192.0.2.0/24', port: 8443 }] }));
  });

  it('denials reach priv.egress_events from the kernel log', async () => {
    await apply({ cidrs: [] });
    const before = await client.priv.egress_events({ cursor: 0 });
    expect(before.error).toBeUndefined();
    probe('tcp', NET_IP, 8080);
    probe('udp', NET_IP, 53);
    let got: Awaited<ReturnType<typeof client.priv.egress_events>>['events'] = [];
    for (let i = 0; i < 20 && got.length < 2; i++) {
      got = (await client.priv.egress_events({ cursor: before.cursor })).events;
      if (got.length < 2) await new Promise((r) => setTimeout(r, 100));
    }
    expect(got.map((e) => [e.tap, e.src, e.dst, e.proto, e.dport])).toEqual(
      expect.arrayContaining([
        [TAP, GUEST_IP, NET_IP, 'tcp', 8080],
        [TAP, GUEST_IP, NET_IP, 'udp', 53],
      ]),
    );
  });

  it('refuses hostile params touching nothing; remove (and mode all) leaves no trace', async () => {
    const before = inNs(HOST, 'nft', '-j', 'list', 'ruleset');
    for (const params of [
      { tap: 'eth0' },
      { resolver: { ip: '8.8.8.8', port: 53 } },
      { cidrs: [{ cidr: '10.0.0.1/8' }] },
      { mode: 'none', cidrs: [{ cidr: '10.0.0.0/8' }] },
      { bridge: 'up0' },
    ]) {
      const err = await apply(params as Partial<PrivEgressApplyParams>).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ErrorResponse);
      expect((err as ErrorResponse).code).toBe('bad_request');
    }
    expect(inNs(HOST, 'nft', '-j', 'list', 'ruleset')).toBe(before);
    expect(await client.priv.egress_remove({ tap: TAP })).toEqual({ tap: TAP, removed: true });
    expect(await client.priv.egress_remove({ tap: TAP })).toEqual({ tap: TAP, removed: false });
    const rs = inNs(HOST, 'nft', 'list', 'ruleset');
    expect(rs).not.toContain(TAP);
    expect(probe('tcp', NET_IP, 8080).r).toBe('ok');
    await apply({ cidrs: [] });
    await apply({ mode: 'all', cidrs: [] });
    expect(inNs(HOST, 'nft', 'list', 'ruleset')).not.toContain(TAP);
    expect((await client.priv.list_owned()).egress).toEqual([]);
  });
});
