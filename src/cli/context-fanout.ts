// Many contexts at once: `vm list --all-contexts` and `--context auto` ask every context (the
// local daemon included) in parallel; one that cannot be reached becomes an error entry, never a
// crash of the whole command.
import { BangerClient } from '../../generated/client.gen.ts';
import type { DaemonStatusResult } from '../../generated/types.gen.ts';
import { SocketTransport } from '../rpc/transport.ts';
import { remoteClient } from './context-client.ts';
import { DEFAULT_CONTEXT, getContext, readContexts } from './contexts.ts';
import { cliErrorReport } from './error-report.ts';

export type Fanned<T> = { context: string; value: T } | { context: string; error: string; op_id?: string };

/** Run fn against every context (default first, then by name), each result or error kept. */
export async function acrossContexts<T>(
  localSocket: string,
  fn: (client: BangerClient, context: string) => Promise<T>,
): Promise<Fanned<T>[]> {
  const data = readContexts();
  const names = [DEFAULT_CONTEXT, ...Object.keys(data.contexts).sort()];
  return Promise.all(
    names.map(async (name): Promise<Fanned<T>> => {
      const client =
        name === DEFAULT_CONTEXT
          ? new BangerClient(new SocketTransport(localSocket))
          : remoteClient(getContext(name, data));
      try {
        return { context: name, value: await fn(client, name) };
      } catch (e) {
        const r = e instanceof Error ? cliErrorReport(e) : undefined;
        if (!r) return { context: name, error: e instanceof Error ? e.message : String(e) };
        return {
          context: name,
          // A context's error starts by naming it (`context NAME (URL): …`): said once here.
          error: r.payload.message.replace(/^context \S+ \([^)]*\):? /, ''),
          ...(r.payload.op_id ? { op_id: r.payload.op_id } : {}),
        };
      }
    }),
  );
}

export interface Capacity {
  context: string;
  hostname: string;
  /** Memory no VM of that daemon has claimed (total − committed), MiB. */
  freeMemoryMib: number;
  /** CPUs no VM has claimed (cpus − committed vCPUs; may be negative: vCPUs are overcommitted). */
  freeVcpus: number;
}

export function capacityOf(context: string, s: DaemonStatusResult): Capacity | undefined {
  const h = s.host;
  if (!h) return undefined;
  return {
    context,
    hostname: h.hostname,
    freeMemoryMib: h.memory_total_mib - h.committed_memory_mib,
    freeVcpus: h.cpus - h.committed_vcpus,
  };
}

/**
 * The context for a new VM: the most free memory, then the most free vCPUs, then the name (so
 * the same state picks the same context). A convenience, not a scheduler: nothing is reserved.
 */
export function pickContext(candidates: readonly Capacity[]): Capacity | undefined {
  return [...candidates].sort(
    (a, b) =>
      b.freeMemoryMib - a.freeMemoryMib || b.freeVcpus - a.freeVcpus || a.context.localeCompare(b.context),
  )[0];
}
