// Bad input never crashes a server: each case gets a clear error or a closed connection, and
// the server answers the next well-formed request.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Services } from '../../generated/handlers.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { rootMethods } from '../../src/daemon/services/root.ts';
import { DaemonServiceImpl } from '../../src/daemon/services/daemon.ts';
import { HelperLink } from '../../src/daemon/helper-link.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { rawExchange } from '../helpers/raw.ts';
import { shortTempDir } from '../helpers/tmp.ts';

interface Line {
  ok: boolean;
  error?: { code: string; message: string; op_id: string };
}

describe('hostile clients', () => {
  const tmp = shortTempDir();
  const socket = join(tmp.dir, 'h.sock');
  const log = new MemoryLog();
  const logger = createLogger({ name: 'bangerd', stream: log });
  const daemon = new Daemon(logger, {
    ...rootMethods(() => undefined),
    daemon: new DaemonServiceImpl(
      { socket, stateDir: tmp.dir, startedAt: new Date() },
      new HelperLink(undefined),
      new OperationRegistry(logger),
    ),
  } as unknown as Services);
  const server = createRpcServer({
    dispatcher: daemon,
    log: logger,
    summaryPrefix: 'rpc',
    requestTimeoutMs: 300,
  });

  beforeAll(() => listenUnix(server, socket));
  afterAll(() => {
    server.close();
    tmp.cleanup();
  });

  async function stillServes(): Promise<void> {
    const { lines } = await rawExchange(socket, '{"version":1,"method":"ping"}\n');
    expect((lines[0] as Line).ok).toBe(true);
  }

  it('garbage bytes', async () => {
    const { lines } = await rawExchange(socket, Buffer.from([0xff, 0x00, 0x13, 0x37, 0x0a]));
    expect((lines[0] as Line).error?.code).toBe('bad_request');
    await stillServes();
  });

  it('a request over 1 MiB', async () => {
    const big = `{"version":1,"method":"ping","params":{"x":"${'a'.repeat(1024 * 1024 + 10)}"}}\n`;
    const { lines } = await rawExchange(socket, big);
    const r = lines[0] as Line;
    expect(r.error?.code).toBe('bad_request');
    expect(r.error?.message).toMatch(/larger than/);
    await stillServes();
  });

  it('a truncated object followed by EOF', async () => {
    const { lines } = await rawExchange(socket, '{"version":1,"meth', { end: true });
    expect((lines[0] as Line).error?.code).toBe('bad_request');
    await stillServes();
  });

  it('unknown params fields', async () => {
    const { lines } = await rawExchange(
      socket,
      '{"version":1,"method":"daemon.operations.list","params":{"limit":1,"evil":true}}\n',
    );
    const r = lines[0] as Line;
    expect(r.error?.code).toBe('bad_request');
    expect(r.error?.message).toContain('evil');
    await stillServes();
  });

  it('params on a method that takes none', async () => {
    const { lines } = await rawExchange(socket, '{"version":1,"method":"daemon.status","params":{"x":1}}\n');
    expect((lines[0] as Line).error?.code).toBe('bad_request');
  });

  it('a slow client that never finishes its line times out', async () => {
    const { lines, closed } = await rawExchange(socket, '{"version":1,', { timeoutMs: 3000 });
    expect(closed).toBe(true);
    expect((lines[0] as Line).error?.message).toMatch(/no complete request line/);
    await stillServes();
  });

  it('a client that disconnects mid-request', async () => {
    await new Promise<void>((resolve) => {
      const s = connect(socket, () => {
        s.write('{"version":1,"method":"pi');
        s.destroy();
        resolve();
      });
    });
    await stillServes();
  });

  it('many connections at once', async () => {
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        rawExchange(socket, i % 2 ? '{"version":1,"method":"ping"}\n' : 'nonsense\n').then(
          (r) => r.lines[0] as Line,
        ),
      ),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(25);
    expect(results.filter((r) => r.error?.code === 'bad_request')).toHaveLength(25);
  });
});
