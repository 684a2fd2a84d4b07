// The declared-codes contract through a real RPC server: domain errors reach the wire through the
// one table (src/rpc/error-map.ts), and a handler answering with a code its method does not
// declare is logged ("undeclared error code", method, code, op_id) and, in check mode (on in every
// vitest run), recorded so that test/helpers/error-codes-setup.ts fails the test. The response
// itself is left alone: the client sees the real error.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { Services } from '../../generated/handlers.gen.ts';
import { helperDeclaredErrors } from '../../generated/dispatch.helper.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { EngineError } from '../../src/engine/errors.ts';
import { StoreError } from '../../src/store/errors.ts';
import { TransitionError } from '../../src/vm/states.ts';
import type { RpcContext } from '../../src/rpc/context.ts';
import {
  assertNoUndeclaredCodes,
  CHECK_ENV,
  dispatchChecked,
  takeUndeclaredCodes,
} from '../../src/rpc/error-check.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { MemoryLog, waitForRecord } from '../helpers/logs.ts';
import { rawExchange } from '../helpers/raw.ts';
import { shortTempDir } from '../helpers/tmp.ts';

interface Line {
  ok: boolean;
  frame?: unknown;
  error?: { code: string; message: string; op_id: string };
}

const fail = (err: unknown) => async (): Promise<never> => {
  throw err;
};

