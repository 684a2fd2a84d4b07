// Egress policy of user-mode VMs on real guests (issue 16), all inside the smoke namespace: a
// veth there carries the namespace's upstream resolver address, where a fake DNS answers
// web.egress-user.test and other.egress-user.test (both 192.0.2.90), and an HTTP service on
// 192.0.2.90:8080 and :8081. The guest (QEMU user networking, restrict=on) reaches it only
// through banger's egress proxy, only where the policy allows; nothing leaves the namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Vm, VmEgressResult } from '../../generated/types.gen.ts';
import { upstreamFrom } from '../../src/daemon/dns.ts';
import { banger, bangerJson, daemonLogRecords, inNetns, smokeEnv, uniqueName } from './harness.ts';

const WEB_IP = '192.0.2.90';
const WEB = 'web.egress-user.test';
const OTHER = 'other.egress-user.test';
const LINK = 'bgesu';
const made: string[] = [];
let servers: ChildProcess | undefined;

const SERVER = `
import socket, struct, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
upstream = sys.argv[1]
NAMES = {"${WEB}": "${WEB_IP}", "${OTHER}": "${WEB_IP}"}
def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((upstream, 53))
    while True:
        m, a = s.recvfrom(512)
        off, labels = 12, []
        while m[off]:
            labels.append(m[off + 1:off + 1 + m[off]].decode().lower()); off += 1 + m[off]
        q = m[12:off + 5]; name = ".".join(labels); qtype = struct.unpack(">H", m[off + 1:off + 3])[0]
        known = NAMES.get(name); addr = known if qtype == 1 else None
        flags = 0x8180 if known else 0x8183
        head = struct.pack(">HHHHHH", struct.unpack(">H", m[:2])[0], flags, 1, 1 if addr else 0, 0, 0)
        ans = b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(addr) if addr else b""
        s.sendto(head + q + ans, a)
def web(port, word):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = (word + "\\n").encode()
            self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    ThreadingHTTPServer(("${WEB_IP}", port), H).serve_forever()
threading.Thread(target=dns, daemon=True).start()
threading.Thread(target=web, args=(8080, "web-ok"), daemon=True).start()
threading.Thread(target=web, args=(8081, "web-8081"), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`;

/**
 * In the guest: one curl (through the proxy the guest's environment names, unless `direct`);
 * prints `TAG code ms body-first-line`.
 */
function probe(tag: string, url: string, direct = false): string {
  const np = direct ? `--noproxy '*' ` : '';
  return `s=$(date +%s%N); out=$(curl -sS ${np}--max-time 8 -o /tmp/body -w '%{http_code}' ${url} 2>/tmp/err); b=$(head -n1 /tmp/body 2>/dev/null; head -c 200 /tmp/err | tr '\\n' ' '); echo "${tag} \${out:-000} $(( ($(date +%s%N) - s) / 1000000 )) $b"`;
}

function results(out: string): Record<string, { code: string; ms: number; text: string }> {
  const o: Record<string, { code: string; ms: number; text: string }> = {};
  for (const l of out.split('\n')) {
    const m = /^(\S+) (\d{3}) (\d+) ?(.*)$/.exec(l.trim());
    if (m) o[m[1]!] = { code: m[2]!, ms: Number(m[3]), text: m[4] ?? '' };
  }
  return o;
}

