// Status polls log their summary line at debug; everything else keeps its level.
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { POLL_METHODS, summaryLevel, withQuietPolls } from '../../src/daemon/rpc-log.ts';
import { createLogger } from '../../src/log/logger.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { MemoryLog, waitForRecord } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const levelOf = (r: Record<string, unknown>): unknown => r.level;

describe('withQuietPolls', () => {
  it('writes a poll’s "rpc completed" at debug and leaves every other line alone', () => {
    const mem = new MemoryLog();
    const log = withQuietPolls(createLogger({ name: 't', level: 'debug', stream: mem }), 'rpc');
    log.info({ method: 'vm.create.status', duration_ms: 1 }, 'rpc completed');
    log.info({ method: 'vm.create.begin', duration_ms: 2 }, 'rpc completed');
    log.warn({ method: 'vm.create.status', code: 'not_found' }, 'rpc failed');
    log.info({ method: 'ping' }, 'something else');
    log.child({ vm: 'demo' }).info('from a child');
    const rs = mem.records();
    expect(rs.map((r) => [r.msg, r.method, levelOf(r)])).toEqual([
      ['rpc completed', 'vm.create.status', 'debug'],
      ['rpc completed', 'vm.create.begin', 'info'],
      ['rpc failed', 'vm.create.status', 'warn'],
      ['something else', 'ping', 'info'],
      ['from a child', undefined, 'info'],
    ]);
    expect(rs[4]!.vm).toBe('demo');
  });

  it('the poll methods are the status queries, not the calls that do work', () => {
    for (const m of ['ping', 'vm.create.status', 'image.build.status', 'image.warm.status'])
      expect(summaryLevel(m)).toBe('debug');
    for (const m of ['daemon.status', 'vm.create.begin', 'vm.list', 'image.build.begin', 'op.trace'])
      expect(summaryLevel(m)).toBe('info');
    expect(POLL_METHODS.has('daemon.status')).toBe(false);
  });
});

describe('the RPC server with the quiet-poll logger', () => {
  const tmp = shortTempDir('bgpl');
  const sock = join(tmp.dir, 's.sock');
  const mem = new MemoryLog();
  const server = createRpcServer({
    log: withQuietPolls(createLogger({ name: 't', level: 'info', stream: mem }), 'rpc'),
    summaryPrefix: 'rpc',
    dispatcher: {
      dispatch: async (ctx, req) => {
        if (req.method === 'vm.fly') throw new ErrorResponse('unknown_method', 'no such method');
        return { ok: true, result: {}, op_id: ctx.opId };
      },
    },
  });
  beforeAll(() => listenUnix(server, sock));
  afterAll(() => {
    server.close();
    tmp.cleanup();
  });

  const call = (method: string): Promise<string> =>
    new Promise((resolve, reject) => {
      let got = '';
      const s = createConnection({ path: sock });
      s.on('connect', () => s.write(`${JSON.stringify({ version: 1, method })}\n`));
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });

  it('at info: one summary line per call that did work, none for polls, failures always', async () => {
    await call('image.build.status');
    await call('ping');
    await call('vm.list');
    await call('vm.fly');
    await waitForRecord(mem, (r) => r.msg === 'rpc failed');
    await waitForRecord(mem, (r) => r.msg === 'rpc completed' && r.method === 'vm.list');
    const summaries = mem.records().filter((r) => /^rpc (completed|failed)$/.test(r.msg));
    expect(summaries.map((r) => r.method)).toEqual(['vm.list', 'vm.fly']);
  });
});