describe('declared error codes', () => {
  const tmp = shortTempDir();
  const socket = join(tmp.dir, 'c.sock');
  const log = new MemoryLog();
  const logger = createLogger({ name: 'bangerd', stream: log });
  // Each method fails the way one domain layer would.
  const services = {
    vm: {
      // Undeclared: vm.stop lists conflict, not_found, not_running.
      stop: fail(new ErrorResponse('already_exists', 'a stop that claims a name clash')),
      // Declared through the table: EngineError not_running → not_running.
      kill: fail(new EngineError('not_running', 'the VMM of box is gone')),
      // Declared through the table: a refused transition → conflict.
      start: fail(new TransitionError('box', 'running', 'creating')),
      // A stream that breaks after one frame with a code vm.logs does not declare (it lists not_found).
      logs: async () => ({
        frames: (async function* () {
          yield { data: 'booted\n' };
          throw new EngineError('not_running', 'the VMM went away');
        })(),
        result: {},
      }),
    },
    // StoreError in_use → conflict, which kernel.delete declares.
    kernel: { delete: fail(new StoreError('in_use', 'kernel k is used by image i')) },
    // EngineError already_running → conflict, which op.show does not declare.
    op: { show: fail(new EngineError('already_running', 'a VMM already owns this directory')) },
  } as unknown as Services;
  const daemon = new Daemon(logger, services);
  const server = createRpcServer({ dispatcher: daemon, log: logger, summaryPrefix: 'rpc' });

  async function call(method: string, params: object = { name: 'box' }): Promise<Line[]> {
    const { lines } = await rawExchange(socket, `${JSON.stringify({ version: 1, method, params })}\n`);
    return lines as Line[];
  }

  beforeAll(() => listenUnix(server, socket));
  afterAll(() => {
    server.close();
    tmp.cleanup();
  });
  // Whatever a test leaves recorded would fail it in the setup file; these tests take their own.
  afterEach(() => void takeUndeclaredCodes());

  it('is on in the test suites', () => {
    expect(process.env[CHECK_ENV]).toBe('1');
  });

  it('an undeclared code is answered as is, logged and recorded with the op id', async () => {
    const [line] = await call('vm.stop');
    expect(line?.error).toMatchObject({ code: 'already_exists', message: 'a stop that claims a name clash' });
    const opId = line?.error?.op_id;
    expect(opId).toMatch(/^op-[0-9a-f]+$/);
    const rec = await waitForRecord(log, (r) => r.msg === 'undeclared error code' && r.op_id === opId);
    expect(rec).toMatchObject({ level: 'error', method: 'vm.stop', code: 'already_exists' });
    expect(takeUndeclaredCodes()).toEqual([
      { method: 'vm.stop', code: 'already_exists', opId, message: 'a stop that claims a name clash' },
    ]);
  });

  it("fails the test it happens in (the suites' afterEach), naming method, code and op id", async () => {
    const [line] = await call('vm.stop');
    const opId = line?.error?.op_id ?? '';
    expect(() => assertNoUndeclaredCodes()).toThrow(
      `vm.stop answered already_exists (${opId}): a stop that claims a name clash`,
    );
    // It drained what it reported: the next test starts clean.
    expect(() => assertNoUndeclaredCodes()).not.toThrow();
  });

  it('a domain error the table maps to an undeclared code is caught too', async () => {
    const [line] = await call('op.show', { op_id: 'op-123456' });
    expect(line?.error?.code).toBe('conflict');
    expect(takeUndeclaredCodes().map((b) => [b.method, b.code])).toEqual([['op.show', 'conflict']]);
  });

  it('a stream that fails with an undeclared code is caught after its frames', async () => {
    const lines = await call('vm.logs', { name: 'box', follow: true });
    expect(lines[0]?.frame).toEqual({ data: 'booted\n' });
    expect(lines.at(-1)?.error?.code).toBe('not_running');
    expect(takeUndeclaredCodes().map((b) => [b.method, b.code])).toEqual([['vm.logs', 'not_running']]);
  });

  it.each([
    ['vm.kill', { name: 'box' }, 'not_running', 'the VMM of box is gone'],
    ['vm.start', { name: 'box' }, 'conflict', 'vm "box": no transition from running to creating'],
    ['kernel.delete', { name: 'k' }, 'conflict', 'kernel k is used by image i'],
  ])('%s: a declared code from the table passes with its message', async (method, params, code, message) => {
    const [line] = await call(method, params);
    expect(line?.error).toMatchObject({ code, message });
    expect(takeUndeclaredCodes()).toEqual([]);
  });

  it('universal codes are always allowed (unknown method, bad params)', async () => {
    expect((await call('vm.nope'))[0]?.error?.code).toBe('unknown_method');
    expect((await call('vm.stop', { name: 'box', zz: 1 }))[0]?.error?.code).toBe('bad_request');
    expect(takeUndeclaredCodes()).toEqual([]);
  });

  it('outside check mode a breach is still logged, but not recorded', async () => {
    const before = process.env[CHECK_ENV];
    delete process.env[CHECK_ENV];
    try {
      const [line] = await call('vm.stop');
      const opId = line?.error?.op_id;
      await waitForRecord(log, (r) => r.msg === 'undeclared error code' && r.op_id === opId);
      expect(takeUndeclaredCodes()).toEqual([]);
    } finally {
      process.env[CHECK_ENV] = before;
    }
  });
});

describe('the helper surface uses its own declared table', () => {
  const ctx = (log: MemoryLog): RpcContext => ({
    opId: 'op-abcdef',
    method: 'priv.ping',
    startedAt: Date.now(),
    signal: new AbortController().signal,
    log: createLogger({ name: 'bangerd-root', stream: log }),
  });
  afterEach(() => void takeUndeclaredCodes());

  it('priv.ping may answer unauthorized, not not_found', async () => {
    const log = new MemoryLog();
    const req = { version: 1, method: 'priv.ping' };
    const run = (e: ErrorResponse) => () => Promise.reject(e);
    await expect(
      dispatchChecked(helperDeclaredErrors, ctx(log), req, run(new ErrorResponse('unauthorized', 'no'))),
    ).rejects.toMatchObject({ code: 'unauthorized', opId: 'op-abcdef' });
    expect(takeUndeclaredCodes()).toEqual([]);
    await expect(
      dispatchChecked(helperDeclaredErrors, ctx(log), req, run(new ErrorResponse('not_found', 'gone'))),
    ).rejects.toMatchObject({ code: 'not_found' });
    expect(takeUndeclaredCodes()).toEqual([
      { method: 'priv.ping', code: 'not_found', opId: 'op-abcdef', message: 'gone' },
    ]);
  });
});
