// Egress policy of bridged VMs on real guests (issue 16), all inside the smoke namespace: a veth
// link there carries the host's upstream resolver address (banger's resolver forwards to it) with
// a fake DNS answering api.egress.test and other.egress.test, a rogue resolver, and TCP services.
// The guest, root, tries every way out it has; nothing leaves the namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DaemonStatusResult, Vm } from '../../generated/types.gen.ts';
import { upstreamFrom } from '../../src/daemon/dns.ts';
import { banger, bangerJson, daemonLogRecords, inNetns, smokeEnv, uniqueName } from './harness.ts';

const API_IP = '192.0.2.80';
const OTHER_IP = '192.0.2.81';
const NF_LOG_ALL = '/proc/sys/net/netfilter/nf_log_all_netns';
const made: string[] = [];
let servers: ChildProcess | undefined;
let nfLogBefore: string | undefined;
let helperReady = false;

// DNS on UPSTREAM:53 (the two names) and OTHER_IP:53 (answers anything with OTHER_IP: the rogue
// resolver a guest might try); TCP services that say who they are.
const SERVER = `
import socket, struct, sys, threading
upstream = sys.argv[1]
NAMES = {"api.egress.test": "${API_IP}", "other.egress.test": "${OTHER_IP}"}
def dns(ip, fixed):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, 53))
    while True:
        m, a = s.recvfrom(512)
        off, labels = 12, []
        while m[off]:
            labels.append(m[off + 1:off + 1 + m[off]].decode().lower()); off += 1 + m[off]
        q = m[12:off + 5]; name = ".".join(labels); qtype = struct.unpack(">H", m[off + 1:off + 3])[0]
        known = fixed or NAMES.get(name); addr = known if qtype == 1 else None
        flags = 0x8180 if known else 0x8183
        head = struct.pack(">HHHHHH", struct.unpack(">H", m[:2])[0], flags, 1, 1 if addr else 0, 0, 0)
        ans = b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(addr) if addr else b""
        s.sendto(head + q + ans, a)
def tcp(ip, port, text):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((ip, port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(text.encode() + b"\\n"); c.close()
for t, a in [(dns, (upstream, None)), (dns, ("${OTHER_IP}", "${OTHER_IP}")), (tcp, ("${API_IP}", 8080, "api-ok")),
             (tcp, ("${API_IP}", 8081, "api-other-port")), (tcp, ("${OTHER_IP}", 8080, "other-ok"))]:
    threading.Thread(target=t, args=a, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`;

/** In the guest, as root: one TCP connection; prints the service's word or the error, and ms. */
function tcpProbe(ip: string, port: number): string {
  return `s=$(date +%s%N); if out=$(timeout 10 bash -c 'exec 3<>/dev/tcp/${ip}/${port} && head -n1 <&3' 2>&1); then r="$out"; else r="fail"; fi; echo "${ip}:${port} $r $(( ($(date +%s%N) - s) / 1000000 ))"`;
}

async function inGuest(name: string, script: string): Promise<string> {
  const r = await banger(['vm', 'exec', name, '--', 'bash', '-c', script], { timeoutMs: 120_000 });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

/** `ip:port word ms` lines → {word, ms} by "ip:port". */
function probes(out: string): Record<string, { r: string; ms: number }> {
  const o: Record<string, { r: string; ms: number }> = {};
  for (const l of out.split('\n')) {
    const m = /^(\S+:\d+) (\S+) (\d+)$/.exec(l.trim());
    if (m) o[m[1]!] = { r: m[2]!, ms: Number(m[3]) };
  }
  return o;
}

beforeAll(async () => {
  const status = await bangerJson<DaemonStatusResult>(['daemon', 'status']);
  helperReady = status.helper.reachable;
  if (!helperReady) return;
  const netns = smokeEnv().netns;
  const upstream = upstreamFrom(readFileSync('/etc/resolv.conf', 'utf8'), ['127.0.0.1']) ?? '10.255.255.53';
  const sh = async (...argv: string[]): Promise<void> => {
    const r = await inNetns(netns, argv);
    if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
  };
  await sh('ip', 'link', 'add', 'bgxsvc', 'type', 'veth', 'peer', 'name', 'bgxsvc1');
  for (const a of [`${upstream}/32`, `${API_IP}/32`, `${OTHER_IP}/32`])
    await sh('ip', 'addr', 'add', a, 'dev', 'bgxsvc');
  await sh('ip', 'link', 'set', 'bgxsvc', 'up');
  await sh('ip', 'link', 'set', 'bgxsvc1', 'up');
  // The helper runs in this namespace: the kernel logs its denials only with this set.
  nfLogBefore = readFileSync(NF_LOG_ALL, 'utf8').trim();
  writeFileSync(NF_LOG_ALL, '1');
  servers = spawn('ip', ['netns', 'exec', netns, 'python3', '-c', SERVER, upstream], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    servers!.stdout!.once('data', () => resolve());
    servers!.once('exit', (c) => reject(new Error(`egress fixtures exited ${c}`)));
  });
}, 60_000);

