// vm.logs: the tail of a VM's serial console, and with `follow` a stream of what it writes next
// until the VM is gone or the client hangs up (the call's signal aborts).
import { open, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { VmLogsFrame, VmLogsParams, VmLogsResult } from '../../generated/types.gen.ts';
import type { StreamReply } from '../rpc/adapters.ts';
import type { RpcContext } from '../rpc/context.ts';

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
  signal: AbortSignal,
  stillRunning: () => boolean,
): AsyncGenerator<VmLogsFrame> {
  let pos = from;
  let idle = 0;
  while (!signal.aborted) {
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
    await sleep(200, undefined, { signal }).catch(() => undefined);
  }
}

/** The serial log at `path` of VM `name`, as vm.logs answers it. */
export async function serialLogs(
  vm: { name: string; path: string; stillRunning: () => boolean },
  p: VmLogsParams,
  ctx: RpcContext,
): Promise<StreamReply<VmLogsFrame, VmLogsResult>> {
  const tail = await readTail(vm.path, p.tail_bytes ?? 65536);
  const result: VmLogsResult = { name: vm.name, data: tail.data, truncated: tail.truncated, path: vm.path };
  if (!p.follow) return { result };
  return {
    frames: (async function* () {
      if (tail.data) yield { data: tail.data };
      yield* follow(vm.path, tail.size, ctx.signal, vm.stillRunning);
    })(),
    // The tail went out as the first frame: the final result carries no data of its own.
    result: { ...result, data: '' },
  };
}
