// Connection hygiene: whatever a client does (oversized, truncated, garbage, silent, never
// reading, abandoning a follow), the server ends up with the socket destroyed, so its open
// descriptors return to where they were; and a stream's producer learns of a hang-up at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { connect, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type { Services, VmService } from '../../generated/handlers.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { rootMethods } from '../../src/daemon/services/root.ts';
import { serialLogs } from '../../src/daemon/vm-logs.ts';
import type { RpcContext } from '../../src/rpc/context.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { vmFiles } from '../../src/vm/layout.ts';
import { MemoryLog, waitForRecord, type LogRecord } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const OP = /^op-[0-9a-f]{6,32}$/;
const MIB = 1024 * 1024;
const SUMMARY = /^rpc (completed|failed)$/;

interface Line {
  ok: boolean;
  frame?: { data: string };
  final?: boolean;
  error?: { code: string; message: string; op_id: string };
}

/** What a client saw: the lines it read, whether it saw the server's EOF, when it closed. */
interface Seen {
  lines: Line[];
  eof: boolean;
  closedAt: number;
}

const openFds = (): number => readdirSync('/proc/self/fd').length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function connections(server: Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
  );
}

async function until(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A client socket, recording what it reads; `paused` ones read nothing until resumed. */
function client(path: string, opts: { paused?: boolean } = {}): { s: Socket; seen: Promise<Seen> } {
  const s = connect(path);
  if (opts.paused) s.pause();
  let buf = '';
  let eof = false;
  s.setEncoding('utf8');
  s.on('data', (d: string) => (buf += d));
  s.on('end', () => (eof = true));
  s.on('error', () => undefined);
  const seen = new Promise<Seen>((resolve) =>
    s.on('close', () => resolve({ lines: parse(buf), eof, closedAt: Date.now() })),
  );
  return { s, seen };
}

function parse(buf: string): Line[] {
  return buf
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Line);
}

function firstFrame(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    const on = (d: string): void => {
      if (d.includes('\n')) {
        s.off('data', on);
        resolve();
      }
    };
    s.on('data', on);
  });
}

/** An oversized request written whole (the write completes only if the server drains it). */
function oversized(path: string, bytes: number, paused: boolean): { s: Socket; seen: Promise<Seen> } {
  const c = client(path, { paused: true });
  const body = `{"version":1,"method":"ping","params":{"x":"${'a'.repeat(bytes)}"}}\n`;
  c.s.on('connect', () =>
    c.s.write(body, () => {
      // Only now start reading, like a blocking client that writes everything first.
      if (!paused) c.s.resume();
    }),
  );
  return c;
}

const FOLLOW = '{"version":1,"method":"vm.logs","params":{"name":"box","follow":true}}\n';

