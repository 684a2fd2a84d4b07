import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine/errors.ts';
import { QmpClient } from '../../src/engine/qmp.ts';

interface Cmd {
  execute: string;
  id?: string;
  arguments?: Record<string, unknown>;
}
type Reply = { return: unknown } | { error: { class: string; desc: string } } | 'silent';

/** A fake QMP monitor: greeting, capabilities gate, scripted replies, events on demand. */
class FakeQmp {
  readonly server: Server;
  readonly received: Cmd[] = [];
  readonly clients: Socket[] = [];
  greet = true;
  /** One client at a time, like QEMU: later connections get no greeting while one is open. */
  exclusive = true;
  handler: (c: Cmd) => Reply = (c) => {
    if (c.execute === 'query-status')
      return { return: { status: 'running', running: true, singlestep: false } };
    return { return: {} };
  };

  readonly path: string;

  constructor(path: string) {
    this.path = path;
    this.server = createServer((sock) => this.onConn(sock));
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, r));
  }

  private active(): Socket[] {
    return this.clients.filter((s) => !s.destroyed);
  }

  private onConn(sock: Socket): void {
    const busy = this.exclusive && this.active().length > 0;
    this.clients.push(sock);
    sock.on('error', () => {});
    if (!this.greet) return;
    const greet = (): void => {
      sock.write(
        JSON.stringify({
          QMP: {
            version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' },
            capabilities: ['oob'],
          },
        }) + '\r\n',
      );
    };
    if (busy) {
      // Greet only once the current client leaves.
      const others = this.active().filter((s) => s !== sock);
      let left = others.length;
      for (const o of others)
        o.once('close', () => {
          if (--left === 0 && !sock.destroyed) greet();
        });
    } else greet();
    let buf = '';
    let negotiated = false;
    sock.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as Cmd;
        buf = buf.slice(nl + 1);
        this.received.push(cmd);
        let reply: Reply;
        if (cmd.execute === 'qmp_capabilities') {
          negotiated = true;
          reply = { return: {} };
        } else if (!negotiated) {
          reply = { error: { class: 'CommandNotFound', desc: 'Expecting capabilities negotiation' } };
        } else reply = this.handler(cmd);
        if (reply === 'silent') continue;
        sock.write(JSON.stringify({ ...reply, id: cmd.id }) + '\r\n');
      }
    });
  }

  emit(event: string, data?: Record<string, unknown>): void {
    for (const s of this.active()) {
      s.write(JSON.stringify({ event, data, timestamp: { seconds: 1, microseconds: 2 } }) + '\r\n');
    }
  }

  dropClients(): void {
    for (const s of this.active()) s.destroy();
  }

  close(): Promise<void> {
    this.dropClients();
    return new Promise((r) => this.server.close(() => r()));
  }
}

let dir: string;
let fake: FakeQmp;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'banger-qmp-'));
  fake = new FakeQmp(join(dir, 'qmp.sock'));
  await fake.listen();
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<EngineError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(EngineError);
    return e as EngineError;
  }
  throw new Error('expected a rejection');
}

