// Real-VM scenarios of secrets (issue 16), all inside the smoke namespace: an HTTPS upstream
// `api.test` with its own test CA (given to banger by [egress] ca_bundles; api.test and
// other.test resolve to it through /etc/netns/<ns>/hosts) records request headers. A guest
// created with --secret API_KEY@api.test sends `Authorization: Bearer $API_KEY` through banger's
// egress proxy (user mode: the guestfwd; bridged: the proxy's listener on the bridge address):
// api.test receives the real value, other.test is refused, and the real value is nowhere in the
// guest (environment, files, disk, a QMP `pmemsave` dump of its RAM) nor in banger's logs, CLI
// output or op traces.
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
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DaemonStatusResult, Operation, Vm } from '../../generated/types.gen.ts';
import { EgressCa } from '../../src/egress/ca.ts';
import { QmpClient } from '../../src/engine/qmp.ts';
import {
  banger,
  bangerJson,
  daemonLogRecords,
  helperLogRecords,
  restartSmokeDaemon,
  smokeEnv,
  uniqueName,
} from './harness.ts';

const VALUE = `sk-smoke-${randomBytes(20).toString('hex')}`;
// What the guest greps its files for: a prefix, so the search itself never puts the value into
// the guest (the full value in a file would contain it; the RAM scan looks for the full value).
const VALUE_PREFIX = VALUE.slice(0, 30);
const outputs: string[] = [];
const made: string[] = [];
let upstream: ChildProcess | undefined;
let hostsDir: string | undefined;
let seenFile = '';
/** The shared smoke config before this file added its [egress] table (restored in afterAll). */
let configBefore: string | undefined;

async function run(
  args: string[],
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await banger(args, input !== undefined ? { input } : {});
  outputs.push(r.stdout, r.stderr);
  return r;
}