describe('connection hygiene', () => {
  const tmp = shortTempDir();
  const socket = join(tmp.dir, 'h.sock');
  const memlog = new MemoryLog();
  const logger = createLogger({ name: 'bangerd', stream: memlog });
  const serial = vmFiles(tmp.dir, 'vm-hygiene').serialLog;
  // Only ping and vm.logs, the real ones; the VM is always running and its serial log never grows.
  const logs: VmService['logs'] = (p, ctx) =>
    serialLogs({ name: p.name, path: serial, stillRunning: () => true }, p, ctx);
  const daemon = new Daemon(logger, { ...rootMethods(() => undefined), vm: { logs } } as unknown as Services);
  const server = createRpcServer({
    dispatcher: daemon,
    log: logger,
    summaryPrefix: 'rpc',
    requestTimeoutMs: 2000,
    // Long enough for a client still writing 3 MiB on a busy machine; short for the test.
    lingerMs: 1000,
    flushTimeoutMs: 2000,
  });
  const summaries = (): LogRecord[] => memlog.records().filter((r) => SUMMARY.test(r.msg));

  beforeAll(async () => {
    mkdirSync(dirname(serial), { recursive: true });
    writeFileSync(serial, 'booted\n');
    await listenUnix(server, socket);
  });
  afterAll(() => {
    server.close();
    tmp.cleanup();
  });

  it('a client that writes a 3 MiB request before reading gets bad_request with an op id, then EOF', async () => {
    const { seen } = oversized(socket, 3 * MIB, false);
    const r = await seen;
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]?.error?.code).toBe('bad_request');
    expect(r.lines[0]?.error?.message).toBe('request larger than 1048576 bytes');
    expect(r.lines[0]?.error?.op_id).toMatch(OP);
    expect(r.eof).toBe(true);
  });

  it('an abandoned follow ends in the daemon within a second of the hang-up, with nothing written', async () => {
    const c = client(socket);
    c.s.on('connect', () => c.s.write(FOLLOW));
    await firstFrame(c.s);
    const before = summaries().length;
    c.s.destroy();
    const closedAt = Date.now();
    const done = await waitForRecord(memlog, (x) => x.method === 'vm.logs' && SUMMARY.test(x.msg), 1000);
    expect(done.msg).toBe('rpc completed');
    expect(Date.now() - closedAt).toBeLessThan(1000);
    expect(summaries().length).toBe(before + 1);
    await until('no connections', async () => (await connections(server)) === 0, 1000);
  });

  it('200 hostile connections leave no descriptor behind', { timeout: 60_000 }, async () => {
    // Warm up whatever opens lazily (log destination, fs handles) before the baseline.
    const warm = client(socket);
    warm.s.on('connect', () => warm.s.write('{"version":1,"method":"ping"}\n'));
    expect((await warm.seen).lines[0]?.ok).toBe(true);
    await until('no connections', async () => (await connections(server)) === 0, 2000);
    const baseline = openFds();
    const summariesBefore = summaries().length;

    type Kind = (path: string) => { s: Socket; seen: Promise<Seen>; paused?: boolean };
    const kinds: Record<string, Kind> = {
      // Written whole before reading; answered, then EOF.
      oversizedThenRead: (p) => oversized(p, 3 * MIB, false),
      // Written whole, never read and never closed: the server must let go on its own.
      oversizedAbandoned: (p) => ({ ...oversized(p, Math.floor(1.5 * MIB), true), paused: true }),
      truncatedClosed: (p) => {
        const c = client(p);
        c.s.on('connect', () => {
          c.s.write('{"version":1,"meth');
          c.s.destroy();
        });
        return c;
      },
      truncatedHalfClosed: (p) => {
        const c = client(p);
        c.s.on('connect', () => c.s.end('{"version":1,"meth'));
        return c;
      },
      garbage: (p) => {
        const c = client(p);
        c.s.on('connect', () => c.s.write(Buffer.from([0xff, 0x00, 0x13, 0x37, 0x0a])));
        return c;
      },
      // Half a line, then silence; reads nothing, never closes.
      slowAbandoned: (p) => {
        const c = client(p, { paused: true });
        c.s.on('connect', () => c.s.write('{"version":1,'));
        return { ...c, paused: true };
      },
      // Connects and does nothing at all.
      silent: (p) => ({ ...client(p, { paused: true }), paused: true }),
      // A fine request whose answer is never read.
      neverReads: (p) => {
        const c = client(p, { paused: true });
        c.s.on('connect', () => c.s.write('{"version":1,"method":"ping"}\n'));
        return { ...c, paused: true };
      },
      followAbandoned: (p) => {
        const c = client(p);
        c.s.on('connect', () => c.s.write(FOLLOW));
        void firstFrame(c.s).then(() => c.s.destroy());
        return c;
      },
      // Ends its side after the first frame: the stream ends, the final line still arrives.
      followHalfClosed: (p) => {
        const c = client(p);
        c.s.on('connect', () => c.s.write(FOLLOW));
        void firstFrame(c.s).then(() => c.s.end());
        return c;
      },
    };
    const names = Object.keys(kinds);
    const started: { kind: string; s: Socket; seen: Promise<Seen>; paused: boolean; closed: boolean }[] = [];
    for (let batch = 0; batch < 4; batch++) {
      for (let i = 0; i < 50; i++) {
        const kind = names[(batch * 50 + i) % names.length] ?? 'garbage';
        const c = (kinds[kind] as Kind)(socket);
        const entry = { kind, s: c.s, seen: c.seen, paused: c.paused ?? false, closed: false };
        void c.seen.then(() => (entry.closed = true));
        started.push(entry);
      }
      // Batches keep the listen backlog and the 2-core test machine out of the picture.
      const reading = started.filter((c) => !c.paused);
      await until('the clients that read to finish', () => reading.every((c) => c.closed), 15_000).catch(
        () => {
          const stuck = new Set(reading.filter((c) => !c.closed).map((c) => c.kind));
          throw new Error(`clients still waiting: ${[...stuck].join(', ')}`);
        },
      );
    }
    expect(started).toHaveLength(200);

    // The clients that never read or close still hold their ends: the server lets go anyway.
    await until('the server to drop every connection', async () => (await connections(server)) === 0, 10_000);
    const held = started.filter((c) => c.paused);
    expect(held.length).toBeGreaterThan(0);
    expect(held.every((c) => !c.s.destroyed)).toBe(true);
    // Once they look, they find the answer (if any) and the server's EOF.
    for (const c of held) c.s.resume();
    const results = await Promise.all(started.map(async (c) => ({ kind: c.kind, seen: await c.seen })));

    for (const { kind, seen } of results) {
      const first = seen.lines[0];
      switch (kind) {
        case 'oversizedThenRead':
        case 'oversizedAbandoned':
          expect(first?.error?.code).toBe('bad_request');
          expect(first?.error?.message).toMatch(/larger than 1048576 bytes/);
          expect(first?.error?.op_id).toMatch(OP);
          expect(seen.eof).toBe(true);
          break;
        case 'truncatedHalfClosed':
        case 'garbage':
        case 'slowAbandoned':
        case 'silent':
          expect(first?.error?.code).toBe('bad_request');
          expect(first?.error?.op_id).toMatch(OP);
          expect(seen.eof).toBe(true);
          break;
        case 'neverReads':
          expect(first?.ok).toBe(true);
          expect(seen.eof).toBe(true);
          break;
        case 'followHalfClosed':
          expect(seen.lines.at(-1)?.final).toBe(true);
          expect(seen.eof).toBe(true);
          break;
        default:
          break;
      }
    }
    // One summary line per connection, each call finished (follows included).
    await until('200 summary lines', () => summaries().length - summariesBefore >= 200, 5000);
    expect(summaries().length - summariesBefore).toBe(200);
    // No slack: every accepted socket and every client socket is closed again.
    await until('descriptors back to the baseline', () => openFds() <= baseline, 5000);
    expect(openFds()).toBe(baseline);
  });
});

