// Saving and restoring a QEMU VM's state through QMP migration to a file. QEMU 7.2 has no
// `file:` migration URI, so the state goes through `exec:cat` (QEMU runs it with /bin/sh -c:
// the path is shell-quoted here). Restore = the same plan with `spec.incoming =
// restoreStateUri(path)`, then `waitIncoming` and `cont`: a restored VM stays paused until told.
//
// With guest RAM in a file (spec.memory), `ignoreShared` sets the x-ignore-shared capability:
// the save then skips the shared RAM block and writes only the device state (tens of KB instead
// of the guest's RAM). The restoring VMM maps the same file (share=off) and starts with
// `-incoming defer` (INCOMING_DEFER), because the capability must be set on it before the
// state is read: loadState sets it, then QMP `migrate-incoming`.
//
// When cat fails (disk full), QEMU only sees its pipe close and says "Broken pipe". So cat's
// stderr goes to a file next to the state, and a failed save also looks at the free space:
// the error then names the real cause (EngineError 'no_space').
import { readFile, rm, stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { EngineError } from './errors.ts';
import { sleep } from './process.ts';
import type { QmpClient } from './qmp.ts';
import { singleQuote } from '../util/shell.ts';

const MiB = 1024 * 1024;
/** Below this much free space after a failed save, the disk filling up is the cause. */
const FULL_BELOW_BYTES = MiB;

/** `exec:cat > PATH`, with cat's stderr into `errPath` when given. */
export function saveStateUri(path: string, errPath?: string): string {
  return `exec:cat > ${singleQuote(path)}${errPath !== undefined ? ` 2> ${singleQuote(errPath)}` : ''}`;
}

export function restoreStateUri(path: string): string {
  return `exec:cat ${singleQuote(path)}`;
}

/** `-incoming defer`: QEMU waits for QMP `migrate-incoming` (loadState). */
export const INCOMING_DEFER = 'defer';

/**
 * Skip RAM blocks backed by a shared file when migrating (both ends must set it), or not. A
 * capability stays set in the QEMU process: a VM that saved only its device state once (a fork's
 * source) must have it cleared before a whole save (vm pause), or that save leaves its RAM out.
 */
async function setIgnoreShared(qmp: QmpClient, on = true): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: on }],
  });
}

/** Where cat's complaints about writing `statePath` go while saving. */
export function saveErrPath(statePath: string): string {
  return `${statePath}.save-err`;
}

interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
  ram?: { transferred?: number; total?: number };
}

export interface SaveStateOptions {
  timeoutMs?: number;
  pollMs?: number;
  /** Free bytes for unprivileged use on the filesystem of `dir` (tests inject it). Default statfs. */
  freeBytes?: (dir: string) => Promise<number | null>;
  /**
   * Guest RAM is a shared file (memory-backend-file, share=on) that stays as the saved RAM: set
   * x-ignore-shared so only the device state is written. The file must not change afterwards.
   */
  ignoreShared?: boolean;
}

async function statfsFree(dir: string): Promise<number | null> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

/**
 * Stop the guest and write its state to `path`. The guest stays stopped (the caller kills it,
 * keeps it as a template, or `cont`s it). On failure the partial file is removed and the error
 * says why: EngineError('no_space') "no space left on device while saving the VM state to PATH
 * (N MiB free)", else 'qmp_error' with cat's or QEMU's words, or 'timeout'.
 */
export async function saveState(
  qmp: QmpClient,
  path: string,
  opts: SaveStateOptions = {},
): Promise<{ durationMs: number; ramTransferred?: number }> {
  const t0 = Date.now();
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const errPath = saveErrPath(path);
  await rm(errPath, { force: true });
  try {
    const st = await qmp.queryStatus();
    if (st.running) await qmp.execute('stop');
    await setIgnoreShared(qmp, opts.ignoreShared === true);
    await qmp.execute('migrate', { uri: saveStateUri(path, errPath) });
    for (;;) {
      const info = await qmp.execute<MigrateInfo>('query-migrate');
      if (info.status === 'completed') {
        const r: { durationMs: number; ramTransferred?: number } = { durationMs: Date.now() - t0 };
        if (info.ram?.transferred !== undefined) r.ramTransferred = info.ram.transferred;
        return r;
      }
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw await saveFailure(path, errPath, info, opts.freeBytes ?? statfsFree);
      }
      if (Date.now() - t0 > timeoutMs) {
        await qmp.execute('migrate_cancel').catch(() => {});
        await rm(path, { force: true });
        throw new EngineError('timeout', `saving VM state to ${path} took longer than ${timeoutMs} ms`);
      }
      await sleep(opts.pollMs ?? 50);
    }
  } finally {
    await rm(errPath, { force: true });
  }
}

/** The error for a failed save, after looking at cat's stderr and the free space; removes the partial file. */
async function saveFailure(
  path: string,
  errPath: string,
  info: MigrateInfo,
  freeBytes: (dir: string) => Promise<number | null>,
): Promise<EngineError> {
  const qemuSays = info['error-desc'] ?? info.status ?? 'failed';
  const catSays = (await readFile(errPath, 'utf8').catch(() => '')).trim();
  // Measured before the partial file goes: that file is what filled the disk.
  const free = await freeBytes(dirname(path));
  const written = await stat(path).then(
    (s) => s.size,
    () => 0,
  );
  await rm(path, { force: true });
  const details = {
    status: info.status,
    path,
    qemuError: qemuSays,
    ...(catSays ? { writerError: catSays } : {}),
    freeBytes: free,
    writtenBytes: written,
  };
  const full = /no space left on device/i.test(catSays) || (free !== null && free < FULL_BELOW_BYTES);
  if (full) {
    const freeText = free === null ? 'free space unknown' : `${Math.floor(free / MiB)} MiB free`;
    return new EngineError(
      'no_space',
      `no space left on device while saving the VM state to ${path} (${freeText})`,
      { details: { ...details, errno: 'ENOSPC' } },
    );
  }
  return new EngineError('qmp_error', `saving the VM state to ${path} failed: ${catSays || qemuSays}`, {
    details,
  });
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

/**
 * Load a saved state into a VMM started with `-incoming defer` (INCOMING_DEFER): set
 * x-ignore-shared when its RAM is the saver's shared file (mapped share=off here), then QMP
 * `migrate-incoming` from the file, and wait until it is loaded. The VM is then paused: `cont`.
 */
export async function loadState(
  qmp: QmpClient,
  path: string,
  opts: { ignoreShared?: boolean; timeoutMs?: number; pollMs?: number } = {},
): Promise<{ durationMs: number }> {
  const t0 = Date.now();
  if (opts.ignoreShared) await setIgnoreShared(qmp);
  await qmp.execute('migrate-incoming', { uri: restoreStateUri(path) });
  const wait: { timeoutMs?: number; pollMs?: number } = {};
  if (opts.timeoutMs !== undefined) wait.timeoutMs = opts.timeoutMs;
  if (opts.pollMs !== undefined) wait.pollMs = opts.pollMs;
  await waitIncoming(qmp, wait);
  return { durationMs: Date.now() - t0 };
}
