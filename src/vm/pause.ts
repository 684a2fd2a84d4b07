// Pause to disk, the files: `vm pause` saves a running VM's state into its directory and ends the
// VMM; `vm resume` starts the same VMM configuration with `-incoming defer`, loads the state and
// continues the guest. Two formats (the manifest's `format` says which a pause wrote):
//  - `ram-file`, for a VM whose RAM is a shared file in the user's RAM directory on tmpfs
//    (src/vm/guest-ram.ts): the device state alone (x-ignore-shared, tens of KB) in
//    `saved.state`, and the RAM file copied as it is (holes stay holes) to `saved.ram`. A resume
//    copies `saved.ram` into the RAM file of the new VMM (fillRamFile) and loads the device
//    state: no migration stream to parse page by page.
//  - `full` (no `format` in manifests written before there were two), for any other VM:
//    `saved.state` is the whole migration stream, device state and RAM.
//
// In <vm dir>: `saved.state`, `saved.ram` (ram-file only) and `saved.json` (the manifest: the
// launch spec the VMM ran with, sizes, time). Each is written under a temporary name, flushed
// and renamed; the manifest last, so it is the commit: files without a manifest (a crash while
// saving) never count, and a resume consumes the save by removing the manifest first (before
// the guest runs again: from then on its disk no longer matches the saved RAM).
import { readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { VmLaunchSpec } from '../engine/index.ts';
import { saveErrPath } from '../engine/migration.ts';
import { QgaClient } from '../engine/qga.ts';
import { fsyncPath, writeFileAtomic } from '../util/atomic-write.ts';
import { clockArg } from './reidentify.ts';

export const SAVED_STATE = 'saved.state';
export const SAVED_MANIFEST = 'saved.json';
export const SAVED_RAM = 'saved.ram';
const TMP = '.tmp';

export interface SavedPaths {
  state: string;
  stateTmp: string;
  manifest: string;
  manifestTmp: string;
  /** The RAM file of a `ram-file` save. */
  ram: string;
  ramTmp: string;
}

export function savedPaths(vmDir: string): SavedPaths {
  return {
    state: join(vmDir, SAVED_STATE),
    stateTmp: join(vmDir, SAVED_STATE + TMP),
    manifest: join(vmDir, SAVED_MANIFEST),
    manifestTmp: join(vmDir, SAVED_MANIFEST + TMP),
    ram: join(vmDir, SAVED_RAM),
    ramTmp: join(vmDir, SAVED_RAM + TMP),
  };
}

export interface SavedManifest {
  version: 1;
  vmId: string;
  /** The launch spec the saved VMM ran with (incoming unset; TSC rate pinned). */
  spec: VmLaunchSpec;
  /** The state file's size. */
  bytes: number;
  savedAt: string;
  /** QMP stop → every file durable, ms. */
  saveMs: number;
  /** What the pause wrote (module comment); absent: `full` (saves from before ram-file). */
  format?: SaveFormat;
  /** A `ram-file` save's RAM file: its size (the guest's RAM) and the data it holds on disk. */
  ram?: { bytes: number; dataBytes: number };
}

export type SaveFormat = 'full' | 'ram-file';

export function saveFormat(m: SavedManifest): SaveFormat {
  return m.format ?? 'full';
}

/** The disk space a save holds (what `vm list` shows of a paused VM). */
export function savedDiskBytes(m: SavedManifest): number {
  return m.bytes + (m.ram?.dataBytes ?? 0);
}

/** Make the temporary state file durable (the save wrote it through `cat`). */
export async function syncStateTmp(p: SavedPaths): Promise<number> {
  await fsyncPath(p.stateTmp);
  return (await stat(p.stateTmp)).size;
}

/** Make the temporary RAM file durable; its size and the data it holds. */
export async function syncRamTmp(p: SavedPaths): Promise<{ bytes: number; dataBytes: number }> {
  await fsyncPath(p.ramTmp);
  const st = await stat(p.ramTmp);
  return { bytes: st.size, dataBytes: st.blocks * 512 };
}

/**
 * Commit a save: the flushed state file to its name, then the manifest (temporary name, flush,
 * rename), then the directory. From the manifest's rename on, the VM is saved.
 */
export async function commitSaved(vmDir: string, m: SavedManifest): Promise<void> {
  const p = savedPaths(vmDir);
  if (saveFormat(m) === 'ram-file') await rename(p.ramTmp, p.ram);
  await rename(p.stateTmp, p.state);
  // Under its fixed temporary name: removePartial finds what a crash left.
  await writeFileAtomic(p.manifest, JSON.stringify(m, null, 2) + '\n', {
    mode: 0o600,
    fsync: true,
    tmp: p.manifestTmp,
  });
}

/**
 * The committed save of a VM, or undefined: no manifest, an unreadable one, another VM's, or a
 * state (or RAM) file that is missing or not the size the manifest recorded.
 */
export async function readSaved(vmDir: string, vmId: string): Promise<SavedManifest | undefined> {
  const p = savedPaths(vmDir);
  let m: SavedManifest;
  try {
    m = JSON.parse(await readFile(p.manifest, 'utf8')) as SavedManifest;
  } catch {
    return undefined;
  }
  if (m.version !== 1 || m.vmId !== vmId || typeof m.spec !== 'object') return undefined;
  const size = (path: string): Promise<number> =>
    stat(path).then(
      (s) => s.size,
      () => -1,
    );
  if ((await size(p.state)) !== m.bytes) return undefined;
  if (saveFormat(m) === 'ram-file' && (m.ram === undefined || (await size(p.ram)) !== m.ram.bytes))
    return undefined;
  return m;
}

/**
 * Remove what a save that never committed left (temporary files); idempotent. That includes the
 * file the save's writer sends its stderr to (saveErrPath): saveState removes it when it ends,
 * which a daemon killed during the save never does.
 */
export async function removePartial(vmDir: string): Promise<void> {
  const p = savedPaths(vmDir);
  await rm(p.stateTmp, { force: true });
  await rm(saveErrPath(p.stateTmp), { force: true });
  await rm(p.ramTmp, { force: true });
  await rm(p.manifestTmp, { force: true });
}

/** Use up a save: its manifest goes (the commit undone); discardSaved removes the rest. */
export async function consumeSaved(vmDir: string): Promise<void> {
  await rm(savedPaths(vmDir).manifest, { force: true });
}

/**
 * Remove a save, the manifest first (from then on it is not a save), then the state and RAM
 * files and any temporary files; idempotent. A VMM that maps `saved.ram` (a resume without room
 * on tmpfs) keeps its mapping: only the name goes.
 */
export async function discardSaved(vmDir: string): Promise<void> {
  const p = savedPaths(vmDir);
  await rm(p.manifest, { force: true });
  await rm(p.state, { force: true });
  await rm(p.ram, { force: true });
  await removePartial(vmDir);
}

/** Where a resumed VMM's configuration is kept (a second pause of it starts from there). */
export const RESUMED_SPEC = 'resumed-spec.json';

/**
 * Record the configuration a VMM restored from a save runs with (the saved one, not what a boot
 * would give: e.g. a TSC rate pinned on another host boot). Written before the state is loaded;
 * a cold boot's VMM is found by its own argv, so a stale file only adds a candidate.
 */
export async function writeResumedSpec(vmDir: string, spec: VmLaunchSpec): Promise<void> {
  const path = join(vmDir, RESUMED_SPEC);
  await writeFileAtomic(path, JSON.stringify(spec) + '\n', { mode: 0o600, tmp: `${path}${TMP}` });
}

export async function readResumedSpec(vmDir: string): Promise<VmLaunchSpec | undefined> {
  try {
    return JSON.parse(await readFile(join(vmDir, RESUMED_SPEC), 'utf8')) as VmLaunchSpec;
  } catch {
    return undefined;
  }
}

/**
 * Set a resumed guest's system clock to now (it stood still while the VM was saved), through the
 * guest agent: the clock step of the warm path's re-identification, nothing else (the VM keeps
 * its identity). `date` rather than guest-set-time, which would also write the RTC (hwclock).
 * Returns the skew it corrected, in ms.
 */
export async function correctGuestClock(qgaSocket: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  const qga = await QgaClient.connect(qgaSocket, { timeoutMs: left() });
  try {
    await qga.sync(left());
    const now = BigInt(Date.now()) * 1_000_000n;
    // Print the guest's time before setting it: the skew goes to the log.
    const r = await qga.exec(
      '/bin/sh',
      ['-c', 'date +%s%N; date -u -s "@$1" >/dev/null', 'clock', clockArg(now)],
      {
        timeoutMs: left(),
        pollMs: 10,
      },
    );
    if (r.exitcode !== 0)
      throw new Error(`setting the guest clock failed: ${r.stderr.trim() || `exit ${r.exitcode}`}`);
    const guestNs = BigInt(r.stdout.trim().split('\n')[0] ?? '0');
    return Number((now - guestNs) / 1_000_000n);
  } finally {
    qga.close();
  }
}
