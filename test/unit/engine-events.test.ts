// VMM events: QMP event decoding, exit reasons, the QEMU handle's event stream against a fake QMP
// monitor (unsubscribe, reconnect, exit, release), the failed-save diagnosis, and the fake
// driver's injectable events.
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { HandleRecord, VmLaunchSpec, VmmEvent } from '../../src/engine/driver.ts';
import { EngineError } from '../../src/engine/errors.ts';
import { decodeQmpEvent, describeExit, diskIndexOf, terminatingSignal } from '../../src/engine/events.ts';
import { FakeVmmDriver, FakeVmmHost } from '../../src/engine/fake.ts';
import type { EngineLogger } from '../../src/engine/log.ts';
import { saveErrPath, saveState } from '../../src/engine/migration.ts';
import type { ProcFs } from '../../src/engine/proc.ts';
import { ProcessWatch } from '../../src/engine/process.ts';
import { QemuHandle } from '../../src/engine/qemu.ts';
import { QmpClient } from '../../src/engine/qmp.ts';

interface Cmd {
  execute: string;
  id?: string;
  arguments?: Record<string, unknown>;
}

/** A small QMP monitor: greeting, capabilities, scripted replies, events on demand. */
class FakeQmp {
  readonly server: Server;
  readonly received: Cmd[] = [];
  readonly clients: Socket[] = [];
  connections = 0;
  status = 'running';
  handler: (c: Cmd) => unknown = (c) =>
    c.execute === 'query-status' ? { status: this.status, running: this.status === 'running' } : {};
  readonly path: string;

