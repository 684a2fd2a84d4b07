// Status polls at debug. Clients poll a long operation every 50 ms (`vm create`, `image build`,
// `image warm`) and scripts wait on `ping`, so at info their `rpc completed` lines were ~95 % of
// the daemon log. Every call still gets its one summary line, and failures stay at warn.
import type { Logger } from '../log/logger.ts';

/**
 * Read-only status queries that clients repeat on a timer. Not `daemon.status`: people and
 * `doctor` ask it once, and its line (with the helper's under the same op id) is worth keeping.
 */
export const POLL_METHODS: ReadonlySet<string> = new Set([
  'ping',
  'vm.create.status',
  'vm.fork.status',
  'image.build.status',
  'image.warm.status',
  // vm ssh/exec heartbeat with it while a session is open (idle pause).
  'vm.touch',
]);

/** The level of a successful call's summary line. */
export function summaryLevel(method: string): 'debug' | 'info' {
  return POLL_METHODS.has(method) ? 'debug' : 'info';
}

/**
 * The RPC server's logger: the same logger, except that the `<prefix> completed` line of a poll
 * method is written at debug. The server writes that line with `log.info(fields, message)`; this
 * wrapper is the daemon's side of it, so the server stays generic.
 */
export function withQuietPolls(log: Logger, summaryPrefix: string): Logger {
  const completed = `${summaryPrefix} completed`;
  const info = (...args: unknown[]): void => {
    const [fields, msg] = args;
    const method = (fields as { method?: unknown } | null)?.method;
    const level = msg === completed && typeof method === 'string' ? summaryLevel(method) : 'info';
    (log[level] as (...a: unknown[]) => void).apply(log, args);
  };
  return new Proxy(log, {
    get(target, prop) {
      if (prop === 'info') return info;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** Params that must never be written anywhere (the secret store's values), by method. */
export const SECRET_PARAMS: Readonly<Record<string, readonly string[]>> = { 'secret.set': ['value'] };

/**
 * A call's params as the op records may see them: secret fields replaced. The RPC log keeps no
 * params today; this keeps a future use from writing a secret value into it or into op trace.
 */
export function redactParams(method: string, params: unknown): unknown {
  const fields = SECRET_PARAMS[method];
  if (!fields || typeof params !== 'object' || params === null || Array.isArray(params)) return params;
  const out: Record<string, unknown> = { ...(params as Record<string, unknown>) };
  for (const f of fields) if (f in out) out[f] = '[redacted]';
  return out;
}