afterAll(async () => {
  for (const n of made) await banger(['vm', 'delete', n]);
  servers?.kill();
  if (nfLogBefore !== undefined) writeFileSync(NF_LOG_ALL, nfLogBefore);
  if (helperReady) await inNetns(smokeEnv().netns, ['ip', 'link', 'del', 'bgxsvc']);
});

describe('egress policy of bridged VMs', () => {
  it('egress_bridged: allow=NAME:PORT reaches that service only; root in the guest cannot get around it; denials are logged', async (ctx) => {
    if (!helperReady) ctx.skip('needs the root helper (bridged networking)');
    const name = uniqueName('egb');
    made.push(name);
    const run = await bangerJson<{ vm: Vm }>([
      'vm',
      'run',
      '-d',
      '--network',
      'bridge',
      '--egress',
      'allow=api.egress.test:8080',
      '--name',
      name,
    ]);
    expect(run.vm.egress).toMatchObject({ mode: 'allow' });

    // The allowed name resolves through banger's resolver and its service answers.
    const ok = await inGuest(name, `getent hosts api.egress.test | cut -d' ' -f1; ${tcpProbe(API_IP, 8080)}`);
    expect(ok.split('\n')[0]).toBe(API_IP);
    expect(probes(ok)[`${API_IP}:8080`]?.r).toBe('api-ok');

    // Another name, another port, a raw IP: each fails, fast.
    const denied = await inGuest(
      name,
      [
        `getent hosts other.egress.test && echo resolved-other || echo other-refused`,
        tcpProbe(API_IP, 8081),
        tcpProbe(OTHER_IP, 8080),
      ].join('; '),
    );
    expect(denied).toContain('other-refused');
    const p1 = probes(denied);
    for (const k of [`${API_IP}:8081`, `${OTHER_IP}:8080`]) {
      expect(p1[k]?.r, k).toBe('fail');
      expect(p1[k]!.ms, `${k} fails fast`).toBeLessThan(3000);
    }

    // Root in the guest: another resolver, a rewritten resolv.conf, a static route.
    const tricks = await inGuest(
      name,
      [
        `cp /etc/resolv.conf /tmp/rc.bak`,
        `echo nameserver ${OTHER_IP} > /etc/resolv.conf`,
        `getent hosts whatever.example && echo rogue-dns-answered || echo rogue-dns-blocked`,
        `cp /tmp/rc.bak /etc/resolv.conf`,
        `gw=$(ip -4 route show default | cut -d' ' -f3)`,
        `ip route add ${OTHER_IP}/32 via $gw dev eth0 2>/dev/null || true`,
        tcpProbe(OTHER_IP, 8080),
        `ip route del ${OTHER_IP}/32 2>/dev/null || true`,
      ].join('; '),
    );
    expect(tricks).toContain('rogue-dns-blocked');
    expect(probes(tricks)[`${OTHER_IP}:8080`]?.r).toBe('fail');

    // The denials reached the daemon log with the VM and the destination.
    let denies: Record<string, unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      denies = daemonLogRecords().filter((l) => l.msg === 'egress deny' && l.vm === name);
      if (denies.some((l) => String(l.dest).includes(`${OTHER_IP}:8080`))) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const dests = denies.map((l) => String(l.dest));
    expect(
      dests.some((d) => d.includes(`${OTHER_IP}:8080`)),
      dests.join(' '),
    ).toBe(true);
    expect(
      dests.some((d) => d.includes(`${API_IP}:8081`)),
      dests.join(' '),
    ).toBe(true);
    expect(
      dests.some((d) => d.includes('other.egress.test')),
      dests.join(' '),
    ).toBe(true);
  });

  it("egress_set_live: vm set --egress changes a running bridged VM's policy at once", async (ctx) => {
    if (!helperReady) ctx.skip('needs the root helper (bridged networking)');
    const name = uniqueName('egl');
    made.push(name);
    await bangerJson<{ vm: Vm }>([
      'vm',
      'run',
      '-d',
      '--network',
      'bridge',
      '--egress',
      'none',
      '--name',
      name,
    ]);
    expect(probes(await inGuest(name, tcpProbe(API_IP, 8080)))[`${API_IP}:8080`]?.r).toBe('fail');
    const set = await banger(['vm', 'set', name, '--egress', `allow=${API_IP}:8080`]);
    expect(set.code, set.stderr).toBe(0);
    const after = probes(await inGuest(name, `${tcpProbe(API_IP, 8080)}; ${tcpProbe(API_IP, 8081)}`));
    expect(after[`${API_IP}:8080`]?.r).toBe('api-ok');
    expect(after[`${API_IP}:8081`]?.r).toBe('fail');
    const back = await banger(['vm', 'set', name, '--egress', 'none']);
    expect(back.code, back.stderr).toBe(0);
    expect(probes(await inGuest(name, tcpProbe(API_IP, 8080)))[`${API_IP}:8080`]?.r).toBe('fail');
  });
});
