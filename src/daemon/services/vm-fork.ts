// vm.fork.*: the wire side of `vm fork` (the work is src/vm/fork.ts, run by the lifecycle owner).
import type { VmForkService } from '../../../generated/handlers.gen.ts';
import type * as T from '../../../generated/types.gen.ts';
import type { OperationRegistry } from '../../ops/operations.ts';
import type { RpcContext } from '../../rpc/context.ts';
import { ErrorResponse, notFound } from '../../rpc/errors.ts';
import type { Store, VmRow } from '../../store/index.ts';
import type { VmLifecycle } from '../../vm/lifecycle.ts';
import { VM_NAME_PATTERN } from '../../vm/names.ts';

export interface ForkServiceDeps {
  store: Store;
  ops: OperationRegistry;
  lifecycle: VmLifecycle;
  find: (ref: string) => VmRow;
  wire: (row: VmRow) => T.Vm;
  /** A name in use by a VM or reserved by a create in flight. */
  nameTaken: (name: string) => boolean;
}

/**
 * The new VMs' names: those given, then `<source>-fork-<n>` with the first free n for the rest
 * (`count` more than names given). Refuses a name in use, twice, or the source's.
 */
export function forkNames(
  source: string,
  given: readonly string[],
  count: number | undefined,
  taken: (name: string) => boolean,
): string[] {
  const want = Math.max(count ?? given.length, given.length, 1);
  if (want > 16) throw new ErrorResponse('bad_request', `at most 16 forks at once (asked for ${want})`);
  const out: string[] = [];
  for (const n of given) {
    if (out.includes(n)) throw new ErrorResponse('bad_request', `the name "${n}" is given twice`);
    if (n === source || taken(n)) throw new ErrorResponse('already_exists', `vm "${n}" already exists`);
    out.push(n);
  }
  for (let i = 1; out.length < want; i++) {
    const n = `${source}-fork-${i}`;
    if (!VM_NAME_PATTERN.test(n))
      throw new ErrorResponse('bad_request', `the default name "${n}" is too long; give names with --name`);
    if (!taken(n) && !out.includes(n)) out.push(n);
  }
  return out;
}

export function forkService(d: ForkServiceDeps): VmForkService {
  /** Fork operations of this daemon run → what status reports. */
  const forks = new Map<string, { source: string; names: string[]; pauseMs?: number }>();
  return {
    begin: async (p: T.VmForkBeginParams, ctx: RpcContext): Promise<T.VmForkBeginResult> => {
      const src = d.find(p.name);
      const names = forkNames(src.name, p.names ?? [], p.count, d.nameTaken);
      const t = d.ops.begin(ctx.opId, 'vm.fork', 'vm.fork.begin', { vm: src.name });
      const rec: { source: string; names: string[]; pauseMs?: number } = { source: src.name, names };
      forks.set(ctx.opId, rec);
      // The source's state and lock are checked now: a conflict is this call's error.
      const running = d.lifecycle.fork(t, src, names).catch(async (err: unknown) => {
        await t.rollback();
        throw err;
      });
      // Refused before any step: fail the call itself (and the operation).
      const early = await Promise.race([
        running.then(
          () => undefined,
          (err: unknown) => (t.op.steps.length === 0 ? err : undefined),
        ),
        new Promise<undefined>((r) => setImmediate(r, undefined)),
      ]);
      void running.then(
        (res) => {
          rec.pauseMs = res.sourcePauseMs;
          t.succeed();
        },
        (err: unknown) => t.fail(err),
      );
      if (early) throw early;
      return { operation_id: ctx.opId, source: src.name, names };
    },
    status: async (p: T.VmForkStatusParams): Promise<T.VmForkStatusResult> => {
      const op = d.ops.find(p.operation_id);
      if (!op || op.kind !== 'vm.fork') throw notFound(`fork operation ${p.operation_id}`);
      const rec = forks.get(op.id);
      const vms = (rec?.names ?? [])
        .map((n) => d.store.vms.getByName(n))
        .filter((r): r is VmRow => r !== undefined)
        .map((r) => d.wire(r));
      const r: T.VmForkStatusResult = { operation: op, vms, source: rec?.source ?? op.vm ?? '' };
      const pause = rec?.pauseMs ?? pauseFromSteps(op);
      if (pause !== undefined) r.source_pause_ms = pause;
      return r;
    },
    cancel: async (p: T.VmForkCancelParams): Promise<T.VmForkCancelResult> => {
      const t = d.ops.get(p.operation_id);
      if (!t || t.op.kind !== 'vm.fork') {
        if (d.ops.find(p.operation_id))
          throw new ErrorResponse('conflict', `operation ${p.operation_id} already finished`);
        throw notFound(`fork operation ${p.operation_id}`);
      }
      t.abort.abort(new ErrorResponse('canceled', 'canceled by user'));
      for (let i = 0; i < 600 && t.op.state === 'running'; i++) await new Promise((r) => setTimeout(r, 100));
      return { operation: t.op };
    },
  };
}

/** After a daemon restart only the steps remain: the pause is pause_source + freeze + resume. */
function pauseFromSteps(op: T.Operation): number | undefined {
  const by = (n: string): number | undefined =>
    op.steps.find((s) => s.name === n && s.state === 'done')?.duration_ms;
  const parts = [by('pause_source'), by('freeze_disk'), by('resume_source')];
  return parts.every((x) => x !== undefined) ? parts.reduce((a, b) => a! + b!, 0) : undefined;
}
