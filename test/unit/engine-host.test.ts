// Host-facing helpers without a real VMM: /proc parsing, handles.json, the cpio writer, and the
// QEMU driver's reattach decisions against a fake /proc and a fake QMP monitor.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildCpio, busyboxInitramfs } from '../../src/engine/cpio.ts';
import type { HandleRecord } from '../../src/engine/driver.ts';
import { readHandles, writeHandles } from '../../src/engine/handles.ts';
import {
  createProcFs,
  isSameLiveProcess,
  parseProcStat,
  runsProgram,
  type ProcFs,
  type ProcStat,
} from '../../src/engine/proc.ts';
import { mapRunState, QemuDriver } from '../../src/engine/qemu.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-host-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('parseProcStat', () => {
  it('handles spaces and parens in comm', () => {
    const fields = ['S', '1', ...Array(17).fill('0'), '123456', '0'];
    const st = parseProcStat(`4242 (qemu (x) y) ${fields.join(' ')}`);
    expect(st).toEqual({ pid: 4242, comm: 'qemu (x) y', state: 'S', ppid: 1, startTime: 123456 });
  });
  it('rejects garbage', () => {
    expect(parseProcStat('nonsense')).toBeNull();
  });
  it('reads this process from the real /proc', () => {
    const fs = createProcFs();
    const me = fs.stat(process.pid);
    expect(me?.pid).toBe(process.pid);
    expect(isSameLiveProcess(fs, process.pid, me!.startTime)).toBe(true);
    expect(isSameLiveProcess(fs, process.pid, me!.startTime + 1)).toBe(false);
    expect(fs.bootId()).toMatch(/^[0-9a-f-]{36}$/);
    expect(fs.cmdline(process.pid)?.[0]).toContain('node');
  });
});

describe('handles.json', () => {
  const rec: HandleRecord = {
    version: 1,
    driver: 'qemu',
    id: 'vm1',
    pid: 10,
    startTime: 20,
    bootId: 'b',
    binary: 'qemu-system-x86_64',
    argvHash: 'h',
    startedAt: '2026-01-01T00:00:00.000Z',
    files: {
      vmDir: '/v',
      handles: '/v/handles.json',
      stderrLog: '/v/qemu.stderr',
      serialLog: '/v/serial.log',
    },
    sshHostPort: 2222,
  };
  it('round-trips', async () => {
    await writeHandles(dir, rec);
    expect(await readHandles(dir)).toEqual({ ok: true, record: rec });
  });
  it('missing vs invalid', async () => {
    expect(await readHandles(dir)).toEqual({ ok: false, reason: 'missing' });
    writeFileSync(join(dir, 'handles.json'), '{"version": 2}');
    expect(await readHandles(dir)).toMatchObject({ ok: false, reason: 'invalid' });
    writeFileSync(join(dir, 'handles.json'), '{not json');
    expect(await readHandles(dir)).toMatchObject({ ok: false, reason: 'invalid' });
    writeFileSync(join(dir, 'handles.json'), JSON.stringify({ ...rec, pid: -1 }));
    expect(await readHandles(dir)).toMatchObject({ ok: false, reason: 'invalid', detail: 'bad pid' });
  });
});

describe('cpio (newc)', () => {
  it('is deterministic and 4-byte aligned, ending with the trailer', () => {
    const a = buildCpio([
      { path: 'bin', type: 'dir' },
      { path: '/bin/hello', type: 'file', data: 'hi\n', mode: 0o644 },
      { path: 'bin/sh', type: 'symlink', data: 'busybox' },
    ]);
    expect(
      a.equals(
        buildCpio([
          { path: 'bin', type: 'dir' },
          { path: '/bin/hello', type: 'file', data: 'hi\n', mode: 0o644 },
          { path: 'bin/sh', type: 'symlink', data: 'busybox' },
        ]),
      ),
    ).toBe(true);
    expect(a.length % 4).toBe(0);
    expect(a.subarray(0, 6).toString()).toBe('070701');
    expect(a.toString('latin1')).toContain('TRAILER!!!');
  });

  it('is readable by cpio(1) when installed', () => {
    let have = true;
    try {
      execFileSync('cpio', ['--version'], { stdio: 'ignore' });
    } catch {
      have = false;
    }
    if (!have) return;
    const archive = busyboxInitramfs(Buffer.from('not really busybox'), 'echo hi\n', [
      { path: 'etc', type: 'dir' },
      { path: 'etc/motd', type: 'file', data: 'hello', mode: 0o600 },
    ]);
    const listing = execFileSync('cpio', ['-itv', '--quiet'], { input: archive, encoding: 'utf8' });
    expect(listing).toMatch(/-rwxr-xr-x .* init/);
    expect(listing).toMatch(/lrwxrwxrwx .* bin\/sh -> busybox/);
    expect(listing).toMatch(/-rw------- .* 5 .* etc\/motd/);
    const out = join(dir, 'x');
    mkdirSync(out);
    execFileSync('cpio', ['-idm', '--quiet'], { input: archive, cwd: out });
    expect(execFileSync('cat', [join(out, 'init')], { encoding: 'utf8' })).toBe(
      '#!/bin/busybox sh\necho hi\n',
    );
  });
});

