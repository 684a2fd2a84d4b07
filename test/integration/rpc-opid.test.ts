// Op ids end to end inside one process: dispatch stamps them on every error path, the log
// records of a call carry the same id, and the client rejects with a typed ErrorResponse.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { BangerClient } from '../../generated/client.gen.ts';
import type { DaemonService } from '../../generated/handlers.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { startDaemon, type RunningDaemon } from '../../src/daemon/start.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { MemoryLog, waitForRecord } from '../helpers/logs.ts';
import { rawExchange } from '../helpers/raw.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const OP = /^op-[0-9a-f]{6,32}$/;
interface ErrLine {
  ok: false;
  error: { code: string; message: string; op_id: string };
}

describe('dispatch stamps op ids', () => {
  const tmp = shortTempDir();
  const log = new MemoryLog();
  let d: RunningDaemon;
  const socket = join(tmp.dir, 'd.sock');

  beforeAll(async () => {
    d = await startDaemon({
      socket,
      stateDir: join(tmp.dir, 'state'),
      config: DEFAULT_CONFIG,
      helperSocket: undefined,
      logStream: log,
    });
  });
  afterAll(async () => {
    await d.stop('test');
    tmp.cleanup();
  });

  async function expectStampedError(payload: string, code: string): Promise<void> {
    const { lines } = await rawExchange(socket, payload);
    expect(lines).toHaveLength(1);
    const r = lines[0] as ErrLine;
    expect(r.ok).toBe(false);
    expect(r.error.code).toBe(code);
    expect(r.error.op_id).toMatch(OP);
    const failed = await waitForRecord(log, (x) => x.msg === 'rpc failed' && x.op_id === r.error.op_id);
    expect(failed.code).toBe(code);
    expect(typeof failed.duration_ms).toBe('number');
    // Exactly one summary line for that call, and every record of it carries the same id.
    expect(log.byOp(r.error.op_id).filter((x) => /^rpc (completed|failed)$/.test(x.msg))).toHaveLength(1);
  }

  it('on unknown_method', () => expectStampedError('{"version":1,"method":"vm.fly"}\n', 'unknown_method'));
  it('on bad_version', () => expectStampedError('{"version":2,"method":"ping"}\n', 'bad_version'));
  it('on a malformed envelope', () => expectStampedError('{"version":1,"method":\n', 'bad_request'));
  it('on a non-object envelope', () => expectStampedError('[1,2,3]\n', 'bad_request'));
  it('on unknown params fields', () =>
    expectStampedError(
      '{"version":1,"method":"daemon.operations.list","params":{"nope":1}}\n',
      'bad_request',
    ));

  it('adopts a well-formed caller op id and replaces a malformed one', async () => {
    const adopted = await rawExchange(socket, '{"version":1,"method":"ping","op_id":"op-abcdef123456"}\n');
    expect((adopted.lines[0] as { op_id: string }).op_id).toBe('op-abcdef123456');
    const hostile = await rawExchange(
      socket,
      '{"version":1,"method":"nope","op_id":"op-x\\n{\\"forged\\":1}"}\n',
    );
    const e = (hostile.lines[0] as ErrLine).error;
    expect(e.op_id).toMatch(OP);
    expect(e.op_id).not.toContain('forged');
  });

  it('call() rejects with a typed ErrorResponse whose message ends with the op id', async () => {
    const t = new SocketTransport(socket);
    const err = await t.call('vm.fly').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ErrorResponse);
    const e = err as ErrorResponse;
    expect(e.code).toBe('unknown_method');
    expect(e.opId).toMatch(OP);
    expect(e.message.endsWith(` (${e.opId})`)).toBe(true);
    expect(String(e)).toContain(`(${e.opId})`);
  });

  it('the client forwards an explicit op id and the daemon logs under it', async () => {
    const c = new BangerClient(new SocketTransport(socket, { opId: 'op-feedbeef' }));
    const r = await c.daemon.status();
    expect(r.helper.configured).toBe(false);
    const done = await waitForRecord(log, (x) => x.msg === 'rpc completed' && x.op_id === 'op-feedbeef');
    expect(done.method).toBe('daemon.status');
  });

  it('concurrent calls never mix ids', async () => {
    const c = new BangerClient(new SocketTransport(socket));
    const ids = Array.from({ length: 20 }, (_, i) => `op-${(0xa00000 + i).toString(16)}`);
    // vm.list, not ping: a poll's summary line is at debug, below this daemon's log level.
    await Promise.all(ids.map((id) => c.vm.list(undefined, { opId: id })));
    for (const id of ids) {
      const recs = log.byOp(id);
      expect(recs.length).toBeGreaterThan(0);
      expect(recs.every((r) => r.op_id === id && r.method === 'vm.list')).toBe(true);
    }
  });
});

describe('a service-thrown error', () => {
  it('is mapped once, stamped with the op id, and logged under it', async () => {
    const tmp = shortTempDir();
    const log = new MemoryLog();
    const logger = createLogger({ name: 'bangerd', stream: log });
    const throwing: DaemonService = {
      status: async (ctx) => {
        ctx.log.info('about to fail');
        throw new Error('disk on fire');
      },
      operations: {
        list: async () => {
          // A code the method may answer with (its schema declares none of its own).
          throw new ErrorResponse('bad_request', 'limit out of range');
        },
      },
    };
    const daemon = new Daemon(logger, { daemon: throwing } as never);
    const server = createRpcServer({ dispatcher: daemon, log: logger, summaryPrefix: 'rpc' });
    const socket = join(tmp.dir, 's.sock');
    await listenUnix(server, socket);
    try {
      const c = new BangerClient(new SocketTransport(socket));
      const e1 = (await c.daemon.status().catch((e: unknown) => e)) as ErrorResponse;
      expect(e1).toBeInstanceOf(ErrorResponse);
      expect(e1.code).toBe('operation_failed');
      expect(e1.bareMessage).toBe('disk on fire');
      const recs = log.byOp(e1.opId!);
      expect(recs.map((r) => r.msg)).toEqual(['about to fail', 'rpc failed']);
      const e2 = (await c.daemon.operations.list({}).catch((e: unknown) => e)) as ErrorResponse;
      expect(e2.code).toBe('bad_request');
      expect(e2.opId).toMatch(OP);
      await waitForRecord(
        log,
        (r) => r.msg === 'rpc failed' && r.op_id === e2.opId && r.code === 'bad_request',
      );
    } finally {
      server.close();
      tmp.cleanup();
    }
  });
});