  constructor(path: string) {
    this.path = path;
    this.server = createServer((sock) => this.onConn(sock));
  }
  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, r));
  }
  active(): Socket[] {
    return this.clients.filter((s) => !s.destroyed);
  }
  private onConn(sock: Socket): void {
    this.connections++;
    this.clients.push(sock);
    sock.on('error', () => {});
    sock.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 } } } }) + '\r\n');
    let buf = '';
    sock.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as Cmd;
        buf = buf.slice(nl + 1);
        this.received.push(cmd);
        const ret = cmd.execute === 'qmp_capabilities' ? {} : this.handler(cmd);
        sock.write(JSON.stringify({ return: ret, id: cmd.id }) + '\r\n');
      }
    });
  }
  emit(event: string, data?: Record<string, unknown>): void {
    const line = JSON.stringify({
      event,
      data,
      timestamp: { seconds: 1_700_000_000, microseconds: 250_000 },
    });
    for (const s of this.active()) s.write(line + '\r\n');
  }
  dropClients(): void {
    for (const s of this.active()) s.destroy();
  }
  close(): Promise<void> {
    this.dropClients();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** A /proc with one process that lives until `alive` is set false. */
function fakeProcfs(): ProcFs & { alive: boolean } {
  const p = {
    alive: true,
    stat: (pid: number) =>
      p.alive ? { pid, comm: 'qemu-system-x86', state: 'S', ppid: 1, startTime: 77 } : null,
    cmdline: () => (p.alive ? ['qemu-system-x86_64'] : null),
    bootId: () => 'boot',
  };
  return p;
}

function recordingLogger(): EngineLogger & { lines: string[] } {
  const lines: string[] = [];
  const at =
    (level: string) =>
    (...args: unknown[]): void => {
      lines.push(`${level} ${String(args.find((a) => typeof a === 'string') ?? '')}`);
    };
  return {
    lines,
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    debug: at('debug'),
  } as EngineLogger & {
    lines: string[];
  };
}

const waitUntil = async (what: string, fn: () => boolean, ms = 3_000): Promise<void> => {
  const t0 = Date.now();
  while (!fn()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

let dir: string;
let fake: FakeQmp;
beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'banger-events-'));
  fake = new FakeQmp(join(dir, 'qmp.sock'));
  await fake.listen();
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

function record(): HandleRecord {
  return {
    version: 1,
    driver: 'qemu',
    id: 'vm1',
    pid: 4242,
    startTime: 77,
    bootId: 'boot',
    binary: 'qemu-system-x86_64',
    argvHash: 'h',
    startedAt: new Date().toISOString(),
    files: {
      vmDir: dir,
      handles: join(dir, 'handles.json'),
      stderrLog: join(dir, 'qemu.stderr'),
      serialLog: join(dir, 'serial.log'),
      qmpSocket: fake.path,
    },
  };
}

async function handle(
  opts: { logger?: EngineLogger; reconnectAttempts?: number; stderrOffset?: number } = {},
): Promise<{ h: QemuHandle; proc: ReturnType<typeof fakeProcfs> }> {
  const proc = fakeProcfs();
  const qmp = await QmpClient.connect(fake.path);
  const h = new QemuHandle(
    record(),
    new ProcessWatch(4242, 77, { procfs: proc }),
    qmp,
    opts.logger ?? recordingLogger(),
    {
      reconnectBaseMs: 10,
      livenessMs: 20,
      reconnectAttempts: opts.reconnectAttempts ?? 8,
      stderrOffset: opts.stderrOffset ?? 0,
    },
  );
  return { h, proc };
}

describe('decodeQmpEvent', () => {
  const ts = { seconds: 1_700_000_000, microseconds: 250_000 };
  const at = '2023-11-14T22:13:20.250Z';

  it('decodes STOP, RESUME and SHUTDOWN with QEMU timestamps', () => {
    expect(decodeQmpEvent({ event: 'STOP', timestamp: ts })).toEqual({ kind: 'stop', at });
    expect(decodeQmpEvent({ event: 'RESUME', timestamp: ts })).toEqual({ kind: 'resume', at });
    expect(
      decodeQmpEvent({ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: ts }),
    ).toEqual({ kind: 'shutdown', at, guest: true, reason: 'guest-shutdown' });
    expect(decodeQmpEvent({ event: 'SHUTDOWN', data: { guest: false }, timestamp: ts })).toEqual({
      kind: 'shutdown',
      at,
      guest: false,
    });
  });

  it('decodes BLOCK_IO_ERROR with every field QEMU 7.2 sends', () => {
    expect(
      decodeQmpEvent({
        event: 'BLOCK_IO_ERROR',
        data: {
          device: 'disk0',
          'node-name': '#block164',
          operation: 'write',
          action: 'stop',
          nospace: true,
          reason: 'No space left on device',
        },
        timestamp: ts,
      }),
    ).toEqual({
      kind: 'block_io_error',
      at,
      device: 'disk0',
      nodeName: '#block164',
      operation: 'write',
      action: 'stop',
      nospace: true,
      reason: 'No space left on device',
    });
    // A read error reported to the guest: no nospace flag.
    expect(
      decodeQmpEvent({
        event: 'BLOCK_IO_ERROR',
        data: { device: '', operation: 'read', action: 'report', reason: 'Input/output error' },
        timestamp: ts,
      }),
    ).toEqual({
      kind: 'block_io_error',
      at,
      device: '',
      operation: 'read',
      action: 'report',
      nospace: false,
      reason: 'Input/output error',
    });
  });

  it('maps a drive id back to its index in the launch spec', () => {
    expect(diskIndexOf('disk0')).toBe(0);
    expect(diskIndexOf('disk12')).toBe(12);
    expect(diskIndexOf('')).toBeNull();
    expect(diskIndexOf('#block150')).toBeNull();
  });

  it('ignores events banger does not act on; no timestamp means now', () => {
    expect(decodeQmpEvent({ event: 'NIC_RX_FILTER_CHANGED', data: {} })).toBeNull();
    expect(decodeQmpEvent({ event: 'STOP' }, () => new Date('2030-01-01T00:00:00Z'))).toEqual({
      kind: 'stop',
      at: '2030-01-01T00:00:00.000Z',
    });
  });
});

describe('describeExit', () => {
  it('a child killed by a signal', () => {
    expect(describeExit({ code: null, signal: 'SIGKILL' })).toEqual({
      code: null,
      signal: 'SIGKILL',
      reason: 'killed by signal SIGKILL',
    });
  });

  it("a reattached QEMU: the signal comes from its stderr's last 'terminating on signal'", () => {
    const stderr =
      'qemu-system-x86_64: terminating on signal 2\n' +
      'qemu-system-x86_64: terminating on signal 15 from pid 812 (/usr/bin/kill)\n';
    expect(terminatingSignal(stderr)).toEqual({
      signal: 'SIGTERM',
      reason: 'terminated by signal 15 (SIGTERM) from pid 812 (/usr/bin/kill)',
    });
    expect(describeExit({ code: null, signal: null }, { stderr })).toMatchObject({
      signal: 'SIGTERM',
      reason: 'terminated by signal 15 (SIGTERM) from pid 812 (/usr/bin/kill)',
    });
    // A child that QEMU let exit 0 after SIGTERM keeps its real wait status.
    expect(describeExit({ code: 0, signal: null }, { stderr })).toMatchObject({ code: 0, signal: null });
  });

  it('a guest shutdown, an error exit, and unknown', () => {
    expect(
      describeExit({ code: 0, signal: null }, { shutdown: { guest: true, reason: 'guest-shutdown' } }),
    ).toMatchObject({ reason: 'the guest powered off' });
    expect(
      describeExit({ code: null, signal: null }, { shutdown: { guest: false, reason: 'host-ui' } }),
    ).toMatchObject({ reason: 'the host shut it down (host-ui)' });
    expect(
      describeExit(
        { code: 1, signal: null },
        { stderr: 'warning: x\nqemu-system-x86_64: cannot set up guest memory\n' },
      ),
    ).toMatchObject({ reason: 'exited with code 1: qemu-system-x86_64: cannot set up guest memory' });
    expect(describeExit({ code: null, signal: null }, { stderr: 'unrelated\n' })).toEqual({
      code: null,
      signal: null,
      reason: 'unknown',
    });
  });
});

describe('QemuHandle events over QMP', () => {
  it('delivers typed events to each listener until it unsubscribes; a throwing listener is isolated', async () => {
    const { h } = await handle();
    const a: VmmEvent[] = [];
    const b: string[] = [];
    h.onEvent(() => {
      throw new Error('boom');
    });
    const offA = h.onEvent((e) => a.push(e));
    h.onEvent((e) => b.push(e.kind));
    fake.emit('BLOCK_IO_ERROR', {
      device: 'disk0',
      operation: 'write',
      action: 'stop',
      nospace: true,
      reason: 'No space left on device',
    });
    fake.emit('STOP');
    fake.emit('VSERPORT_CHANGE', { id: 'agent', open: true });
    await waitUntil('two events', () => b.length === 2);
    expect(a.map((e) => e.kind)).toEqual(['block_io_error', 'stop']);
    expect(a[0]).toMatchObject({
      device: 'disk0',
      nospace: true,
      action: 'stop',
      at: '2023-11-14T22:13:20.250Z',
    });
    offA();
    fake.emit('RESUME');
    await waitUntil('resume', () => b.length === 3);
    expect(b).toEqual(['block_io_error', 'stop', 'resume']);
    expect(a).toHaveLength(2);
    await h.release();
  });

  it('statusDetail gives the RunState of a paused VM; resume sends cont', async () => {
    const { h } = await handle();
    fake.status = 'io-error';
    expect(await h.statusDetail()).toEqual({ status: 'paused', reason: 'io-error' });
    fake.status = 'postmigrate';
    expect(await h.statusDetail()).toEqual({ status: 'paused', reason: 'postmigrate' });
    await h.resume();
    expect(fake.received.at(-1)?.execute).toBe('cont');
    fake.status = 'running';
    expect(await h.statusDetail()).toEqual({ status: 'running' });
    expect(await h.status()).toBe('running');
    await h.release();
  });

  it('reconnects when the socket drops while QEMU lives, and keeps delivering', async () => {
    const { h } = await handle();
    const kinds: string[] = [];
    h.onEvent((e) => kinds.push(e.kind));
    expect(fake.connections).toBe(1);
    fake.dropClients();
    await waitUntil('a second connection', () => fake.connections === 2 && fake.active().length === 1);
    // The new connection negotiated capabilities before anything else.
    await waitUntil(
      'capabilities',
      () => fake.received.filter((c) => c.execute === 'qmp_capabilities').length === 2,
    );
    fake.emit('STOP');
    await waitUntil('stop after reconnect', () => kinds.includes('stop'));
    expect(h.qmp).toBeDefined();
    await h.release();
  });

  it('gives up reconnecting after the bound, and says so', async () => {
    const logger = recordingLogger();
    const { h } = await handle({ logger, reconnectAttempts: 3 });
    h.onEvent(() => {});
    await fake.close(); // nothing listens any more, but the process "lives"
    await waitUntil('the give-up warning', () => logger.lines.some((l) => l.includes('not regained')));
    expect(logger.lines.filter((l) => l.includes('QMP reconnect failed'))).toHaveLength(3);
    await h.release();
    fake = new FakeQmp(join(dir, 'qmp2.sock'));
    await fake.listen();
  });

  it('an exit is delivered once with why (from the stderr log of this run), then nothing', async () => {
    const stderrLog = join(dir, 'qemu.stderr');
    writeFileSync(stderrLog, 'qemu-system-x86_64: terminating on signal 15 from pid 1 (old run)\n');
    const offset = readFileSync(stderrLog).length;
    const { h, proc } = await handle({ stderrOffset: offset });
    const events: VmmEvent[] = [];
    h.onEvent((e) => events.push(e));
    appendFileSync(stderrLog, 'qemu-system-x86_64: terminating on signal 1 from pid 99 (bash)\n');
    proc.alive = false;
    fake.dropClients();
    await waitUntil('exit', () => events.some((e) => e.kind === 'exit'));
    const exit = events.find((e) => e.kind === 'exit');
    expect(exit).toMatchObject({
      kind: 'exit',
      info: { code: null, signal: 'SIGHUP', reason: 'terminated by signal 1 (SIGHUP) from pid 99 (bash)' },
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(events.filter((e) => e.kind === 'exit')).toHaveLength(1);
    // No reconnect attempt to a dead VMM.
    expect(fake.connections).toBe(1);
    expect(await h.statusDetail()).toEqual({
      status: 'gone',
      reason: exit?.kind === 'exit' ? exit.info.reason : '',
    });
    // A late subscriber still learns that it is over.
    const late = await new Promise<VmmEvent>((r) => h.onEvent(r));
    expect(late).toEqual(exit);
    // waitExit() gives the bare wait status: nothing, for a process that is not our child.
    expect(await h.waitExit()).toEqual({ code: null, signal: null });
  });

  it("an exit with nothing in the log is 'unknown' for a reattached VMM", async () => {
    const { h, proc } = await handle();
    const got = new Promise<VmmEvent>((r) => h.onEvent((e) => e.kind === 'exit' && r(e)));
    proc.alive = false; // found by the liveness poll: the socket stays up here
    expect(await got).toMatchObject({ info: { code: null, signal: null, reason: 'unknown' } });
  });

  it('statusDetail of a VMM that died while nobody listened still says why', async () => {
    const stderrLog = join(dir, 'qemu.stderr');
    const { h, proc } = await handle();
    appendFileSync(stderrLog, 'qemu-system-x86_64: terminating on signal 15 from pid 7 (systemd)\n');
    proc.alive = false;
    expect(await h.status()).toBe('gone');
    expect(await h.statusDetail()).toEqual({
      status: 'gone',
      reason: 'terminated by signal 15 (SIGTERM) from pid 7 (systemd)',
    });
  });

  it('release() closes the connection, stops listeners, and never reconnects', async () => {
    const { h } = await handle();
    const kinds: string[] = [];
    h.onEvent((e) => kinds.push(e.kind));
    await h.release();
    await waitUntil('the server sees the hang-up', () => fake.active().length === 0);
    fake.emit('STOP');
    await new Promise((r) => setTimeout(r, 150));
    expect(kinds).toEqual([]);
    expect(fake.connections).toBe(1);
  });

  it('a handle with a listener does not keep the process alive on its own', async () => {
    // A separate Node process subscribes and then does nothing: it must exit by itself.
    const script = join(dir, 'hold.ts');
    const src = (m: string): string =>
      JSON.stringify(new URL(`../../src/engine/${m}`, import.meta.url).pathname);
    writeFileSync(
      script,
      `import { QmpClient } from ${src('qmp.ts')};
import { QemuHandle } from ${src('qemu.ts')};
import { ProcessWatch } from ${src('process.ts')};
import { silentLogger } from ${src('log.ts')};
const rec = JSON.parse(process.argv[2]);
const qmp = await QmpClient.connect(rec.files.qmpSocket);
const h = new QemuHandle(rec, new ProcessWatch(process.pid, 0, { procfs: { stat: (pid) => ({ pid, comm: 'q', state: 'S', ppid: 1, startTime: 0 }), cmdline: () => [], bootId: () => '' } }), qmp, silentLogger);
h.onEvent(() => {});
console.log('subscribed');
`,
    );
    const child = spawn(process.execPath, [script, JSON.stringify(record())], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(-1);
      }, 8_000);
      child.on('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    expect(out).toContain('subscribed');
    expect(code).toBe(0);
  });
});

describe('saveState failures say why', () => {
  /** The QMP side of a save: migrate runs our "cat", query-migrate reports how it went. */
  function migrateWith(
    writer: (uri: string) => void,
    desc = 'Unable to write to command: Broken pipe',
  ): void {
    let migrated = false;
    fake.handler = (c) => {
      if (c.execute === 'query-status') return { status: 'paused', running: false };
      if (c.execute === 'migrate') {
        writer(String(c.arguments?.uri));
        migrated = true;
        return {};
      }
      if (c.execute === 'query-migrate') return migrated ? { status: 'failed', 'error-desc': desc } : {};
      return {};
    };
  }

  it('ENOSPC from the writer: no_space, the partial state removed', async () => {
    const state = join(dir, 'state');
    migrateWith((uri) => {
      expect(uri).toBe(`exec:cat > '${state}' 2> '${saveErrPath(state)}'`);
      writeFileSync(state, Buffer.alloc(4096));
      writeFileSync(saveErrPath(state), 'cat: write error: No space left on device\n');
    });
    const qmp = await QmpClient.connect(fake.path);
    const err = await saveState(qmp, state, { pollMs: 5, freeBytes: async () => 3 * 1024 * 1024 }).catch(
      (e: unknown) => e,
    );
    qmp.close();
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('no_space');
    expect((err as EngineError).message).toBe(
      `no space left on device while saving the VM state to ${state} (3 MiB free)`,
    );
    expect((err as EngineError).details).toMatchObject({ errno: 'ENOSPC', writtenBytes: 4096 });
    expect(existsSync(state)).toBe(false);
    expect(existsSync(saveErrPath(state))).toBe(false);
  });

  it('a full disk that swallowed even the error text: told by the free space', async () => {
    const state = join(dir, 'state');
    migrateWith(() => writeFileSync(state, 'partial'));
    const qmp = await QmpClient.connect(fake.path);
    const err = (await saveState(qmp, state, { pollMs: 5, freeBytes: async () => 0 }).catch(
      (e: unknown) => e,
    )) as EngineError;
    qmp.close();
    expect(err.code).toBe('no_space');
    expect(err.message).toMatch(/\(0 MiB free\)$/);
    expect(err.message).not.toMatch(/Broken pipe/);
    expect(existsSync(state)).toBe(false);
  });

  it('another failure keeps its own words', async () => {
    const state = join(dir, 'state');
    migrateWith(() =>
      writeFileSync(saveErrPath(state), 'sh: 1: cannot create /x/state: Permission denied\n'),
    );
    const qmp = await QmpClient.connect(fake.path);
    const err = (await saveState(qmp, state, { pollMs: 5, freeBytes: async () => 10 * 2 ** 30 }).catch(
      (e: unknown) => e,
    )) as EngineError;
    qmp.close();
    expect(err.code).toBe('qmp_error');
    expect(err.message).toBe(
      `saving the VM state to ${state} failed: sh: 1: cannot create /x/state: Permission denied`,
    );
  });
});

function spec(id: string): VmLaunchSpec {
  return {
    id,
    vmDir: `/state/vms/${id}`,
    kernel: '/k/vmlinuz',
    cmdline: 'root=/dev/vda',
    vcpus: 1,
    memoryMiB: 256,
    disks: [],
    net: { mode: 'none' },
    serialLog: `/state/vms/${id}/serial.log`,
    accel: 'tcg',
  };
}

describe('FakeVmmDriver events', () => {
  it('an injected I/O-error pause, statusDetail and resume, all in the transcript', async () => {
    const d = new FakeVmmDriver();
    const h = await d.start(d.prepare(spec('a')));
    const kinds: string[] = [];
    const events: VmmEvent[] = [];
    h.onEvent((e) => {
      kinds.push(e.kind);
      events.push(e);
    });
    d.host.ioError('a');
    expect(kinds).toEqual(['block_io_error', 'stop']);
    expect(events[0]).toMatchObject({ device: 'disk0', nospace: true, action: 'stop', operation: 'write' });
    expect(await h.statusDetail()).toEqual({ status: 'paused', reason: 'io-error' });

    // Disk still full: the retried write fails again.
    d.host.setResumeBehaviour('a', 'io-error');
    await h.resume();
    expect(kinds).toEqual(['block_io_error', 'stop', 'resume', 'block_io_error', 'stop']);
    expect(await h.statusDetail()).toEqual({ status: 'paused', reason: 'io-error' });

    d.host.setResumeBehaviour('a', 'run');
    await h.resume();
    expect(kinds.at(-1)).toBe('resume');
    expect(await h.statusDetail()).toEqual({ status: 'running' });
    expect(d.ops()).toEqual([
      'prepare a',
      'start a',
      'statusDetail a',
      'resume a',
      'statusDetail a',
      'resume a',
      'statusDetail a',
    ]);
  });

  it('stop, exit and kill reach listeners of every live handle, reattached ones too', async () => {
    const host = new FakeVmmHost();
    const d1 = new FakeVmmDriver({ host });
    const h1 = await d1.start(d1.prepare(spec('b')));
    const d2 = new FakeVmmDriver({ host });
    const h2 = (await d2.reattach('/state/vms/b'))!;
    const one: string[] = [];
    const two: VmmEvent[] = [];
    h1.onEvent((e) => one.push(e.kind));
    h2.onEvent((e) => two.push(e));
    host.emit('b', { kind: 'stop' });
    expect(await h2.statusDetail()).toEqual({ status: 'paused', reason: 'paused' });
    await h1.release();
    await h2.kill();
    expect(one).toEqual(['stop']);
    expect(two.map((e) => e.kind)).toEqual(['stop', 'exit']);
    expect(two[1]).toMatchObject({
      info: { code: null, signal: 'SIGKILL', reason: 'killed by signal SIGKILL' },
    });
    expect(await h2.statusDetail()).toEqual({ status: 'gone', reason: 'killed by signal SIGKILL' });
    await expect(h2.resume()).rejects.toMatchObject({ code: 'not_running' });
    // Subscribing after the end still hears the exit.
    await expect(new Promise((r) => h2.onEvent(r))).resolves.toMatchObject({ kind: 'exit' });
  });

  it('an exit injected as an event, with a reattached-style unknown reason', async () => {
    const d = new FakeVmmDriver();
    const h = await d.start(d.prepare(spec('c')));
    const got = new Promise<VmmEvent>((r) => h.onEvent(r));
    d.host.emit('c', { kind: 'exit', info: { code: null, signal: null } });
    expect(await got).toMatchObject({ kind: 'exit', info: { reason: 'unknown' } });
    expect(await h.waitExit()).toEqual({ code: null, signal: null });
  });

  it('a restored VM is paused in migration until resumed', async () => {
    const d = new FakeVmmDriver();
    const h = await d.start(d.prepare({ ...spec('r'), incoming: 'exec:cat /s' }));
    expect(await h.statusDetail()).toEqual({ status: 'paused', reason: 'inmigrate' });
    await h.resume();
    expect(await h.statusDetail()).toEqual({ status: 'running' });
  });
});