/** The guest's shell line through banger vm exec; its output is kept for the leak check. */
async function guest(vm: string, line: string): Promise<string> {
  const r = await run(['vm', 'exec', vm, '--', 'sh', '-c', line]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

function seen(): { host: string; url: string; authorization: string | null }[] {
  return readFileSync(seenFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { host: string; url: string; authorization: string | null });
}

/** Whether a (large) file holds each needle, read in chunks that overlap by the longest needle. */
function fileContains(path: string, needles: string[]): boolean[] {
  const bufs = needles.map((n) => Buffer.from(n));
  const found = needles.map(() => false);
  const overlap = Math.max(...bufs.map((b) => b.length));
  const chunk = 16 * 1024 * 1024;
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(chunk + overlap);
    for (let at = 0; ; at += chunk) {
      const got = readSync(fd, b, 0, b.length, at);
      if (got <= 0) break;
      const view = b.subarray(0, got);
      bufs.forEach((n, i) => {
        if (!found[i] && view.includes(n)) found[i] = true;
      });
      if (got < b.length) break;
    }
  } finally {
    closeSync(fd);
  }
  return found;
}

/**
 * Guest-physical RAM through QMP `pmemsave`, into `file` (written by the VMM, as the daemon's
 * user). The daemon holds the VM's only QMP connection, so it is stopped meanwhile (its VMs run
 * on) and started again. A dump of guest-physical memory holds nothing of QEMU's own buffers.
 */
async function pmemsave(vmId: string, file: string): Promise<number> {
  let size = 0;
  await restartSmokeDaemon({}, async () => {
    const qmp = await QmpClient.connect(join(smokeEnv().stateDir, 'vms', vmId, 'qmp.sock'), {
      timeoutMs: 15_000,
    });
    try {
      const mem = await qmp.execute<{ 'base-memory': number }>('query-memory-size-summary');
      size = mem['base-memory'];
      // microvm keeps RAM below 3 GiB contiguous from 0; a larger guest would need the part
      // above 4 GiB dumped too.
      expect(size).toBeLessThanOrEqual(2 * 1024 ** 3);
      await qmp.execute('pmemsave', { val: 0, size, filename: file }, { timeoutMs: 300_000 });
    } finally {
      qmp.close();
    }
  });
  return size;
}

beforeAll(async () => {
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
  seenFile = join(dir, 'seen.jsonl');
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
  if (!cfg.includes('[egress]')) {
    configBefore = cfg;
    appendFileSync(env.configFile, `\n[egress]\nca_bundles = ["${caFile}"]\n`);
  }
  await restartSmokeDaemon();

  const set = await run(['secret', 'set', 'API_KEY'], `${VALUE}\n`);
  expect(set.code, set.stderr).toBe(0);
  expect(set.stdout).toContain('API_KEY: secret stored');
}, 300_000);

afterAll(async () => {
  try {
    for (const n of made) await banger(['vm', 'delete', n]).catch(() => undefined);
    await banger(['secret', 'rm', 'API_KEY']).catch(() => undefined);
    upstream?.kill('SIGTERM');
    if (hostsDir) rmSync(hostsDir, { recursive: true, force: true });
  } finally {
    // The config is shared: later smoke files must not run with this file's test CA trusted.
    if (configBefore !== undefined) {
      writeFileSync(smokeEnv().configFile, configBefore);
      configBefore = undefined;
      await restartSmokeDaemon();
    }
  }
});

/**
 * The value is in no log, CLI output or op trace: the daemon's and the helper's logs, and the
 * traces of the create and of every secret.* call (found by their RPC log lines).
 */
async function expectNoLeak(createOp: string): Promise<void> {
  const env = smokeEnv();
  const ops = new Set([createOp]);
  for (const r of daemonLogRecords())
    if (typeof r.method === 'string' && r.method.startsWith('secret.') && typeof r.op_id === 'string')
      ops.add(r.op_id);
  expect(ops.size).toBeGreaterThan(1);
  for (const op of ops) {
    const t = await run(['op', 'trace', op, '--json']);
    expect(t.code, t.stderr).toBe(0);
  }
  for (const f of [
    env.logFile,
    env.helperLogFile,
    join(env.stateDir, '..', 'bangerd.stderr'),
    join(env.stateDir, '..', 'bangerd-root.stderr'),
  ])
    if (existsSync(f)) expect(readFileSync(f, 'utf8'), f).not.toContain(VALUE);
  expect(JSON.stringify(helperLogRecords())).not.toContain(VALUE);
  for (const o of outputs) expect(o).not.toContain(VALUE);
}

describe('secrets', () => {
  it(
    'egress_secret: the proxy puts the real value in requests to the secret’s host only; the guest never holds it',
    { timeout: 900_000 },
    async () => {
      const env = smokeEnv();
      const vmName = uniqueName('sec');
      made.push(vmName);
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
      const placeholder = (await guest(vmName, 'printf %s "$API_KEY"')).trim();
      expect(placeholder).toMatch(/^banger-secret-[0-9a-f]{32}$/);
      const ok = await guest(
        vmName,
        'curl -sS --max-time 30 -H "Authorization: Bearer $API_KEY" https://api.test/v1/models',
      );
      expect(ok).toBe('upstream ok\n');
      const before = seen().length;
      expect(seen()).toContainEqual({
        host: 'api.test',
        url: '/v1/models',
        authorization: `Bearer ${VALUE}`,
      });

      // The same placeholder to another host: refused by the proxy, nothing reaches other.test.
      const refused = await guest(
        vmName,
        'curl -sS --max-time 30 -H "Authorization: Bearer $API_KEY" https://other.test/x; echo " exit=$?"',
      );
      expect(refused).toContain('banger egress: secret API_KEY not allowed for other.test');
      expect(seen()).toHaveLength(before);
      // The denial is in the daemon's log, under the create's op id.
      const deny = daemonLogRecords().find(
        (r) =>
          r.msg === 'egress deny' &&
          r.vm === vmName &&
          r.reason === 'secret API_KEY not allowed for other.test',
      );
      expect(deny).toMatchObject({ vm: vmName, op_id: created.operation.id });

      // Nowhere in the guest's environment or files.
      const look = await guest(
        vmName,
        `env; if grep -r -l -F -e '${VALUE_PREFIX}' /etc /home /root /tmp /var/tmp 2>/dev/null; then echo LEAK-FOUND; fi; echo grep-done`,
      );
      // grep -l prints file names, not contents: a file holding the value shows as LEAK-FOUND.
      expect(look).not.toContain('LEAK-FOUND');
      expect(look).toContain(`API_KEY=${placeholder}`);
      expect(look).toContain('grep-done');
      expect(look).not.toContain(VALUE_PREFIX);

      // A marker kept only in a guest tmpfs: the RAM dump must find it, which proves it covers
      // live guest memory. It travels to the guest as octal escapes, so the marker's own bytes
      // exist only where printf writes them. Then every dirty block goes to the disk (sync) and
      // the page cache is dropped (a tmpfs is not): what the dump holds is what RAM still holds.
      const marker = `banger-marker-${randomBytes(16).toString('hex')}`;
      const octal = [...Buffer.from(marker)].map((b) => `\\${b.toString(8).padStart(3, '0')}`).join('');
      const fsType = await guest(
        vmName,
        `mkdir -p /run/bsm && mount -t tmpfs -o size=1m bsm /run/bsm && printf '${octal}' > /run/bsm/m && ` +
          `sync && echo 3 > /proc/sys/vm/drop_caches && stat -f -c %T /run/bsm && wc -c < /run/bsm/m`,
      );
      expect(fsType.split('\n').map((l) => l.trim())).toEqual(['tmpfs', String(marker.length), '']);

      // Nor on its disk: every block the guest wrote is in its copy-on-write overlay (synced above).
      expect(fileContains(join(env.stateDir, 'vms', created.vm.id, 'root.qcow2'), [VALUE])).toEqual([false]);

      // Nor in its RAM: a QMP pmemsave dump of all guest-physical memory.
      const dump = join(env.stateDir, 'vms', created.vm.id, 'ram.dump');
      try {
        const size = await pmemsave(created.vm.id, dump);
        expect(statSync(dump).size).toBe(size);
        const [markerInRam, valueInRam] = fileContains(dump, [marker, VALUE]);
        expect(markerInRam, 'the tmpfs marker is in the dump (it covers live guest memory)').toBe(true);
        expect(valueInRam, 'the real value is nowhere in guest memory').toBe(false);
      } finally {
        rmSync(dump, { force: true });
      }
      // The VM ran on through the daemon's restart.
      expect((await guest(vmName, 'cat /run/bsm/m | wc -c')).trim()).toBe(String(marker.length));

      await expectNoLeak(created.operation.id);
    },
  );

  it(
    'bridged_secret: a bridged guest’s placeholder becomes the value for its host only',
    { timeout: 900_000 },
    async (ctx) => {
      const status = await bangerJson<DaemonStatusResult>(['daemon', 'status']);
      if (!status.helper.reachable) ctx.skip('needs the root helper (bridged networking)');
      const vmName = uniqueName('secb');
      made.push(vmName);
      const created = await bangerJson<{ operation: Operation; vm: Vm }>(
        ['vm', 'create', '--name', vmName, '--network', 'bridge', '--secret', 'API_KEY@api.test'],
        { timeoutMs: 900_000 },
      );
      outputs.push(JSON.stringify(created));
      expect(created.vm.secrets).toEqual([{ name: 'API_KEY', hosts: ['api.test'] }]);
      // The guest is pointed at the proxy's listener on the bridge (not user mode's guestfwd).
      const [placeholder, proxyUrl] = (await guest(vmName, 'printf "%s\\n%s\\n" "$API_KEY" "$HTTPS_PROXY"'))
        .trim()
        .split('\n');
      expect(placeholder).toMatch(/^banger-secret-[0-9a-f]{32}$/);
      expect(proxyUrl).toMatch(/^http:\/\/\d+\.\d+\.\d+\.\d+:\d+$/);
      expect(proxyUrl).not.toContain('10.0.2.100');

      const ok = await guest(
        vmName,
        'curl -sS --max-time 30 -H "Authorization: Bearer $API_KEY" https://api.test/v1/bridged',
      );
      expect(ok).toBe('upstream ok\n');
      expect(seen()).toContainEqual({
        host: 'api.test',
        url: '/v1/bridged',
        authorization: `Bearer ${VALUE}`,
      });
      const before = seen().length;

      const refused = await guest(
        vmName,
        'curl -sS --max-time 30 -H "Authorization: Bearer $API_KEY" https://other.test/b; echo " exit=$?"',
      );
      expect(refused).toContain('banger egress: secret API_KEY not allowed for other.test');
      expect(seen()).toHaveLength(before);
      const deny = daemonLogRecords().find(
        (r) =>
          r.msg === 'egress deny' &&
          r.vm === vmName &&
          r.reason === 'secret API_KEY not allowed for other.test',
      );
      expect(deny).toMatchObject({ vm: vmName, op_id: created.operation.id });
      const ev = await run(['vm', 'egress', vmName]);
      expect(ev.code, ev.stderr).toBe(0);
      expect(ev.stdout).toContain('other.test');

      const look = await guest(
        vmName,
        `env; if grep -r -l -F -e '${VALUE_PREFIX}' /etc /home /root /tmp /var/tmp 2>/dev/null; then echo LEAK-FOUND; fi; echo grep-done`,
      );
      // grep -l prints file names, not contents: a file holding the value shows as LEAK-FOUND.
      expect(look).not.toContain('LEAK-FOUND');
      expect(look).toContain('grep-done');
      expect(look).not.toContain(VALUE_PREFIX);
      await expectNoLeak(created.operation.id);
    },
  );
});
