// Idle pause on the CLI side (docs/snapshots.md "Idle pause"): commands that work in a VM
// (vm ssh, vm exec, vm run, vm workspace) resume a VM the daemon's idle timer paused, saying so
// on stderr (stdout, and so --json output, is untouched), and keep it marked used with vm.touch
// while their session is open.
import type { BangerClient } from '../../generated/client.gen.ts';
import type { Vm, VmSshResult } from '../../generated/types.gen.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import { parseIdleDuration } from '../vm/idle.ts';

/** Where the "resuming" line goes (stderr; tests replace it). */
export type Say = (line: string) => void;

const toStderr: Say = (line) => process.stderr.write(`${line}\n`);

/**
 * If `name` is paused by the idle timer, resume it (and say so). Returns whether it did. A VM
 * paused by `vm pause` is left as it is: that pause was asked for.
 */
export async function resumeIfIdlePaused(
  client: BangerClient,
  name: string,
  say: Say = toStderr,
  known?: Vm,
): Promise<boolean> {
  const vm = known ?? (await client.vm.show({ name })).vm;
  if (vm.idle_paused_at === undefined) return false;
  say(`resuming idle-paused VM ${vm.name}…`);
  await client.vm.resume({ name });
  return true;
}

/**
 * vm.ssh, resuming an idle-paused VM first when the daemon says it is not running. The common
 * case (the VM runs) costs the one call it always did.
 */
export async function sshDetailsResuming(
  client: BangerClient,
  name: string,
  opts?: CallOpts,
  say: Say = toStderr,
): Promise<VmSshResult> {
  return withIdleResume(client, name, () => client.vm.ssh({ name }, opts), say);
}

/** A call's options (the op id a command minted, a signal). */
type CallOpts = Parameters<BangerClient['vm']['ssh']>[1];

/**
 * Run `call` (an RPC that works in the VM, e.g. vm.workspace.export); when it answers
 * not_running and the VM is idle-paused, resume it and call again.
 */
export async function withIdleResume<R>(
  client: BangerClient,
  name: string,
  call: () => Promise<R>,
  say: Say = toStderr,
): Promise<R> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof ErrorResponse && err.code === 'not_running')) throw err;
    if (!(await resumeIfIdlePaused(client, name, say))) throw err;
    return call();
  }
}

/** Heartbeat period for a VM's idle_pause_after: a third of it, from 3 s to 60 s. */
export function heartbeatMs(idlePauseAfter: string | undefined): number {
  let ms = 0;
  try {
    // The daemon's own parser (the daemon sends only texts it accepted).
    ms = parseIdleDuration(idlePauseAfter ?? '');
  } catch {
    // Not a duration: the longest period.
  }
  return ms > 0 ? Math.min(60_000, Math.max(3000, Math.floor(ms / 3))) : 60_000;
}

/**
 * Mark the VM used now and every so often until the returned stop is called (a session is
 * open). For sessions the daemon cannot see from the host side (another network namespace, a
 * remote context); failures are ignored: the session matters more than its heartbeat.
 */
export function heartbeat(client: BangerClient, name: string): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const beat = (): void => {
    client.vm.touch({ name }).then(
      (r) => {
        if (stopped) return;
        timer = setTimeout(beat, heartbeatMs(r.vm.idle_pause_after));
        timer.unref();
      },
      () => {
        if (stopped) return;
        timer = setTimeout(beat, 60_000);
        timer.unref();
      },
    );
  };
  beat();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
