import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine/errors.ts';
import { QgaClient } from '../../src/engine/qga.ts';
import { QgaHold } from '../../src/engine/qga-hold.ts';
import { shortTempDir } from '../helpers/tmp.ts';

interface Cmd {
  execute: string;
  arguments?: Record<string, unknown>;
  /** The request line exactly as it came (after any 0xFF). */
  raw: string;
  /** A 0xFF byte came right before this request. */
  afterSentinel: boolean;
}
type Reply = { return: unknown } | { error: { class: string; desc: string } } | 'silent';

/**
 * A fake qemu-ga: 0xFF resets its parser, guest-sync-delimited is answered with 0xFF + the id
 * (after `staleBeforeSync` junk), guest-exec/guest-exec-status run a pretend process that exits
 * after `execPolls` polls, everything else goes to `handler`.
 */
class FakeQga {
  readonly server: Server;
  readonly received: Cmd[] = [];
  readonly clients: Socket[] = [];
  readonly path: string;
  staleBeforeSync = '';
  /** Hold back (don't answer) this many guest-sync-delimited requests. */
  holdSyncs = 0;
  readonly held: Cmd[] = [];
  execPolls = 3;
  execStatus: Record<string, unknown> = {
    exitcode: 0,
    'out-data': Buffer.from('hello\n').toString('base64'),
    'err-data': Buffer.from('warning: ü\n').toString('base64'),
  };
  statusPolls = 0;
  /** Commands that arrived while an earlier one was still unanswered. */
  overlaps = 0;
  private busy = false;
  handler: (c: Cmd, sock: Socket) => Reply = () => ({ return: {} });