describe('mapRunState', () => {
  it.each([
    ['running', 'running'],
    ['paused', 'paused'],
    ['inmigrate', 'paused'],
    ['postmigrate', 'paused'],
    ['prelaunch', 'paused'],
    ['shutdown', 'shutdown'],
    ['guest-panicked', 'shutdown'],
  ])('%s -> %s', (qemu, ours) => expect(mapRunState(qemu)).toBe(ours));
});

/** A fake /proc with one process. */
function fakeProc(p: (Partial<ProcStat> & { cmdline?: string[] }) | null, bootId = 'boot-1'): ProcFs {
  return {
    stat: (pid) =>
      p && pid === (p.pid ?? 100)
        ? { pid, comm: 'qemu-system-x86', state: 'S', ppid: 1, startTime: 555, ...p }
        : null,
    cmdline: (pid) => (p && pid === (p.pid ?? 100) ? (p.cmdline ?? ['/usr/bin/qemu-system-x86_64']) : null),
    bootId: () => bootId,
  };
}

describe('runsProgram', () => {
  it('matches comm (15 chars) or argv[0]', () => {
    expect(runsProgram(fakeProc({}), 100, 'qemu-system')).toBe(true);
    expect(
      runsProgram(
        fakeProc({ comm: 'MainThread', cmdline: ['/opt/bin/qemu-system-x86_64'] }),
        100,
        'qemu-system',
      ),
    ).toBe(true);
    expect(runsProgram(fakeProc({ comm: 'bash', cmdline: ['bash'] }), 100, 'qemu-system')).toBe(false);
  });
});

function qmpServer(path: string, name: string): Promise<Server> {
  const server = createServer((s) => {
    s.on('error', () => {});
    s.write(
      JSON.stringify({
        QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, capabilities: [] },
      }) + '\n',
    );
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string };
        buf = buf.slice(nl + 1);
        const ret =
          cmd.execute === 'query-name'
            ? { name }
            : cmd.execute === 'query-status'
              ? { status: 'running', running: true }
              : {};
        s.write(JSON.stringify({ return: ret, id: cmd.id }) + '\n');
      }
    });
  });
  return new Promise((r) => server.listen(path, () => r(server)));
}

describe('QemuDriver.reattach decisions', () => {
  async function record(over: Partial<HandleRecord> = {}): Promise<void> {
    await writeHandles(dir, {
      version: 1,
      driver: 'qemu',
      id: 'vm1',
      pid: 100,
      startTime: 555,
      bootId: 'boot-1',
      binary: 'qemu-system-x86_64',
      argvHash: 'h',
      startedAt: new Date().toISOString(),
      files: {
        vmDir: dir,
        handles: join(dir, 'handles.json'),
        stderrLog: join(dir, 'qemu.stderr'),
        serialLog: join(dir, 'serial.log'),
        qmpSocket: join(dir, 'qmp.sock'),
      },
      ...over,
    });
  }

  it.each<[string, ProcFs]>([
    ['process gone', fakeProc(null)],
    ['pid reused (other start time)', fakeProc({ startTime: 999 })],
    ['zombie', fakeProc({ state: 'Z' })],
    ['pid runs something else', fakeProc({ comm: 'bash', cmdline: ['/bin/bash'] })],
    ['host rebooted', fakeProc({}, 'boot-2')],
  ])('null when %s', async (_n, procfs) => {
    await record();
    expect(await new QemuDriver({ procfs }).reattach(dir)).toBeNull();
  });

  it('null without handles.json, or with a Firecracker one', async () => {
    expect(await new QemuDriver({ procfs: fakeProc({}) }).reattach(dir)).toBeNull();
    await record({ driver: 'firecracker' });
    expect(await new QemuDriver({ procfs: fakeProc({}) }).reattach(dir)).toBeNull();
  });

  it('alive and ours, QMP answers with our name: a live handle', async () => {
    await record();
    const server = await qmpServer(join(dir, 'qmp.sock'), 'vm1');
    try {
      const h = await new QemuDriver({ procfs: fakeProc({}) }).reattach(dir);
      expect(h?.pid).toBe(100);
      expect(await h!.status()).toBe('running');
      await h!.release();
    } finally {
      server.close();
    }
  });

  it('QMP names another VM: identity_mismatch', async () => {
    await record();
    const server = await qmpServer(join(dir, 'qmp.sock'), 'vm2');
    try {
      await expect(new QemuDriver({ procfs: fakeProc({}) }).reattach(dir)).rejects.toMatchObject({
        code: 'identity_mismatch',
      });
    } finally {
      server.close();
    }
  });

  it('alive but QMP silent: a handle reporting unresponsive (so the caller can still kill it)', async () => {
    await record();
    const h = await new QemuDriver({ procfs: fakeProc({}) }).reattach(dir, { timeoutMs: 100 });
    expect(h).not.toBeNull();
    expect(h!.qmp).toBeUndefined();
    expect(await h!.status()).toBe('unresponsive');
    await h!.release();
  });
});
