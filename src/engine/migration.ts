// Saving and restoring a QEMU VM's state through QMP migration to a file. QEMU 7.2 has no
// `file:` migration URI, so the state goes through `exec:cat` (QEMU runs it with /bin/sh -c:
// the path is shell-quoted here). Restore = the same plan with `spec.incoming =
// restoreStateUri(path)`, then `waitIncoming` and `cont`: a restored VM stays paused until told.
import { EngineError } from './errors.ts';
import { sleep } from './process.ts';
import type { QmpClient } from './qmp.ts';

/** POSIX single-quote quoting for the one shell QEMU spawns for `exec:` URIs. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

export function saveStateUri(path: string): string {
  return `exec:cat > ${shellQuote(path)}`;
}

export function restoreStateUri(path: string): string {
  return `exec:cat ${shellQuote(path)}`;
}

interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
  ram?: { transferred?: number; total?: number };
}

/**
 * Stop the guest and write its state to `path`. The guest stays stopped (the caller kills it,
 * keeps it as a template, or `cont`s it).
 */
export async function saveState(
  qmp: QmpClient,
  path: string,
  opts: { timeoutMs?: number; pollMs?: number } = {},
): Promise<{ durationMs: number; ramTransferred?: number }> {
  const t0 = Date.now();
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const st = await qmp.queryStatus();
  if (st.running) await qmp.execute('stop');
  await qmp.execute('migrate', { uri: saveStateUri(path) });
  for (;;) {
    const info = await qmp.execute<MigrateInfo>('query-migrate');
    if (info.status === 'completed') {
      const r: { durationMs: number; ramTransferred?: number } = { durationMs: Date.now() - t0 };
      if (info.ram?.transferred !== undefined) r.ramTransferred = info.ram.transferred;
      return r;
    }
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new EngineError('qmp_error', `saving VM state failed: ${info['error-desc'] ?? info.status}`, {
        details: { status: info.status },
      });
    }
    if (Date.now() - t0 > timeoutMs) {
      await qmp.execute('migrate_cancel').catch(() => {});
      throw new EngineError('timeout', `saving VM state took longer than ${timeoutMs} ms`);
    }
    await sleep(opts.pollMs ?? 50);
  }
}

/** Wait until an `-incoming` VM has loaded its state (it is then paused). */
export async function waitIncoming(
  qmp: QmpClient,
  opts: { timeoutMs?: number; pollMs?: number } = {},
): Promise<void> {
  const t0 = Date.now();
  const timeoutMs = opts.timeoutMs ?? 60_000;
  for (;;) {
    const st = await qmp.queryStatus();
    if (st.status !== 'inmigrate') {
      if (st.status === 'paused' || st.status === 'running' || st.status === 'postmigrate') return;
      throw new EngineError('start_failed', `restoring VM state ended in state ${st.status}`);
    }
    const mig = await qmp.execute<MigrateInfo>('query-migrate').catch(() => ({}) as MigrateInfo);
    if (mig.status === 'failed') {
      throw new EngineError('start_failed', `restoring VM state failed: ${mig['error-desc'] ?? 'failed'}`);
    }
    if (Date.now() - t0 > timeoutMs) throw new EngineError('timeout', `restore not done in ${timeoutMs} ms`);
    await sleep(opts.pollMs ?? 25);
  }
}
