// Special methods: their own encoding or pre-service validation, so they are named handlers
// rather than generic adapters. vm.logs streams; vm.ssh must say not_found / not_running.
import { open, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SpecialHandlers } from '../../generated/handlers.gen.ts';
import { PROTOCOL_VERSION } from '../../generated/methods.gen.ts';
import type { PingResult, ShutdownResult, VmLogsParams, VmLogsResult } from '../../generated/types.gen.ts';
import { paramValidators } from '../../generated/validators.gen.ts';
import type { ValidateFunction } from 'ajv';
import type { RpcContext } from '../rpc/context.ts';
import type { RequestEnvelope } from '../rpc/envelope.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import { describeAjvErrors } from '../rpc/validation.ts';
import { BANGER_VERSION } from '../version.ts';
import { vmFiles } from '../vm/layout.ts';
import type { VmServiceImpl } from './services/vm.ts';

function noParams(req: RequestEnvelope): void {
  const p = req.params;
  if (p !== undefined && p !== null && Object.keys(p as object).length > 0) {
    throw new ErrorResponse('bad_request', `${req.method} takes no params`);
  }
}

function validated<P>(v: ValidateFunction<P>, req: RequestEnvelope): P {
  const p = req.params ?? {};
  if (!v(p))
    throw new ErrorResponse(
      'bad_request',
      `invalid params for ${req.method}: ${describeAjvErrors(v.errors)}`,
    );
  return p;
}

async function readTail(
  path: string,
  maxBytes: number,
): Promise<{ data: string; truncated: boolean; size: number }> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    return { data: '', truncated: false, size: 0 };
  }
  const start = Math.max(0, size - maxBytes);
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    return { data: buf.toString('utf8'), truncated: start > 0, size };
  } finally {
    await fh.close();
  }
}

async function* follow(
  path: string,
  from: number,
  ctx: RpcContext,
  stillRunning: () => boolean,
): AsyncGenerator<{ data: string }> {
  let pos = from;
  let idle = 0;
  while (!ctx.signal.aborted) {
    const size = await stat(path)
      .then((s) => s.size)
      .catch(() => pos);
    if (size > pos) {
      const fh = await open(path, 'r');
      try {
        const buf = Buffer.alloc(Math.min(size - pos, 1024 * 1024));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        pos += bytesRead;
        yield { data: buf.subarray(0, bytesRead).toString('utf8') };
      } finally {
        await fh.close();
      }
      idle = 0;
      continue;
    }
    // Stop once the VM is gone and the file has stopped growing.
    if (!stillRunning() && ++idle > 2) return;
    // The server aborts the signal when the client hangs up: stop polling at once.
    await sleep(200, undefined, { signal: ctx.signal }).catch(() => undefined);
  }
}

export function createSpecials(
  requestShutdown: () => void,
  vms?: VmServiceImpl,
  stateDir?: string,
): SpecialHandlers {
  const needVm = (): { vms: VmServiceImpl; stateDir: string } => {
    if (!vms || !stateDir) throw new ErrorResponse('operation_failed', 'the VM service is not available');
    return { vms, stateDir };
  };
  return {
    async ping(ctx, req) {
      noParams(req);
      const result: PingResult = { pong: true, version: BANGER_VERSION, protocol_version: PROTOCOL_VERSION };
      return { ok: true, result, op_id: ctx.opId };
    },
    async shutdown(ctx, req) {
      noParams(req);
      ctx.log.info('shutdown requested; running VMs keep running');
      // Answer first, then stop accepting connections.
      setImmediate(requestShutdown);
      const result: ShutdownResult = { stopping: true };
      return { ok: true, result, op_id: ctx.opId };
    },
    async vmLogs(ctx, req) {
      const p: VmLogsParams = validated(paramValidators['vm.logs'], req);
      const { vms: svc, stateDir: dir } = needVm();
      const vm = svc.find(p.name);
      const path = vmFiles(dir, vm.id).serialLog;
      const tail = await readTail(path, p.tail_bytes ?? 65536);
      const result: VmLogsResult = { name: vm.name, data: tail.data, truncated: tail.truncated, path };
      if (!p.follow) return { ok: true, result, op_id: ctx.opId };
      return {
        stream: (async function* () {
          if (tail.data) yield { data: tail.data };
          yield* follow(path, tail.size, ctx, () => svc.isRunningByName(vm.name));
        })(),
        final: () => ({ ...result, data: '' }),
      };
    },
    async vmSsh(ctx, req) {
      const p = validated(paramValidators['vm.ssh'], req);
      const result = needVm().vms.sshDetails(p.name);
      return { ok: true, result, op_id: ctx.opId };
    },
  };
}
