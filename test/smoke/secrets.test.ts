// Real-VM scenario of secrets (issue 16), all inside the smoke namespace: an HTTPS upstream
// `api.test` with its own test CA (given to banger by [egress] ca_bundles; api.test and
// other.test resolve to it through /etc/netns/<ns>/hosts) records request headers. A guest
// created with --secret API_KEY@api.test sends `Authorization: Bearer $API_KEY` through banger's
// egress proxy: api.test receives the real value, other.test is refused, and the real value is
// nowhere in the guest (environment, files, RAM) nor in banger's logs or CLI output.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Operation, Vm } from '../../generated/types.gen.ts';
import { EgressCa } from '../../src/egress/ca.ts';
import { banger, bangerJson, daemonLogRecords, restartSmokeDaemon, smokeEnv, uniqueName } from './harness.ts';

const VALUE = `sk-smoke-${randomBytes(20).toString('hex')}`;
// What the guest greps its files for: a prefix, so the search itself never puts the value into
// the guest (the full value in a file would contain it; the RAM scan looks for the full value).
const VALUE_PREFIX = VALUE.slice(0, 30);
const outputs: string[] = [];
let upstream: ChildProcess | undefined;
let hostsDir: string | undefined;
const vmName = uniqueName('sec');

async function run(
  args: string[],
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await banger(args, input !== undefined ? { input } : {});
  outputs.push(r.stdout, r.stderr);
  return r;
}

/** The guest's shell line through banger vm exec; its output is kept for the leak check. */
async function guest(line: string): Promise<string> {
  const r = await run(['vm', 'exec', vmName, '--', 'sh', '-c', line]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

/**
 * Search the QEMU process's writable memory for each needle: guest RAM is in it, so this is the
 * QMP pmemsave dump without a second QMP client (the daemon holds the VM's only QMP socket).
 * Chunks overlap by 256 bytes so a needle across a chunk edge is still found.
 */
function inProcessMemory(pid: number, needles: string[]): boolean[] {
  const found = needles.map(() => false);
  const bufs = needles.map((n) => Buffer.from(n));
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) rw/.exec(line);
      if (!m) continue;
      const start = BigInt(`0x${m[1]}`);
      const end = BigInt(`0x${m[2]}`);
      const chunk = 16 * 1024 * 1024;
      for (let at = start; at < end; at += BigInt(chunk)) {
        const len = Number(end - at < BigInt(chunk) ? end - at : BigInt(chunk));
        const b = Buffer.alloc(len + 256);
        let n = 0;
        try {
          n = readSync(fd, b, 0, len + (at + BigInt(len) < end ? 256 : 0), at);
        } catch {
          continue;
        }
        const view = b.subarray(0, n);
        bufs.forEach((needle, i) => {
          if (!found[i] && view.includes(needle)) found[i] = true;
        });
      }
    }
  } finally {
    closeSync(fd);
  }
  return found;
}

/** Whether a (large) file holds `needle`, read in overlapping chunks. */
function fileContains(path: string, needle: string): boolean {
  const n = Buffer.from(needle);
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(16 * 1024 * 1024 + n.length);
    for (let at = 0; ; at += 16 * 1024 * 1024) {
      const got = readSync(fd, b, 0, b.length, at);
      if (got <= 0) return false;
      if (b.subarray(0, got).includes(n)) return true;
      if (got < b.length) return false;
    }
  } finally {
    closeSync(fd);
  }
}

afterAll(async () => {
  await banger(['vm', 'delete', vmName]).catch(() => undefined);
  await banger(['secret', 'rm', 'API_KEY']).catch(() => undefined);
  upstream?.kill('SIGTERM');
  if (hostsDir) rmSync(hostsDir, { recursive: true, force: true });
});