  constructor(path: string) {
    this.path = path;
    this.server = createServer((sock) => this.onConn(sock));
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, r));
  }

  reply(sock: Socket, reply: Reply): void {
    if (reply === 'silent') return; // still busy: answered later, or never
    this.busy = false;
    sock.write(JSON.stringify(reply) + '\n');
  }

  syncReply(sock: Socket, c: Cmd): void {
    this.busy = false;
    sock.write(Buffer.concat([Buffer.of(0xff), Buffer.from(`{"return": ${String(c.arguments?.id)}}\n`)]));
  }

  private onConn(sock: Socket): void {
    this.clients.push(sock);
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let sentinel = false;
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const ff = buf.indexOf(0xff);
        const nl = buf.indexOf(0x0a);
        if (ff >= 0 && (nl < 0 || ff < nl)) {
          buf = buf.subarray(ff + 1); // parser reset
          sentinel = true;
          continue;
        }
        if (nl < 0) break;
        const raw = buf.subarray(0, nl).toString();
        buf = buf.subarray(nl + 1);
        const parsed = JSON.parse(raw) as Omit<Cmd, 'raw' | 'afterSentinel'>;
        const cmd: Cmd = { ...parsed, raw, afterSentinel: sentinel };
        sentinel = false;
        this.received.push(cmd);
        this.dispatch(cmd, sock);
      }
    });
  }

  private dispatch(cmd: Cmd, sock: Socket): void {
    if (cmd.execute === 'guest-sync-delimited') {
      if (this.holdSyncs > 0) {
        this.holdSyncs--;
        this.held.push(cmd);
        return;
      }
      if (this.staleBeforeSync) sock.write(this.staleBeforeSync, 'latin1');
      this.syncReply(sock, cmd);
      return;
    }
    if (this.busy) this.overlaps++;
    this.busy = true;
    if (cmd.execute === 'guest-exec') {
      this.statusPolls = 0;
      this.reply(sock, { return: { pid: 4242 } });
    } else if (cmd.execute === 'guest-exec-status') {
      this.statusPolls++;
      const done = this.statusPolls >= this.execPolls;
      this.reply(sock, { return: done ? { exited: true, ...this.execStatus } : { exited: false } });
    } else {
      this.reply(sock, this.handler(cmd, sock));
    }
  }

  close(): Promise<void> {
    for (const s of this.clients) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

let tmp: ReturnType<typeof shortTempDir>;
let fake: FakeQga;

beforeEach(async () => {
  tmp = shortTempDir('bg-qga');
  fake = new FakeQga(join(tmp.dir, 'qga.sock'));
  await fake.listen();
});
afterEach(async () => {
  await fake.close();
  tmp.cleanup();
});

const connect = (): Promise<QgaClient> => QgaClient.connect(fake.path, { timeoutMs: 2_000 });

describe('QgaClient sync', () => {
  it('sends 0xFF before guest-sync-delimited and skips stale data up to the matching reply', async () => {
    // An old reply, an old error, half a reply cut off by an old sync's 0xFF and that sync's
    // reply (another id), all before the 0xFF that precedes the real answer.
    fake.staleBeforeSync =
      '{"return": 12345}\n{"error": {"class": "GenericError", "desc": "old"}}\n' +
      '{"return": {"pid": 7\xff{"return": 99}\n';
    fake.handler = (c) => (c.execute === 'guest-info' ? { return: { version: '7.2.19' } } : { return: {} });
    const c = await connect();
    await c.sync(2_000);
    const sync = fake.received[0]!;
    expect(sync.execute).toBe('guest-sync-delimited');
    expect(sync.afterSentinel).toBe(true);
    expect(typeof sync.arguments?.id).toBe('number');
    // The stale lines were not taken as the reply to the next command.
    expect(await c.execute('guest-info')).toEqual({ version: '7.2.19' });
    expect(fake.received.map((r) => r.execute)).toEqual(['guest-sync-delimited', 'guest-info']);
    c.close();
  });

  it('resends with a new id when nothing answers, and waits for the reply to the last one', async () => {
    fake.holdSyncs = 2;
    fake.handler = () => ({ return: 'pong' });
    const c = await connect();
    let synced = false;
    const sync = c.sync(5_000).then(() => (synced = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(fake.held).toHaveLength(2);
    const [first, second] = fake.held;
    expect(first!.arguments?.id).not.toBe(second!.arguments?.id);
    expect(second!.afterSentinel).toBe(true);
    // The agent wakes up and answers both, in order. The first reply is not enough: taking it
    // would leave the second to be mistaken for the next command's reply.
    fake.syncReply(fake.clients[0]!, first!);
    await new Promise((r) => setTimeout(r, 50));
    expect(synced).toBe(false);
    fake.syncReply(fake.clients[0]!, second!);
    await sync;
    expect(await c.execute('guest-ping', undefined, { timeoutMs: 1_000 })).toBe('pong');
    c.close();
  });

  it('is done by the first command on its own when nobody synced', async () => {
    fake.handler = () => ({ return: {} });
    const c = await connect();
    await c.ping();
    expect(fake.received.map((r) => r.execute)).toEqual(['guest-sync-delimited', 'guest-ping']);
    c.close();
  });

  it('times out when the agent never answers', async () => {
    fake.holdSyncs = 100;
    const c = await connect();
    const t0 = Date.now();
    await expect(c.sync(300)).rejects.toMatchObject({ name: 'EngineError', code: 'timeout' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
    await expect(c.ping(200)).rejects.toMatchObject({ code: 'timeout' });
    c.close();
  });
});

describe('QgaClient commands', () => {
  it('turns an error reply into EngineError(guest_agent) with class and desc', async () => {
    fake.handler = () => ({
      error: { class: 'CommandNotFound', desc: 'The command guest-frob has not been found' },
    });
    const c = await connect();
    const err: unknown = await c.execute('guest-frob').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({
      code: 'guest_agent',
      details: { command: 'guest-frob', class: 'CommandNotFound' },
    });
    expect((err as Error).message).toContain('has not been found');
    c.close();
  });

  it('runs one command at a time', async () => {
    fake.handler = (cmd, sock) => {
      setTimeout(() => fake.reply(sock, { return: cmd.execute }), 30);
      return 'silent';
    };
    const c = await connect();
    const results = await Promise.all([c.execute('a'), c.execute('b'), c.execute('c')]);
    expect(results).toEqual(['a', 'b', 'c']);
    expect(fake.overlaps).toBe(0);
    c.close();
  });

  it('drops the late reply of a timed-out command and syncs again before the next one', async () => {
    let slow: Socket | undefined;
    fake.handler = (cmd, sock) => {
      if (cmd.execute === 'slow') {
        slow = sock;
        return 'silent';
      }
      return { return: 'fresh' };
    };
    const c = await connect();
    await expect(c.execute('slow', undefined, { timeoutMs: 100 })).rejects.toMatchObject({ code: 'timeout' });
    fake.reply(slow!, { return: 'stale' });
    expect(await c.execute('next', undefined, { timeoutMs: 1_000 })).toBe('fresh');
    expect(fake.received.map((r) => r.execute)).toEqual([
      'guest-sync-delimited',
      'slow',
      'guest-sync-delimited',
      'next',
    ]);
    c.close();
  });

  it('rejects what is pending with control_closed when the agent side goes away, or on close()', async () => {
    fake.handler = () => 'silent';
    const c = await connect();
    const pending = c.execute('guest-ping', undefined, { timeoutMs: 5_000 });
    await new Promise((r) => setTimeout(r, 50));
    fake.clients[0]!.destroy();
    await expect(pending).rejects.toMatchObject({ code: 'control_closed' });
    expect(c.closed).toBe(true);
    await expect(c.ping()).rejects.toMatchObject({ code: 'control_closed' });

    const c2 = await connect();
    const pending2 = c2.execute('guest-ping', undefined, { timeoutMs: 5_000 });
    c2.close();
    c2.close(); // idempotent
    await expect(pending2).rejects.toMatchObject({ code: 'control_closed' });
  });
});

describe('QgaClient exec', () => {
  it('starts the process with its input, polls until it exits and decodes its output', async () => {
    const c = await connect();
    const input = Buffer.from('machine_id=abc\nbinary \x00\xff\n', 'latin1');
    const r = await c.exec('/bin/sh', ['-c', 'cat', 'name'], {
      inputData: input,
      timeoutMs: 2_000,
      pollMs: 10,
    });
    expect(r).toEqual({ exitcode: 0, stdout: 'hello\n', stderr: 'warning: ü\n' });
    const start = fake.received.find((x) => x.execute === 'guest-exec')!;
    expect(start.arguments).toMatchObject({
      path: '/bin/sh',
      arg: ['-c', 'cat', 'name'],
      'capture-output': true,
    });
    expect(Buffer.from(start.arguments!['input-data'] as string, 'base64').equals(input)).toBe(true);
    const polls = fake.received.filter((x) => x.execute === 'guest-exec-status');
    expect(polls).toHaveLength(3);
    expect(polls.every((p) => p.arguments?.pid === 4242)).toBe(true);
    c.close();
  });

  it('reports a process killed by a signal, and truncated output', async () => {
    fake.execPolls = 1;
    fake.execStatus = { signal: 9, 'out-truncated': true };
    const c = await connect();
    const r = await c.exec('/bin/true', [], { timeoutMs: 2_000 });
    expect(r).toEqual({ exitcode: null, signal: 9, stdout: '', stderr: '', truncated: true });
    const start = fake.received.find((x) => x.execute === 'guest-exec')!;
    expect(start.arguments).not.toHaveProperty('input-data');
    c.close();
  });

  it('gives up on a process that does not exit in time', async () => {
    fake.execPolls = Number.POSITIVE_INFINITY;
    const c = await connect();
    await expect(c.exec('/bin/sleep', ['60'], { timeoutMs: 300, pollMs: 20 })).rejects.toMatchObject({
      code: 'timeout',
      details: { pid: 4242 },
    });
    c.close();
  });
});

describe('QgaClient writeFile', () => {
  it('opens with mode w, writes the bytes in base64, closes the handle', async () => {
    fake.handler = (c) =>
      c.execute === 'guest-file-open'
        ? { return: 7 }
        : c.execute === 'guest-file-write'
          ? { return: { count: Buffer.from(c.arguments!['buf-b64'] as string, 'base64').length, eof: false } }
          : { return: {} };
    const c = await connect();
    const data = Buffer.from('machine_id=abc\nend\n');
    await c.writeFile('/proc/42/fd/0', data, { timeoutMs: 2_000 });
    const cmds = fake.received.filter((x) => x.execute !== 'guest-sync-delimited');
    expect(cmds.map((x) => [x.execute, x.arguments])).toEqual([
      ['guest-file-open', { path: '/proc/42/fd/0', mode: 'w' }],
      ['guest-file-write', { handle: 7, 'buf-b64': data.toString('base64') }],
      ['guest-file-close', { handle: 7 }],
    ]);
    c.close();
  });

  it('calls a short write an error, and still closes the handle', async () => {
    fake.handler = (c) =>
      c.execute === 'guest-file-open'
        ? { return: 3 }
        : c.execute === 'guest-file-write'
          ? { return: { count: 2, eof: false } }
          : { return: {} };
    const c = await connect();
    await expect(c.writeFile('/run/x', Buffer.from('12345'), { timeoutMs: 2_000 })).rejects.toMatchObject({
      code: 'guest_agent',
      message: 'guest agent wrote 2 of 5 bytes to /run/x',
    });
    expect(fake.received.at(-1)).toMatchObject({ execute: 'guest-file-close', arguments: { handle: 3 } });
    c.close();
  });

  it('marks an open the agent refuses (nothing written): details.opened false', async () => {
    fake.handler = (c) =>
      c.execute === 'guest-file-open'
        ? { error: { class: 'GenericError', desc: 'Permission denied' } }
        : { return: {} };
    const c = await connect();
    const err: unknown = await c
      .writeFile('/proc/9/fd/0', Buffer.from('1'), { timeoutMs: 2_000 })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'guest_agent',
      message: expect.stringContaining('Permission denied'),
      details: { path: '/proc/9/fd/0', opened: false },
    });
    expect(fake.received.some((x) => x.execute === 'guest-file-write')).toBe(false);
    c.close();
  });

  it('reports a failed write, not the failed close after it', async () => {
    fake.handler = (c) =>
      c.execute === 'guest-file-open'
        ? { return: 3 }
        : { error: { class: 'GenericError', desc: `${c.execute} refused` } };
    const c = await connect();
    await expect(c.writeFile('/run/x', Buffer.from('1'), { timeoutMs: 2_000 })).rejects.toThrow(
      'guest agent guest-file-write failed: guest-file-write refused',
    );
    c.close();
  });
});

describe('QgaClient batch', () => {
  it('sends the commands in one write and takes the replies in order; an error settles its own command only', async () => {
    fake.handler = (c) =>
      c.execute === 'guest-file-open'
        ? { error: { class: 'GenericError', desc: 'Permission denied' } }
        : { return: { n: c.arguments?.['n'] } };
    const c = await connect();
    await c.sync(2_000);
    const chunks: number[] = [];
    fake.clients[0]!.on('data', (d: Buffer) => chunks.push(d.length));
    const r = await c.batch(
      [
        { command: 'guest-ping', args: { n: 1 } },
        { command: 'guest-file-open', args: { path: '/x', mode: 'r' } },
        { command: 'guest-info', args: { n: 3 } },
      ],
      { timeoutMs: 2_000 },
    );
    expect(chunks).toHaveLength(1); // one write: one round trip
    expect(r[0]).toEqual({ status: 'fulfilled', value: { n: 1 } });
    expect(r[1]).toMatchObject({ status: 'rejected', reason: { code: 'guest_agent' } });
    expect(r[2]).toEqual({ status: 'fulfilled', value: { n: 3 } });
    c.close();
  });

  it('writeFile: the write and the close go together, after the open', async () => {
    fake.handler = (c) =>
      c.execute === 'guest-file-open'
        ? { return: 9 }
        : c.execute === 'guest-file-write'
          ? { return: { count: 2, eof: false } }
          : { return: {} };
    const c = await connect();
    await c.sync(2_000);
    const chunks: string[] = [];
    fake.clients[0]!.on('data', (d: Buffer) => chunks.push(d.toString()));
    await c.writeFile('/run/x', Buffer.from('ab'), { timeoutMs: 2_000 });
    expect(chunks).toHaveLength(2);
    expect(chunks[0]).toContain('guest-file-open');
    expect(chunks[1]).toMatch(/guest-file-write.*\n.*guest-file-close/s);
    c.close();
  });
});

describe('QgaClient waitExec', () => {
  it('polls a process started earlier (another connection, a saved VM) until it exits', async () => {
    fake.execPolls = 2;
    const c = await connect();
    const r = await c.waitExec(77, { timeoutMs: 2_000, pollMs: 5 });
    expect(r).toEqual({ exitcode: 0, stdout: 'hello\n', stderr: 'warning: ü\n' });
    const polls = fake.received.filter((x) => x.execute === 'guest-exec-status');
    expect(polls.map((p) => p.arguments)).toEqual([{ pid: 77 }, { pid: 77 }]);
    expect(fake.received.some((x) => x.execute === 'guest-exec')).toBe(false);
    c.close();
  });
});

describe('QgaClient execStatus', () => {
  it('asks once: undefined while the process runs, its result once it exited', async () => {
    fake.execPolls = 2;
    const c = await connect();
    expect(await c.execStatus(77, { timeoutMs: 2_000 })).toBeUndefined();
    expect(await c.execStatus(77, { timeoutMs: 2_000 })).toEqual({
      exitcode: 0,
      stdout: 'hello\n',
      stderr: 'warning: ü\n',
    });
    expect(fake.received.filter((x) => x.execute === 'guest-exec-status')).toHaveLength(2);
    c.close();
  });
});

describe('QgaClient.connect', () => {
  it('retries until the socket appears', async () => {
    await fake.close();
    const late = new FakeQga(join(tmp.dir, 'late.sock'));
    const pending = QgaClient.connect(late.path, { timeoutMs: 3_000 });
    await new Promise((r) => setTimeout(r, 300));
    await late.listen();
    const c = await pending;
    await c.ping();
    expect(late.received.map((r) => r.execute)).toEqual(['guest-sync-delimited', 'guest-ping']);
    c.close();
    await late.close();
    fake = new FakeQga(join(tmp.dir, 'qga.sock'));
    await fake.listen();
  });

  it('times out when the socket never appears, and stops when aborted', async () => {
    const missing = join(tmp.dir, 'missing.sock');
    const t0 = Date.now();
    await expect(QgaClient.connect(missing, { timeoutMs: 250 })).rejects.toMatchObject({ code: 'timeout' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(200);
    const ac = new AbortController();
    const pending = QgaClient.connect(missing, { timeoutMs: 10_000, signal: ac.signal });
    setTimeout(() => ac.abort(new Error('vm deleted')), 100);
    await expect(pending).rejects.toThrow('vm deleted');
  });
});

describe('QgaHold', () => {
  const until = async (cond: () => boolean, ms = 2_000): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const open = (): Socket[] => fake.clients.filter((s) => !s.destroyed && !s.readableEnded);

  it('keeps the port connected, lends that connection to a client and connects again after it', async () => {
    const hold = QgaHold.start(fake.path);
    try {
      await until(() => hold.holding);
      expect(fake.clients).toHaveLength(1);
      const c = await connect();
      expect(hold.holding).toBe(false);
      await c.ping();
      // The client talked over the held connection: QEMU (here the fake) saw no second one.
      expect(fake.clients).toHaveLength(1);
      c.close();
      await until(() => hold.holding);
      expect(fake.clients).toHaveLength(2);
      await until(() => open().length === 1);
    } finally {
      hold.stop();
    }
    await until(() => open().length === 0);
    expect(QgaHold.of(fake.path)).toBeUndefined();
  });

  it('lets a client connect on its own while the hold is not connected, and holds again after', async () => {
    await fake.close();
    const hold = QgaHold.start(fake.path);
    try {
      fake = new FakeQga(fake.path);
      await fake.listen();
      const c = await connect(); // the hold is backing off: the client makes its own connection
      await c.ping();
      expect(hold.holding).toBe(false);
      c.close();
      await until(() => hold.holding);
      expect(fake.clients).toHaveLength(2);
    } finally {
      hold.stop();
    }
  });

  it('drops what the agent writes while nobody uses the port; the next client still syncs', async () => {
    const hold = QgaHold.start(fake.path);
    try {
      await until(() => hold.holding);
      fake.clients[0]!.write('{"return": {"stale": true}}\n');
      fake.staleBeforeSync = '{"return": 7}\n';
      const c = await connect();
      fake.handler = () => ({ return: { fresh: true } });
      await expect(c.execute('guest-info')).resolves.toEqual({ fresh: true });
      c.close();
    } finally {
      hold.stop();
    }
  });
});
