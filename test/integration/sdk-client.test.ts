// The SDK's own behaviour over a real unix socket, against a scripted server built on the real
// RPC server (src/rpc/server.ts): stream frames as an async iterator (and a break ending the
// call), operation waits with progress (typed per kind and generic), a failed operation's code
// and id, an abort on a plain call, and a custom transport.
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operation, VmCreateStatusResult } from '../../generated/types.gen.ts';
import type { RpcContext } from '../../src/rpc/context.ts';
import type { HandlerResponse, RequestEnvelope } from '../../src/rpc/envelope.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { BangerClient, isMethodError, type Transport } from '../../src/sdk.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const BEGIN_OP = 'op-0000000000c1';
const FAILING_OP = 'op-0000000000f2';

function operation(id: string, state: Operation['state'], step: string): Operation {
  const op: Operation = {
    id,
    kind: 'vm.create',
    method: 'vm.create.begin',
    state,
    started_at: '2026-01-14T09:31:02.120Z',
    current_step: step,
    steps: [{ name: step, state: state === 'running' ? 'running' : 'done' }],
  };
  if (state === 'failed') op.error = { code: 'not_found', message: 'image debian-12 not found' };
  return op;
}

describe('the SDK against a scripted server', () => {
  const tmp = shortTempDir('sdkc');
  const socket = join(tmp.dir, 's.sock');
  let server: Server;
  const open = new Set<Socket>();
  let polls = 0;
  let logsClosed: Promise<void> = Promise.resolve();

  async function dispatch(ctx: RpcContext, req: RequestEnvelope): Promise<HandlerResponse> {
    const p = (req.params ?? {}) as Record<string, unknown>;
    const ok = (result: unknown): HandlerResponse => ({ ok: true, result, op_id: ctx.opId });
    switch (req.method) {
      case 'vm.logs': {
        if (!p.follow) return ok({ name: p.name, data: 'tail', truncated: false, path: '/x' });
        let closed!: () => void;
        logsClosed = new Promise((r) => (closed = r));
        ctx.signal.addEventListener('abort', () => closed(), { once: true });
        return {
          stream: (async function* () {
            yield { data: 'one\n' };
            yield { data: 'two\n' };
            if (p.name === 'endless') {
              // Like a running VM: frames until the client goes away.
              for (let i = 0; !ctx.signal.aborted; i++) {
                yield { data: `more ${i}\n` };
                await new Promise((r) => setTimeout(r, 5));
              }
            }
          })(),
          final: () => ({ name: p.name, data: '', truncated: false, path: '/x' }),
        };
      }
      case 'vm.create.status': {
        if (p.operation_id === FAILING_OP)
          return ok({ operation: operation(FAILING_OP, 'failed', 'resolve_image') });
        polls++;
        const state = polls >= 3 ? 'succeeded' : 'running';
        return ok({ operation: operation(BEGIN_OP, state, polls >= 3 ? 'wait_ssh' : `step${polls}`) });
      }
      case 'op.show':
        return ok({
          summary: { op_id: p.op_id, method: 'vm.create.begin' },
          operation: operation(p.op_id as string, 'running', 'boot'),
        });
      case 'vm.stop':
        throw new ErrorResponse('not_running', `vm ${String(p.name)} is not running`);
      case 'daemon.status':
        // Answers late: the caller's abort must end the call first. (Not waiting for ctx.signal:
        // the server pauses the socket after the request line, so it sees a client's close only
        // when it writes.)
        await new Promise((r) => setTimeout(r, 300));
        return ok(null);
      default:
        throw new ErrorResponse('unknown_method', req.method);
    }
  }

  beforeAll(async () => {
    server = createRpcServer({
      dispatcher: { dispatch },
      log: pino({ enabled: false }),
      summaryPrefix: 'rpc',
    });
    server.on('connection', (c) => {
      open.add(c);
      c.on('close', () => open.delete(c));
    });
    await listenUnix(server, socket);
  });
  afterAll(async () => {
    // The late daemon.status answer may still be on its way; everything else must be closed.
    for (let i = 0; i < 100 && open.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
    const left = [...open];
    for (const c of left) c.destroy();
    await new Promise((r) => server.close(r));
    expect(left.length, 'connections left open by the tests').toBe(0);
    tmp.cleanup();
  });

  it('vm.logsStream yields the frames, then .result is the final result', async () => {
    const client = new BangerClient({ socket });
    const stream = client.vm.logsStream({ name: 'calm-otter', follow: true });
    const frames: string[] = [];
    for await (const f of stream) frames.push(f.data);
    expect(frames).toEqual(['one\n', 'two\n']);
    expect(await stream.result).toEqual({ name: 'calm-otter', data: '', truncated: false, path: '/x' });
  });

  it('leaving the loop early ends the call on the server; .result rejects with canceled', async () => {
    const stream = new BangerClient({ socket }).vm.logsStream({ name: 'endless', follow: true });
    const frames: string[] = [];
    for await (const f of stream) {
      frames.push(f.data);
      if (frames.length === 4) break;
    }
    await logsClosed; // the server saw the connection go (its ctx.signal aborted)
    expect(frames.slice(0, 2)).toEqual(['one\n', 'two\n']);
    await expect(stream.result).rejects.toMatchObject({ code: 'canceled' });
  });

  it('vm.create.wait polls status until the end, reporting each poll', async () => {
    polls = 0;
    const seen: string[] = [];
    const done: VmCreateStatusResult = await new BangerClient({ socket }).vm.create.wait(BEGIN_OP, {
      intervalMs: 1,
      onProgress: (s) => seen.push(`${s.operation.state}:${s.operation.current_step}`),
    });
    expect(done.operation.state).toBe('succeeded');
    expect(seen).toEqual(['running:step1', 'running:step2', 'succeeded:wait_ssh']);
  });

  it('operations.wait learns the kind from op.show and waits the same way', async () => {
    polls = 0;
    const done = await new BangerClient({ socket }).operations.wait(BEGIN_OP, { intervalMs: 1 });
    expect(done.operation).toMatchObject({ id: BEGIN_OP, kind: 'vm.create', state: 'succeeded' });
  });

  it("a failed operation rejects with the operation's code and op id", async () => {
    const err = await new BangerClient({ socket }).vm.create.wait(FAILING_OP).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ErrorResponse);
    expect(err).toMatchObject({
      code: 'not_found',
      opId: FAILING_OP,
      bareMessage: 'image debian-12 not found',
    });
  });

  it('a wire error is an ErrorResponse narrowed by the method; the op id is the call’s', async () => {
    const err = await new BangerClient({ socket }).vm.stop({ name: 'x' }).catch((e: unknown) => e);
    expect(isMethodError(err, 'vm.stop')).toBe(true);
    expect(isMethodError(err, 'vm.show')).toBe(false); // not_running is not a vm.show code
    if (!isMethodError(err, 'vm.stop')) return;
    expect(err.code).toBe('not_running');
    expect(err.opId).toMatch(/^op-[0-9a-f]{6,32}$/);
  });

  it('an AbortSignal ends a call with canceled', async () => {
    const abort = new AbortController();
    const call = new BangerClient({ socket }).daemon.status(undefined, { signal: abort.signal });
    setTimeout(() => abort.abort(), 20);
    await expect(call).rejects.toMatchObject({ code: 'canceled' });
  });

  it('a custom transport replaces the socket', async () => {
    const sent: unknown[][] = [];
    const transport: Transport = { call: async (...args) => (sent.push(args), { pong: true, version: 't' }) };
    const client = new BangerClient({ transport });
    expect(client.socket).toBeUndefined();
    expect(await client.ping()).toEqual({ pong: true, version: 't' });
    expect(sent).toEqual([['ping', undefined, undefined]]);
  });

  it('new BangerClient() takes $BANGER_SOCKET, like the CLI', () => {
    const before = process.env.BANGER_SOCKET;
    process.env.BANGER_SOCKET = socket;
    try {
      expect(new BangerClient().socket).toBe(socket);
    } finally {
      if (before === undefined) delete process.env.BANGER_SOCKET;
      else process.env.BANGER_SOCKET = before;
    }
  });
});