async function inGuest(name: string, script: string): Promise<string> {
  const r = await banger(['vm', 'exec', name, '--', 'bash', '-c', script], { timeoutMs: 120_000 });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

/** The VM's events once `pred` holds for them (the proxy records as it answers; allow a moment). */
async function egressEvents(name: string, pred: (r: VmEgressResult) => boolean): Promise<VmEgressResult> {
  let r = await bangerJson<VmEgressResult>(['vm', 'egress', name, '--json']);
  for (let i = 0; i < 20 && !pred(r); i++) {
    await new Promise((res) => setTimeout(res, 250));
    r = await bangerJson<VmEgressResult>(['vm', 'egress', name, '--json']);
  }
  return r;
}

beforeAll(async () => {
  const netns = smokeEnv().netns;
  const upstream = upstreamFrom(readFileSync('/etc/resolv.conf', 'utf8'), ['127.0.0.1']) ?? '10.255.255.53';
  const sh = async (...argv: string[]): Promise<void> => {
    const r = await inNetns(netns, argv);
    if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
  };
  await inNetns(netns, ['ip', 'link', 'del', LINK]);
  await sh('ip', 'link', 'add', LINK, 'type', 'veth', 'peer', 'name', `${LINK}1`);
  for (const a of [`${upstream}/32`, `${WEB_IP}/32`]) await sh('ip', 'addr', 'add', a, 'dev', LINK);
  await sh('ip', 'link', 'set', LINK, 'up');
  await sh('ip', 'link', 'set', `${LINK}1`, 'up');
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
  await inNetns(smokeEnv().netns, ['ip', 'link', 'del', LINK]);
});

async function runVm(name: string, egress: string): Promise<Vm> {
  made.push(name);
  const run = await bangerJson<{ vm: Vm }>([
    'vm',
    'run',
    '-d',
    '--network',
    'user',
    '--egress',
    egress,
    '--name',
    name,
  ]);
  return run.vm;
}

describe('egress policy of user-mode VMs', () => {
  it('egress_user_none: nothing leaves the guest, root or not; every try is a denial with the create op id', async () => {
    const name = uniqueName('egn');
    const vm = await runVm(name, 'none');
    expect(vm.egress).toEqual({ mode: 'none', rules: [] });
    expect(vm.egress_op_id).toMatch(/^op-[0-9a-f]+$/);

    const out = results(
      await inGuest(
        name,
        [
          // What a program does with the environment banger sets: the proxy refuses.
          probe('proxy', `http://${WEB}:8080/`),
          // Straight out: no default route, fails at once.
          probe('direct', `http://${WEB_IP}:8080/`, true),
          // Root adds the route: QEMU (restrict=on) forwards nothing but the proxy.
          'ip route add default via 10.0.2.2 dev eth0 2>/dev/null || true',
          probe('routed', `http://${WEB_IP}:8080/`, true),
          probe('hostlo', 'http://10.0.2.2:22/', true),
        ].join('; '),
      ),
    );
    expect(out.proxy?.code, JSON.stringify(out)).toBe('403');
    expect(out.proxy?.text).toMatch(/banger egress/);
    expect(out.proxy!.ms).toBeLessThan(3000);
    expect(out.direct?.code).toBe('000');
    expect(out.direct!.ms, 'direct fails fast').toBeLessThan(3000);
    expect(out.routed?.code).toBe('000');
    expect(out.hostlo?.code).toBe('000');

    const ev = await egressEvents(name, (r) => r.events.some((e) => e.host === WEB));
    expect(ev.egress.mode).toBe('none');
    const denial = ev.events.find((e) => e.host === WEB && e.port === 8080);
    expect(denial, JSON.stringify(ev.events)).toMatchObject({ verdict: 'deny', op_id: vm.egress_op_id });
    const logged = daemonLogRecords().filter((l) => l.msg === 'egress deny' && l.vm === name);
    expect(logged.some((l) => String(l.dest).startsWith(`${WEB}:8080`) && l.op_id === vm.egress_op_id)).toBe(
      true,
    );
  });

  it('egress_user_allow: allow=NAME:PORT reaches it through the proxy, nothing else; vm set changes it live', async () => {
    const name = uniqueName('ega');
    const vm = await runVm(name, `allow=${WEB}:8080`);
    expect(vm.egress.rules.map((r) => r.text)).toEqual([`${WEB}:8080`]);

    const out = results(
      await inGuest(
        name,
        [
          probe('ok', `http://${WEB}:8080/`),
          probe('othername', `http://${OTHER}:8080/`),
          probe('otherport', `http://${WEB}:8081/`),
          probe('rawip', `http://${WEB_IP}:8080/`),
          probe('direct', `http://${WEB_IP}:8080/`, true),
        ].join('; '),
      ),
    );
    expect(out.ok?.code, JSON.stringify(out)).toBe('200');
    expect(out.ok?.text).toBe('web-ok');
    for (const k of ['othername', 'otherport', 'rawip']) {
      expect(out[k]?.code, k).toBe('403');
      expect(out[k]?.text, k).toMatch(/banger egress/);
      expect(out[k]!.ms, `${k} fails fast`).toBeLessThan(3000);
    }
    expect(out.direct?.code).toBe('000');
    expect(out.direct!.ms, 'direct fails fast').toBeLessThan(3000);

    const ev = await egressEvents(name, (r) => r.events.some((e) => e.host === OTHER));
    expect(ev.events.find((e) => e.verdict === 'allow')).toMatchObject({
      host: WEB,
      port: 8080,
      rule: `${WEB}:8080`,
      op_id: vm.egress_op_id,
    });
    expect(ev.events.filter((e) => e.verdict === 'deny').map((e) => `${e.host}:${e.port}`)).toEqual(
      expect.arrayContaining([`${OTHER}:8080`, `${WEB}:8081`, `${WEB_IP}:8080`]),
    );

    // Between two restricted policies a user-mode VM changes at once, under the set's op id.
    const set = await banger(['vm', 'set', name, '--egress', 'none']);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout + set.stderr).toMatch(/egress none .*enforced now/);
    const shown = await bangerJson<Vm>(['vm', 'show', name, '--json']);
    expect(shown.egress.mode).toBe('none');
    expect(shown.egress_op_id).not.toBe(vm.egress_op_id);
    const after = results(await inGuest(name, probe('ok', `http://${WEB}:8080/`)));
    expect(after.ok?.code).toBe('403');
    const ev2 = await egressEvents(name, (r) => r.events.at(-1)?.op_id === shown.egress_op_id);
    expect(ev2.events.at(-1)).toMatchObject({ verdict: 'deny', host: WEB, op_id: shown.egress_op_id });
  });
});
