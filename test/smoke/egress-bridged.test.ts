// Egress policy of bridged VMs on real guests (issue 16), all inside the smoke namespace: a veth
// link there carries the host's upstream resolver address (banger's resolver forwards to it) with
// a fake DNS answering api.egress.test and other.egress.test, a rogue resolver, and TCP services.
// The guest, root, tries every way out it has; nothing leaves the namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DaemonStatusResult, Vm } from '../../generated/types.gen.ts';
import { upstreamFrom } from '../../src/daemon/dns.ts';
import {
  banger,
  daemonLogRecords,
  helperLogRecords,
  inNetns,
  smokeEnv,
  uniqueName,
  type CmdResult,
} from './harness.ts';

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

/** vitest's limit for each test (vitest.smoke.config.ts testTimeout). */
const TEST_LIMIT_MS = 300_000;
/** A call gives up this long before that limit, so the test fails saying why, not by vitest's timer. */
const MARGIN_MS = 25_000;
/** Each kind of call's own limit, well under the test's (a TCG boot takes 15-25 s here). */
const LIMIT = { run: 180_000, exec: 90_000, set: 60_000, status: 30_000 } as const;

/** The last `n` characters of a text, marked when cut. */
function tail(text: string, n = 2000): string {
  const t = text.trim();
  return t.length > n ? `…${t.slice(-n)}` : t;
}

/** A JSON log record as one line: time, level, message, the rest (cut). */
function logLine(r: Record<string, unknown>): string {
  const { time, level, msg, pid: _pid, hostname: _host, name: _name, ...rest } = r;
  const line = `${String(time ?? '').slice(11, 23)} ${String(level)} ${String(msg)} ${JSON.stringify(rest)}`;
  return line.length > 400 ? `${line.slice(0, 400)}…` : line;
}

/** The last `n` records of a log as lines; a log that cannot be read says why instead. */
function lastRecords(read: () => Record<string, unknown>[], n: number): string[] {
  try {
    return read().slice(-n).map(logLine);
  } catch (err) {
    // e.g. a line half written when it was read
    return [`(unreadable: ${(err as Error).message})`];
  }
}

/** What the host side looked like when a call hung (each look bounded: a hung look says so). */
async function hostState(vm: string | undefined): Promise<string[]> {
  const netns = smokeEnv().netns;
  const looks: [string, string[]][] = [
    ['neighbours', ['ip', 'neigh', 'show']],
    ['tcp sockets', ['ss', '-tnoip']],
    ['egress tables', ['nft', 'list', 'table', 'inet', 'banger_egress']],
    // The ssh connections as conntrack sees them (a reply it calls invalid meets the reject rule).
    ['ssh conntrack', ['grep', '-F', 'dport=22 ', '/proc/net/nf_conntrack']],
  ];
  const out: string[] = [];
  // 5 s each: all of them fit in MARGIN_MS.
  for (const [what, argv] of looks) {
    const r = await inNetns(netns, argv, { timeoutMs: 5000 });
    out.push(`${what} (${argv.join(' ')}): ${r.timedOut ? 'timed out' : tail(r.stdout + r.stderr, 6000)}`);
  }
  if (vm) {
    const r = await banger(['vm', 'logs', vm, '--tail', '3K'], { timeoutMs: 5000 });
    out.push(`console of ${vm}: ${r.timedOut ? 'timed out' : tail(r.stdout + r.stderr, 3000)}`);
  }
  return out;
}

/** Why a banger call failed, with what the daemon and helper logged last. */
async function explain(
  args: string[],
  r: CmdResult,
  ms: number,
  limitMs: number,
  vm: string | undefined,
): Promise<string> {
  const how = r.timedOut
    ? `did not end within ${limitMs} ms; killed: ${(r.killed ?? []).join(' | ')}`
    : `exited ${r.code} after ${ms} ms`;
  return [
    `banger ${args.join(' ')} ${how}`,
    `stderr: ${tail(r.stderr)}`,
    `stdout: ${tail(r.stdout)}`,
    'daemon log, last records:',
    ...lastRecords(daemonLogRecords, 40),
    'root helper log, last records (without the once-a-second denial polls):',
    ...lastRecords(() => helperLogRecords().filter((l) => l.method !== 'priv.egress_events'), 15),
    ...(r.timedOut ? await hostState(vm) : []),
  ].join('\n');
}

/**
 * The banger calls of one test, each bounded by its own limit and by what is left of the test's:
 * a call that fails or hangs fails the test with the command, its output and the logs' tails
 * (a hang used to end in vitest's bare "timed out in 300000ms").
 */
class Calls {
  private readonly deadline = Date.now() + TEST_LIMIT_MS - MARGIN_MS;
  private readonly vm: string | undefined;
  constructor(vm: string | undefined) {
    this.vm = vm;
  }

  /** `banger ARGS`; its stdout, or the test fails with explain(). */
  async ok(args: string[], limitMs: number): Promise<string> {
    const timeoutMs = Math.max(1000, Math.min(limitMs, this.deadline - Date.now()));
    const t0 = Date.now();
    const r = await banger(args, { timeoutMs });
    if (r.code !== 0) expect.fail(await explain(args, r, Date.now() - t0, timeoutMs, this.vm));
    return r.stdout;
  }

  async json<T>(args: string[], limitMs: number): Promise<T> {
    return JSON.parse(await this.ok([...args, '--json'], limitMs)) as T;
  }

  /** A script in the guest, as root. */
  inGuest(script: string): Promise<string> {
    return this.ok(['vm', 'exec', this.vm!, '--', 'bash', '-c', script], LIMIT.exec);
  }
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
  const status = await new Calls(undefined).json<DaemonStatusResult>(['daemon', 'status'], LIMIT.status);
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
    const calls = new Calls(name);
    const run = await calls.json<{ vm: Vm }>(
      ['vm', 'run', '-d', '--network', 'bridge', '--egress', 'allow=api.egress.test:8080', '--name', name],
      LIMIT.run,
    );
    expect(run.vm.egress).toMatchObject({ mode: 'allow' });

    // The allowed name resolves through banger's resolver and its service answers.
    const ok = await calls.inGuest(`getent hosts api.egress.test | cut -d' ' -f1; ${tcpProbe(API_IP, 8080)}`);
    expect(ok.split('\n')[0]).toBe(API_IP);
    expect(probes(ok)[`${API_IP}:8080`]?.r).toBe('api-ok');

    // Another name, another port, a raw IP: each fails, fast.
    const denied = await calls.inGuest(
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
    const tricks = await calls.inGuest(
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
    const calls = new Calls(name);
    await calls.json<{ vm: Vm }>(
      ['vm', 'run', '-d', '--network', 'bridge', '--egress', 'none', '--name', name],
      LIMIT.run,
    );
    expect(probes(await calls.inGuest(tcpProbe(API_IP, 8080)))[`${API_IP}:8080`]?.r).toBe('fail');
    await calls.ok(['vm', 'set', name, '--egress', `allow=${API_IP}:8080`], LIMIT.set);
    const after = probes(await calls.inGuest(`${tcpProbe(API_IP, 8080)}; ${tcpProbe(API_IP, 8081)}`));
    expect(after[`${API_IP}:8080`]?.r).toBe('api-ok');
    expect(after[`${API_IP}:8081`]?.r).toBe('fail');
    await calls.ok(['vm', 'set', name, '--egress', 'none'], LIMIT.set);
    expect(probes(await calls.inGuest(tcpProbe(API_IP, 8080)))[`${API_IP}:8080`]?.r).toBe('fail');
  });
});