describe('secrets', () => {
  it(
    'egress_secret: the proxy puts the real value in requests to the secret’s host only; the guest never holds it',
    { timeout: 900_000 },
    async () => {
      const env = smokeEnv();
      const dir = join(env.stateDir, '..', 'egress-smoke');
      mkdirSync(dir, { recursive: true });
      chmodSync(dir, 0o755);
      // The upstream's own CA and certificate (made with banger's CA code, in its own directory).
      const testCa = new EgressCa(join(dir, 'test-ca'));
      const caPem = await testCa.certPem();
      const caFile = join(dir, 'test-ca.pem');
      writeFileSync(caFile, caPem, { mode: 0o644 });
      chmodSync(join(dir, 'test-ca'), 0o755);
      const api = await testCa.leafFor('api.test');
      const other = await testCa.leafFor('other.test');
      const seenFile = join(dir, 'seen.jsonl');
      writeFileSync(seenFile, '');
      const server = join(dir, 'upstream.mjs');
      writeFileSync(
        server,
        `import { createServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import { appendFileSync } from 'node:fs';
const ctx = { 'api.test': createSecureContext(${JSON.stringify(api)}), 'other.test': createSecureContext(${JSON.stringify(other)}) };
createServer({ ...${JSON.stringify(api)}, SNICallback: (n, cb) => cb(null, ctx[n] ?? ctx['api.test']) }, (req, res) => {
  appendFileSync(${JSON.stringify(seenFile)}, JSON.stringify({ host: req.headers.host, url: req.url, authorization: req.headers.authorization ?? null }) + '\\n');
  res.end('upstream ok\\n');
}).listen(443, '127.0.0.1', () => console.log('listening'));
`,
      );
      upstream = spawn('ip', ['netns', 'exec', env.netns, process.execPath, server], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      await new Promise<void>((resolve, reject) => {
        upstream!.stdout!.once('data', () => resolve());
        upstream!.once('exit', (c) => reject(new Error(`upstream exited ${c}`)));
      });
      // Name resolution for the daemon's proxy (ip netns exec binds /etc/netns/<ns>/hosts over
      // /etc/hosts), and the test CA in its config; a restarted daemon picks up both.
      hostsDir = join('/etc/netns', env.netns);
      mkdirSync(hostsDir, { recursive: true });
      writeFileSync(join(hostsDir, 'hosts'), '127.0.0.1 localhost api.test other.test\n::1 localhost\n');
      const cfg = readFileSync(env.configFile, 'utf8');
      if (!cfg.includes('[egress]'))
        appendFileSync(env.configFile, `\n[egress]\nca_bundles = ["${caFile}"]\n`);
      await restartSmokeDaemon();

      const set = await run(['secret', 'set', 'API_KEY'], `${VALUE}\n`);
      expect(set.code, set.stderr).toBe(0);
      expect(set.stdout).toContain('API_KEY: secret stored');
      const created = await bangerJson<{ operation: Operation; vm: Vm }>([
        'vm',
        'create',
        '--name',
        vmName,
        '--secret',
        'API_KEY@api.test',
      ]);
      outputs.push(JSON.stringify(created));
      expect(created.vm.secrets).toEqual([{ name: 'API_KEY', hosts: ['api.test'] }]);

      // The guest holds a placeholder, and curl through the proxy reaches api.test with the value.
      const placeholder = (await guest('printf %s "$API_KEY"')).trim();
      expect(placeholder).toMatch(/^banger-secret-[0-9a-f]{32}$/);
      const ok = await guest(
        'curl -sS --max-time 30 -H "Authorization: Bearer $API_KEY" https://api.test/v1/models',
      );
      expect(ok).toBe('upstream ok\n');
      const seen = () =>
        readFileSync(seenFile, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { host: string; authorization: string | null });
      expect(seen()).toEqual([{ host: 'api.test', url: '/v1/models', authorization: `Bearer ${VALUE}` }]);

      // The same placeholder to another host: refused by the proxy, nothing reaches other.test.
      const refused = await guest(
        'curl -sS --max-time 30 -H "Authorization: Bearer $API_KEY" https://other.test/x; echo " exit=$?"',
      );
      expect(refused).toContain('banger egress: secret API_KEY not allowed for other.test');
      expect(seen()).toHaveLength(1);
      // The denial is in the daemon's log, under the create's op id.
      const deny = daemonLogRecords().find(
        (r) => r.msg === 'egress deny' && r.reason === 'secret API_KEY not allowed for other.test',
      );
      expect(deny).toMatchObject({ vm: vmName, op_id: created.operation.id });

      // Nowhere in the guest: environment, files, RAM.
      const look = await guest(
        `env; grep -r -l -F -e '${VALUE_PREFIX}' /etc /home /root /tmp /var/tmp 2>/dev/null; echo grep-done`,
      );
      expect(look).toContain(`API_KEY=${placeholder}`);
      expect(look).toContain('grep-done');
      expect(look).not.toContain(VALUE_PREFIX);
      // Nor on its disk: every block the guest wrote is in its copy-on-write overlay.
      expect(fileContains(join(env.stateDir, 'vms', created.vm.id, 'root.qcow2'), VALUE)).toBe(false);
      const shown = await bangerJson<Vm>(['vm', 'show', vmName]);
      expect(shown.pid).toBeGreaterThan(0);
      const [valueInRam, placeholderInRam] = inProcessMemory(shown.pid!, [VALUE, placeholder]);
      // The placeholder is found (the dump does cover the guest's memory); the value is not.
      expect(placeholderInRam).toBe(true);
      expect(valueInRam).toBe(false);

      // Nowhere in banger's logs or any CLI output.
      for (const f of [env.logFile, join(env.stateDir, '..', 'bangerd.stderr')])
        if (existsSync(f)) expect(readFileSync(f, 'utf8')).not.toContain(VALUE);
      for (const o of outputs) expect(o).not.toContain(VALUE);
    },
  );
});