describe('QmpClient', () => {
  it('reads the greeting and negotiates capabilities before anything else', async () => {
    const c = await QmpClient.connect(fake.path);
    expect(c.qemuVersion).toBe('7.2.22');
    expect(c.greeting.QMP.capabilities).toEqual(['oob']);
    expect(fake.received[0]?.execute).toBe('qmp_capabilities');
    c.close();
  });

  it('executes commands with arguments and returns the `return` value', async () => {
    fake.handler = (cmd) =>
      cmd.execute === 'query-status'
        ? { return: { status: 'paused', running: false } }
        : { return: { echoed: cmd.arguments } };
    const c = await QmpClient.connect(fake.path);
    expect(await c.queryStatus()).toEqual({ status: 'paused', running: false });
    expect(await c.execute('migrate', { uri: 'exec:cat > /x' })).toEqual({
      echoed: { uri: 'exec:cat > /x' },
    });
    const ids = fake.received.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    c.close();
  });

  it('matches replies by id even when they come out of order', async () => {
    const held: Cmd[] = [];
    fake.handler = (cmd) => {
      held.push(cmd);
      return 'silent';
    };
    const c = await QmpClient.connect(fake.path);
    const a = c.execute<string>('a');
    const b = c.execute<string>('b');
    await new Promise((r) => setTimeout(r, 30));
    const sock = fake.clients[0]!;
    // Answer b first, then a.
    sock.write(JSON.stringify({ return: 'B', id: held[1]!.id }) + '\n');
    sock.write(JSON.stringify({ return: 'A', id: held[0]!.id }) + '\n');
    expect(await Promise.all([a, b])).toEqual(['A', 'B']);
    c.close();
  });

  it('turns QMP errors into EngineError(qmp_error) with class and desc', async () => {
    fake.handler = () => ({ error: { class: 'GenericError', desc: 'no such thing' } });
    const c = await QmpClient.connect(fake.path);
    const err = await rejection(c.execute('frobnicate'));
    expect(err.code).toBe('qmp_error');
    expect(err.message).toContain('no such thing');
    expect(err.details).toMatchObject({ command: 'frobnicate', class: 'GenericError' });
    c.close();
  });

  it('times out a command without a reply, and ignores the late reply', async () => {
    let late: Cmd | undefined;
    fake.handler = (cmd) => {
      late = cmd;
      return 'silent';
    };
    const c = await QmpClient.connect(fake.path);
    const err = await rejection(c.execute('slow', undefined, { timeoutMs: 50 }));
    expect(err.code).toBe('timeout');
    fake.clients[0]!.write(JSON.stringify({ return: 'too late', id: late!.id }) + '\n');
    fake.handler = () => ({ return: 'ok' });
    expect(await c.execute('next')).toBe('ok');
    c.close();
  });

  it('delivers events to listeners, filtered by name, and waitForEvent resolves', async () => {
    const c = await QmpClient.connect(fake.path);
    const all: string[] = [];
    const stops: string[] = [];
    c.onEvent((e) => all.push(e.event));
    const off = c.onEvent((e) => stops.push(e.event), 'STOP');
    const shutdown = c.waitForEvent('SHUTDOWN', 1_000, (e) => e.data?.guest === true);
    fake.emit('STOP');
    fake.emit('RESUME');
    fake.emit('SHUTDOWN', { guest: false });
    fake.emit('SHUTDOWN', { guest: true, reason: 'guest-shutdown' });
    const ev = await shutdown;
    expect(ev.data).toEqual({ guest: true, reason: 'guest-shutdown' });
    expect(ev.timestamp).toEqual({ seconds: 1, microseconds: 2 });
    off();
    fake.emit('STOP');
    await c.execute('sync');
    expect(all).toEqual(['STOP', 'RESUME', 'SHUTDOWN', 'SHUTDOWN', 'STOP']);
    expect(stops).toEqual(['STOP']);
    c.close();
  });

  it('a throwing listener does not break the stream', async () => {
    const c = await QmpClient.connect(fake.path);
    c.onEvent(() => {
      throw new Error('boom');
    });
    const got = c.waitForEvent('POWERDOWN', 1_000);
    fake.emit('POWERDOWN');
    await expect(got).resolves.toMatchObject({ event: 'POWERDOWN' });
    c.close();
  });

  it('waitForEvent times out', async () => {
    const c = await QmpClient.connect(fake.path);
    expect((await rejection(c.waitForEvent('SHUTDOWN', 30))).code).toBe('timeout');
    c.close();
  });

  it('rejects pending commands when the server goes away, and reports closed', async () => {
    fake.handler = () => 'silent';
    const c = await QmpClient.connect(fake.path);
    let closed = false;
    c.onClose(() => (closed = true));
    const pending = c.execute('quit');
    const waiting = c.waitForEvent('SHUTDOWN', 5_000);
    fake.dropClients();
    expect((await rejection(pending)).code).toBe('control_closed');
    expect((await rejection(waiting)).code).toBe('control_closed');
    expect(c.closed).toBe(true);
    expect(closed).toBe(true);
    expect((await rejection(c.execute('query-status'))).code).toBe('control_closed');
  });

  it('close() is idempotent and lets the next client connect (one client per monitor)', async () => {
    const a = await QmpClient.connect(fake.path);
    // While a holds the monitor, a second client gets no greeting.
    const busy = await rejection(QmpClient.connect(fake.path, { timeoutMs: 150 }));
    expect(busy.code).toBe('timeout');
    expect(busy.message).toMatch(/another client/);
    a.close();
    a.close();
    const b = await QmpClient.connect(fake.path, { timeoutMs: 2_000 });
    expect((await b.queryStatus()).status).toBe('running');
    b.close();
  });

  it('fails fast when nothing listens (ENOENT) and when no greeting comes', async () => {
    await expect(QmpClient.connect(join(dir, 'nope.sock'))).rejects.toMatchObject({ code: 'ENOENT' });
    fake.greet = false;
    expect((await rejection(QmpClient.connect(fake.path, { timeoutMs: 100 }))).code).toBe('timeout');
  });

  it('rejects a non-QMP greeting', async () => {
    fake.server.removeAllListeners('connection');
    fake.server.on('connection', (s: Socket) => s.write('SSH-2.0-OpenSSH\n'));
    expect((await rejection(QmpClient.connect(fake.path))).code).toBe('start_failed');
  });
});
