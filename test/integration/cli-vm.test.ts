// bin/banger's vm/image/kernel commands as a user runs them, against a fake daemon in this process
// (the real RPC server with a scripted dispatcher). Needs `npm run build` first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Image, Kernel, Operation, Vm } from '../../generated/types.gen.ts';
import { shortTempDir } from '../helpers/tmp.ts';
import { startFakeDaemon, type FakeDaemon } from './cli-fake-daemon.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BANGER = join(ROOT, 'bin', 'banger');
const built = existsSync(join(ROOT, 'dist/src/cli/commands/vm/create.js'));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run bin/banger without blocking this process (the fake daemon lives here). */
function banger(
  args: string[],
  opts: {
    env?: NodeJS.ProcessEnv;
    onStderr?: (chunk: string, kill: (sig: NodeJS.Signals) => void) => void;
  } = {},
): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(BANGER, args, {
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      opts.onStderr?.(stderr, (sig) => p.kill(sig));
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe.skipIf(!built)('banger vm/image/kernel against a fake daemon', { timeout: 60_000 }, () => {
  const tmp = shortTempDir('bgcli');
  let d: FakeDaemon;
  const s = (): string[] => ['--socket', d.sock];

  beforeAll(async () => {
    d = await startFakeDaemon(tmp.dir);
  });
  afterAll(async () => {
    await d.close();
    tmp.cleanup();
  });

  it('vm create shows plain progress step by step and ends with how to connect', async () => {
    const r = await banger([...s(), 'vm', 'create', '--name', 'new-one', '--vcpu', '4', '--memory', '2G']);
    expect(r.code).toBe(0);
    // progress is on stderr, one line per transition, with elapsed time and step durations
    expect(r.stderr).toMatch(/^Creating new-one\n/);
    expect(r.stderr).toMatch(/^\[\s+\d+\.\ds\] prepare_disk done \(120 ms\)$/m);
    expect(r.stderr).toMatch(/^\[\s+\d+\.\ds\] wait_ssh done \(300 ms\)$/m);
    expect(r.stderr).toMatch(/^\[\s+\d+\.\ds\] succeeded$/m);
    const order = ['resolve_image', 'prepare_disk', 'prepare_seed', 'network', 'boot', 'wait_ssh'].map((n) =>
      r.stderr.indexOf(`${n} done`),
    );
    expect(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!))).toBe(true);
    // stdout: only the result
    expect(r.stdout).toMatch(
      /^✓ new-one is running \(4 vCPU, 2\.0 GiB RAM, 4\.0 GiB disk, user 127\.0\.0\.1:42022\)/,
    );
    expect(r.stdout).toContain('connect: banger vm ssh new-one');
    const begin = d.calls.find(
      (c) => c.method === 'vm.create.begin' && (c.params as { name?: string }).name === 'new-one',
    );
    expect(begin?.params).toEqual({ name: 'new-one', vcpus: 4, memory_mib: 2048 });
  });

  it('a failed create names the failed step, points at op trace, ends with the op id and maps the exit code', async () => {
    const r = await banger([...s(), 'vm', 'create', '--name', 'no-image', '--image', 'nope']);
    expect(r.code).toBe(3); // not_found
    expect(r.stderr).toMatch(/resolve_image failed \(40 ms\): image "nope" not found/);
    expect(r.stderr).toContain(
      '✗ create of no-image failed at step resolve_image after 40 ms: image "nope" not found',
    );
    // The failed create was undone, record included: `vm logs` would answer not found.
    expect(r.stderr).not.toContain('vm logs');
    const opId = /\((op-[0-9a-f]{6,})\)$/m.exec(r.stderr)?.[1];
    expect(r.stderr).toContain(
      `  the create was undone; its boot console and log lines: banger op trace ${opId}\n`,
    );
    expect(r.stderr).toMatch(/^error: image "nope" not found \(op-[0-9a-f]{6,}\)$/m);
    expect(r.stdout).toBe('');

    const b = await banger([...s(), 'vm', 'create', '--name', 'boot-fails']);
    expect(b.code).toBe(1); // operation_failed
    expect(b.stderr).toMatch(/boot failed \(200 ms\): qemu exited with status 1/);
    expect(b.stderr).toMatch(/prepare_disk undone/);
    expect(b.stderr).toMatch(/^error: qemu exited with status 1 \(op-[0-9a-f]+\)$/m);
  });

  it('vm create --json prints {operation, vm}; bad flags are refused before any call', async () => {
    const r = await banger([...s(), 'vm', 'create', '--name', 'json-one', '--no-start', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { operation: Operation; vm: Vm };
    expect(j.operation.state).toBe('succeeded');
    expect(j.vm.name).toBe('json-one');
    expect(j.vm.state).toBe('stopped');
    expect(d.calls.find((c) => (c.params as { name?: string }).name === 'json-one')?.params).toEqual({
      name: 'json-one',
      start: false,
    });

    const before = d.calls.length;
    const bad = await banger([...s(), 'vm', 'create', '--vcpu', '0']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--vcpu/);
    const size = await banger([...s(), 'vm', 'create', '--disk-size', 'lots']);
    expect(size.code).not.toBe(0);
    expect(size.stderr).toMatch(/"lots" is not a size/);
    const name = await banger([...s(), 'vm', 'create', '--name', 'Bad_Name']);
    expect(name.code).toBe(2);
    expect(name.stderr).toMatch(/invalid VM name "Bad_Name"/);
    expect(d.calls.length).toBe(before);
  });

  it('vm create -d returns at once with the op id', async () => {
    const r = await banger([...s(), 'vm', 'create', '--name', 'detached', '-d']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^creating detached in the background \(op-[0-9a-f]+\)/);
    expect(r.stderr).toBe('');
  });

  it('Ctrl-C during vm create cancels it and exits 130', async () => {
    let sent = false;
    const r = await banger([...s(), 'vm', 'create', '--name', 'slow-one'], {
      onStderr: (all, kill) => {
        if (!sent && all.includes('wait_ssh started')) {
          sent = true;
          kill('SIGINT');
        }
      },
    });
    expect(sent).toBe(true);
    expect(r.code).toBe(130);
    expect(d.calls.some((c) => c.method === 'vm.create.cancel')).toBe(true);
    expect(r.stderr).toMatch(/canceling op-/);
    expect(r.stderr).toMatch(/prepare_disk undone/);
    expect(r.stderr).toMatch(/^error: create of slow-one canceled; what it had done was undone \(op-/m);
  });

  it('vm list: a table; --json: the array; ps is an alias', async () => {
    const r = await banger([...s(), 'vm', 'list']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATE\s+IMAGE\s+VCPU\s+MEM\s+DISK\s+NETWORK\s+CREATED$/);
    expect(r.stdout).toMatch(
      /^calm-otter\s+running\s+debian-bookworm\s+2\s+1\.0 GiB\s+4\.0 GiB\s+user 127\.0\.0\.1:42022\s+\S+/m,
    );
    const j = JSON.parse((await banger([...s(), 'vm', 'list', '--json'])).stdout) as Vm[];
    expect(Array.isArray(j)).toBe(true);
    expect(j.map((v) => v.name)).toContain('calm-otter');
    const ps = await banger([...s(), 'ps', '--state', 'running']);
    expect(ps.code).toBe(0);
    expect(ps.stdout).toContain('calm-otter');
    expect(ps.stdout).not.toContain('old-otter');
  });

  it('vm show prints the fields; a missing VM exits 3 with the op id', async () => {
    const r = await banger([...s(), 'vm', 'show', 'calm-otter']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^state\s+running \(pid 41234, kvm\)$/m);
    expect(r.stdout).toMatch(/^memory\s+1\.0 GiB$/m);
    const miss = await banger([...s(), 'vm', 'show', 'ghost']);
    expect(miss.code).toBe(3);
    expect(miss.stderr).toMatch(/^error: vm "ghost" not found \(op-[0-9a-f]+\)\n$/);
  });

  it('vm stop a b where one fails: both lines, non-zero exit', async () => {
    d.vms.set('stop-a', { ...d.vms.get('calm-otter')!, name: 'stop-a' });
    const r = await banger([...s(), 'vm', 'stop', 'stop-a', 'ghost']);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/^stop-a: stopped cleanly \(\d+ ms\)$/m);
    // The daemon's message names the VM, so the line does not prefix it again.
    expect(r.stderr).toMatch(/^error: vm "ghost" not found \(op-[0-9a-f]+\)$/m);

    // mixed failure codes fall back to 1; --json lists every outcome
    d.vms.set('stop-b', { ...d.vms.get('calm-otter')!, name: 'stop-b' });
    const j = await banger([...s(), 'vm', 'stop', 'stop-b', 'ghost', 'old-otter', '--json']);
    expect(j.code).toBe(1);
    const out = JSON.parse(j.stdout) as {
      name: string;
      ok: boolean;
      error?: { code: string; op_id: string };
    }[];
    expect(out.map((o) => [o.name, o.ok, o.error?.code])).toEqual([
      ['stop-b', true, undefined],
      ['ghost', false, 'not_found'],
      ['old-otter', false, 'not_running'],
    ]);
    expect(out[1]!.error!.op_id).toMatch(/^op-/);
  });

  it('vm stop reports a forced stop; kill, start, restart, set, delete say what they did', async () => {
    d.vms.set('stubborn', { ...d.vms.get('calm-otter')!, name: 'stubborn' });
    const st = await banger([...s(), 'vm', 'stop', 'stubborn', '--timeout', '5']);
    expect(st.stdout).toMatch(/^stubborn: stopped, forced: the guest did not power off within 5 s/m);
    expect(d.calls.at(-1)?.params).toEqual({ name: 'stubborn', timeout_ms: 5000 });

    const set = await banger([...s(), 'vm', 'set', 'stubborn', '--vcpu', '4', '--memory', '4096']);
    expect(set.code).toBe(0);
    expect(set.stdout).toBe('stubborn: 4 vCPU, 4.0 GiB RAM (takes effect at the next start)\n');
    const none = await banger([...s(), 'vm', 'set', 'stubborn']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/give --vcpu and\/or --memory/);

    const start = await banger([...s(), 'vm', 'start', 'stubborn']);
    expect(start.stdout).toMatch(/^stubborn: started in \d+ ms \(user 127\.0\.0\.1:42022\)/);
    const again = await banger([...s(), 'vm', 'start', 'stubborn']);
    expect(again.code).toBe(6); // conflict
    const rs = await banger([...s(), 'vm', 'restart', 'stubborn']);
    expect(rs.stdout).toMatch(/^stubborn: restarted in \d+ ms \(boot \d+\)$/m);
    const k = await banger([...s(), 'vm', 'kill', 'stubborn', '--signal', 'TERM']);
    expect(k.stdout).toBe('stubborn: sent SIGTERM to the VMM; now stopped\n');
    expect(d.calls.at(-1)?.params).toEqual({ name: 'stubborn', signal: 'TERM' });
    const del = await banger([...s(), 'vm', 'delete', '-f', 'stubborn']);
    expect(del.code).toBe(0);
    expect(del.stdout).toMatch(/^stubborn: deleted/);
    expect(d.vms.has('stubborn')).toBe(false);
  });

  it('vm ssh execs ssh with the right argv and quotes the remote command; exit code is the command’s', async () => {
    const binDir = join(tmp.dir, 'fakebin');
    const log = join(tmp.dir, 'ssh-argv.json');
    mkdirSync(binDir, { recursive: true });
    // A fake ssh: records its argv, then runs the remote command string with sh -c the way sshd
    // hands it to the login shell, and exits with its status.
    writeFileSync(
      join(binDir, 'ssh'),
      `#!${process.execPath}
const fs = require('node:fs');
const argv = process.argv.slice(2);
fs.writeFileSync(${JSON.stringify(log)}, JSON.stringify(argv));
const dd = argv.indexOf('--');
const cmd = argv.slice(dd + 2).join(' ');
if (!cmd) process.exit(0);
const r = require('node:child_process').spawnSync('sh', ['-c', cmd], { stdio: 'inherit' });
process.exit(r.status ?? 255);
`,
    );
    chmodSync(join(binDir, 'ssh'), 0o755);
    const env = { PATH: `${binDir}:${process.env.PATH ?? ''}` };

    const r = await banger([...s(), 'vm', 'ssh', 'calm-otter', '--', 'sh', '-c', 'exit 42'], { env });
    expect(r.code).toBe(42);
    const argv = JSON.parse(readFileSync(log, 'utf8')) as string[];
    expect(argv).toEqual([
      '-i',
      '/state/ssh/id_ed25519',
      '-p',
      '42022',
      '-o',
      'UserKnownHostsFile=/state/ssh/known_hosts',
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'LogLevel=ERROR',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      'HostKeyAlias=calm-otter.vm',
      '--',
      'root@127.0.0.1',
      "sh -c 'exit 42'",
    ]);

    // arguments arrive intact: spaces, quotes, $VARS, globs, empty strings, repeated words
    const words = ['a b', "it's", '$HOME', '*', '', 'x', 'x', '--json'];
    const echo = await banger([...s(), 'vm', 'ssh', 'calm-otter', '--', 'printf', '[%s]', ...words], { env });
    expect(echo.code).toBe(0);
    expect(echo.stdout).toBe(words.map((w) => `[${w}]`).join(''));

    // interactive (no command): no BatchMode, no command word; not a TTY here, so no -t
    const login = await banger([...s(), 'vm', 'ssh', 'calm-otter'], { env });
    expect(login.code).toBe(0);
    const largv = JSON.parse(readFileSync(log, 'utf8')) as string[];
    expect(largv).not.toContain('BatchMode=yes');
    expect(largv).not.toContain('-t');
    expect(largv.at(-1)).toBe('root@127.0.0.1');

    // -t gives a command a terminal
    await banger([...s(), 'vm', 'ssh', 'calm-otter', '-t', '--', 'true'], { env });
    expect(JSON.parse(readFileSync(log, 'utf8'))).toContain('-t');

    // ssh's own failure (255) is named as such
    const fail = await banger([...s(), 'vm', 'ssh', 'calm-otter', '--', 'exit', '255'], { env });
    expect(fail.code).toBe(255);
    expect(fail.stderr).toMatch(/ssh exited 255: ssh itself failed/);

    // a stopped VM: not_running → 5, and ssh never runs
    const stopped = await banger([...s(), 'vm', 'ssh', 'old-otter', '--', 'true'], { env });
    expect(stopped.code).toBe(5);
    expect(stopped.stderr).toMatch(/^error: vm "old-otter" is not running/);

    // words without -- are refused with a hint
    const noDd = await banger([...s(), 'vm', 'ssh', 'calm-otter', 'uname'], { env });
    expect(noDd.code).toBe(2);
    expect(noDd.stderr).toMatch(/put the command to run after --/);

    // --json prints the details and the command line instead of running it
    const j = await banger([...s(), 'vm', 'ssh', 'calm-otter', '--json', '--', 'ls', '-la'], { env });
    expect(j.code).toBe(0);
    const jo = JSON.parse(j.stdout) as { argv: string[]; port: number };
    expect(jo.port).toBe(42022);
    expect(jo.argv[0]).toBe('ssh');
    expect(jo.argv.at(-1)).toBe('ls -la');
  });

  it('vm ssh without an ssh binary says what to install and exits 127', async () => {
    // A PATH with only what bin/banger's wrapper needs (bash, readlink, dirname): no ssh.
    const dir = join(tmp.dir, 'nossh');
    mkdirSync(dir, { recursive: true });
    for (const tool of ['bash', 'readlink', 'dirname']) {
      const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
      symlinkSync(found, join(dir, tool));
    }
    const r = await banger([...s(), 'vm', 'ssh', 'calm-otter'], { env: { PATH: dir } });
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/ssh not found on PATH/);
  });

  it('vm logs prints the console raw; --json gives the record; -f streams until the VM stops', async () => {
    const r = await banger([...s(), 'vm', 'logs', 'calm-otter']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      '[    0.000000] Linux version 6.1.0-28-cloud-amd64\nWelcome to Debian!\ncalm-otter login: ',
    );
    const t = await banger([...s(), 'vm', 'logs', 'calm-otter', '--tail', '19']);
    expect(t.stdout).toBe('\ncalm-otter login: ');
    expect(t.stderr).toMatch(/earlier output left out/);
    const j = JSON.parse((await banger([...s(), 'vm', 'logs', 'calm-otter', '--json'])).stdout) as {
      data: string;
      path: string;
    };
    expect(j.path).toMatch(/serial\.log$/);
    const f = await banger([...s(), 'vm', 'logs', 'old-otter', '-f']);
    expect(f.code).toBe(0);
    expect(f.stdout).toMatch(/calm-otter login: root\nPassword: \nLinux calm-otter 6\.1\.0\nbye\n$/);
  });

  it('vm logs -f on a running VM stops at Ctrl-C', async () => {
    const r = await new Promise<Run>((resolve) => {
      const p = spawn(BANGER, [...s(), 'vm', 'logs', 'calm-otter', '-f'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (b: Buffer) => {
        stdout += b.toString();
        if (stdout.includes('Linux calm-otter')) p.kill('SIGINT');
      });
      p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      p.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    expect(r.code).toBe(130);
    expect(r.stderr).toBe('');
  });

  it('vm stats, health, prune', async () => {
    const st = await banger([...s(), 'vm', 'stats', 'calm-otter']);
    expect(st.stdout).toMatch(/^cpu\s+3\.1% \(12\.5 s CPU time\)$/m);
    expect(st.stdout).toMatch(/^memory\s+336\.0 MiB resident$/m);
    expect(st.stdout).toMatch(/^disk\s+50\.0 MiB used on the host, of 4\.0 GiB \(1\.2%\)$/m);
    expect(st.stdout).toMatch(/^uptime\s+1m0s$/m);
    const h = await banger([...s(), 'vm', 'health', 'calm-otter']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/✓ kernel up\n {2}✓ userspace up\n {2}✓ ssh ready/);
    const sick = await banger([...s(), 'vm', 'health', 'old-otter']);
    expect(sick.code).toBe(1);
    expect(sick.stdout).toMatch(/✗ ssh ready/);

    const dry = await banger([...s(), 'vm', 'prune', '--dry-run']);
    expect(dry.stdout).toMatch(/^would delete: .*old-otter/m);
    expect(d.vms.has('old-otter')).toBe(true);
    const noForce = await banger([...s(), 'vm', 'prune']);
    expect(noForce.code).toBe(2);
    expect(noForce.stderr).toMatch(/pass -f/);
    const pruned = await banger([...s(), 'vm', 'prune', '-f', '--json']);
    const pj = JSON.parse(pruned.stdout) as { deleted: string[]; kept: string[] };
    expect(pj.deleted).toContain('old-otter');
    expect(d.vms.has('old-otter')).toBe(false);
  });

  it('image build shows progress with step details and ends with the image', async () => {
    const r = await banger([...s(), 'image', 'build', 'bookworm-2', '--default']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^Building image bookworm-2\n/);
    expect(r.stderr).toMatch(/rootfs\.bootstrap started: unpacking 120\/300 packages/);
    expect(r.stderr).toMatch(/^\[\s+\d+\.\ds\] rootfs\.bootstrap done \(400 ms\)$/m);
    expect(r.stdout).toMatch(
      /^✓ image bookworm-2 ready in .*: 2\.0 GiB root filesystem, kernel 6\.1\.0-28-cloud-amd64, the default image$/m,
    );
    expect(d.calls.find((c) => c.method === 'image.build.begin')?.params).toEqual({
      name: 'bookworm-2',
      make_default: true,
    });

    const bad = await banger([...s(), 'image', 'build', 'broken']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(
      /failed at step rootfs\.bootstrap after 400 ms: debootstrap failed: exit status 1/,
    );
    expect(bad.stderr).toMatch(/^error: debootstrap failed: exit status 1 \(op-[0-9a-f]+\)$/m);

    const j = await banger([...s(), 'image', 'build', '--json']);
    const jo = JSON.parse(j.stdout) as { operation: Operation; image: Image };
    expect(jo.operation.kind).toBe('image.build');
    expect(jo.image.name).toBe('debian-bookworm');
  });

  it('image list/show/promote/import/delete', async () => {
    const l = await banger([...s(), 'image', 'list']);
    expect(l.stdout).toMatch(/^NAME\s+SOURCE\s+KERNEL\s+SIZE\s+VMS\s+CREATED$/m);
    expect(l.stdout).toMatch(/^debian-bookworm \*?\s+built\s+6\.1\.0-28-cloud-amd64\s+2\.0 GiB/m);
    const il = JSON.parse((await banger([...s(), 'image', 'list', '--json'])).stdout) as Image[];
    expect(il.some((i) => i.name === 'debian-bookworm')).toBe(true);
    expect((await banger([...s(), 'image', 'show', 'debian-bookworm'])).stdout).toMatch(
      /^kernel\s+debian-bookworm \(6\.1\.0-28-cloud-amd64\)$/m,
    );

    const files = ['rootfs.ext4', 'vmlinuz', 'initrd.img'];
    for (const f of files) writeFileSync(join(tmp.dir, f), 'x');
    const imp = await new Promise<Run>((resolve) => {
      const p = spawn(
        BANGER,
        [
          ...s(),
          'image',
          'import',
          '--name',
          'mine',
          '--rootfs',
          'rootfs.ext4',
          '--kernel',
          'vmlinuz',
          '--initrd',
          'initrd.img',
        ],
        { cwd: tmp.dir, env: { ...process.env, NO_COLOR: '1' } },
      );
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      p.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    expect(imp.stderr).toBe('');
    expect(imp.code).toBe(0);
    expect(imp.stdout).toMatch(/^imported image mine/);
    expect(d.calls.find((c) => c.method === 'image.import')?.params).toEqual({
      name: 'mine',
      rootfs: join(tmp.dir, 'rootfs.ext4'),
      kernel: join(tmp.dir, 'vmlinuz'),
      initrd: join(tmp.dir, 'initrd.img'),
    });
    const missing = await banger([
      ...s(),
      'image',
      'import',
      '--name',
      'x',
      '--rootfs',
      '/nope.ext4',
      '--kernel',
      '/nope',
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--rootfs \/nope\.ext4: no such file/);

    expect((await banger([...s(), 'image', 'promote', 'mine'])).stdout).toBe(
      'mine is now the default image\n',
    );
    const del = await banger([...s(), 'image', 'delete', 'mine', 'ghost-image']);
    expect(del.code).toBe(3);
    expect(del.stdout).toMatch(/^mine: image deleted/m);
    expect(del.stderr).toMatch(/^error: image "ghost-image" not found \(op-/m);
  });

  it('kernel list/show/import/delete', async () => {
    writeFileSync(join(tmp.dir, 'vmlinuz'), 'x');
    const kl = await banger([...s(), 'kernel', 'list']);
    expect(kl.stdout).toMatch(/^NAME\s+VERSION\s+SOURCE\s+INITRD\s+IMAGES\s+CREATED$/m);
    const kj = JSON.parse(
      (await banger([...s(), 'kernel', 'show', 'debian-bookworm', '--json'])).stdout,
    ) as Kernel;
    expect(kj.version).toBe('6.1.0-28-cloud-amd64');
    const ki = await banger([
      ...s(),
      'kernel',
      'import',
      '--name',
      'k2',
      '--kernel',
      join(tmp.dir, 'vmlinuz'),
      '--version',
      '6.12.1',
    ]);
    expect(ki.stdout).toBe('imported kernel k2 (6.12.1)\n');
    const kd = await banger([...s(), 'kernel', 'delete', 'debian-bookworm']);
    expect(kd.code).toBe(6);
    expect(kd.stderr).toMatch(/is booted by debian-bookworm/);
  });
});