describe('a stream whose client hangs up', () => {
  async function serveStream(): Promise<{
    server: Server;
    socket: string;
    aborted: Promise<number>;
    cleanup: () => void;
  }> {
    const tmp = shortTempDir();
    const socket = join(tmp.dir, 's.sock');
    let onAbort: (at: number) => void = () => undefined;
    const aborted = new Promise<number>((r) => (onAbort = r));
    // A producer that yields once and then waits, writing nothing, until it is told to stop.
    async function* producer(ctx: RpcContext): AsyncGenerator<{ data: string }> {
      yield { data: 'first' };
      await new Promise<void>((resolve) =>
        ctx.signal.addEventListener('abort', () => resolve(), { once: true }),
      );
      onAbort(Date.now());
    }
    const server = createRpcServer({
      log: createLogger({ name: 'fake', stream: new MemoryLog() }),
      summaryPrefix: 'rpc',
      dispatcher: {
        dispatch: async (ctx) => ({ stream: producer(ctx), final: () => ({ done: true }) }),
      },
    });
    await listenUnix(server, socket);
    return {
      server,
      socket,
      aborted,
      cleanup: () => {
        server.close();
        tmp.cleanup();
      },
    };
  }

  it('aborts its producer within a second of the close, without any write', async () => {
    const t = await serveStream();
    try {
      const c = client(t.socket);
      c.s.on('connect', () => c.s.write('{"version":1,"method":"x.follow"}\n'));
      await firstFrame(c.s);
      c.s.destroy();
      const closedAt = Date.now();
      const abortedAt = await Promise.race([t.aborted, sleep(1000).then(() => Infinity)]);
      expect(abortedAt - closedAt).toBeLessThan(1000);
      await until('no connections', async () => (await connections(t.server)) === 0, 1000);
    } finally {
      t.cleanup();
    }
  });

  it('on a half-close, aborts the producer and still sends the final line', async () => {
    const t = await serveStream();
    try {
      const c = client(t.socket);
      c.s.on('connect', () => c.s.write('{"version":1,"method":"x.follow"}\n'));
      await firstFrame(c.s);
      c.s.end();
      const seen = await c.seen;
      expect(await Promise.race([t.aborted, sleep(1000).then(() => Infinity)])).toBeLessThan(Infinity);
      expect(seen.lines.map((l) => l.frame?.data ?? l.final)).toEqual(['first', true]);
      expect(seen.lines[1]).toMatchObject({ ok: true, result: { done: true }, final: true });
      expect(seen.eof).toBe(true);
    } finally {
      t.cleanup();
    }
  });
});
