// Replacing STATE/images/<name> or STATE/kernels/<name> together with the rows that name it, so a
// daemon killed at any instant leaves rows and files that agree. The rows change in one store
// transaction and the directories move inside it (synchronously: nothing else runs in between),
// the old directory set aside as .old-<hex>-<name>. A kill -9 after a move but before the COMMIT
// leaves the old row naming the new, uncommitted files, and the old files set aside; so before the
// first move a journal, .old-<hex>-<name>.journal (fsync'd), says which rows the transaction
// replaces and inserts. Start-up recovery (recoverReplacements, before the other sweeps) asks the
// store which side won (the old row is gone, or the new row is there, only if the COMMIT happened)
// and puts the old directory back or removes it. The leading dot: a resource name (kernel.ts
// RESOURCE_NAME_PATTERN) starts with a letter or digit, so no image or kernel is ever named like
// a set-aside directory or a journal. Journals of the earlier form (<name>.old-<hex>.journal,
// which an image may be named like: only regular files count) are still recovered.
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from '../../log/logger.ts';
import type { Store } from '../../store/index.ts';
import { writeFileAtomicSync } from '../../util/atomic-write.ts';
import type { CrashPoint } from '../../vm/crash.ts';

/** The store table of the rows that name the directories (store.images or store.kernels). */
export interface RowTable {
  getById(id: string): { id: string } | undefined;
  getByName(name: string): { id: string } | undefined;
}

/** What the journal holds: enough for recovery to tell whether the COMMIT happened. */
interface Journal {
  /** The row the transaction deleted (the one named like the directory before it), if any. */
  old_row: string | null;
  /** The row it inserted. */
  new_row: string;
  /** Whether a directory was there to set aside. */
  had_old_dir: boolean;
}

export interface ReplaceOptions<T extends { id: string }> {
  store: Store;
  table: RowTable;
  log: Logger;
  /** STATE/images/<name> or STATE/kernels/<name>; `<name>` is also the replaced row's name. */
  finalDir: string;
  /** The complete new directory (beside finalDir, so a rename moves it). */
  staging: string;
  /**
   * Inside the transaction: delete the row named like the directory (if any) and insert the new
   * one, returned. Runs before anything moves; a throw leaves everything as it was.
   */
  rows: () => T;
  /** TEST-ONLY crash points `<kind>.replace.<step>` (src/vm/crash.ts). */
  crash?: CrashPoint | undefined;
  /** The crash points' prefix: `image` or `kernel`. */
  kind: string;
}

/** A committed replacement: the new row, and what finishReplace still has to remove. */
export interface Replaced<T> {
  rows: T;
  /** The old directory set aside (undefined when there was none). */
  oldDir: string | undefined;
  journal: string;
}

/** `.old-<hex>-<name>.journal`: the set-aside directory's name, and the replaced one's. */
const JOURNAL = /^(\.old-[0-9a-f]+-([A-Za-z0-9].*))\.journal$/;
/** The earlier form, `<name>.old-<hex>.journal` (a regular file; an image may be named like it). */
const LEGACY_JOURNAL = /^(([A-Za-z0-9].*)\.old-[0-9a-f]+)\.journal$/;
/** A journal being written, of either form. */
const JOURNAL_TMP = /^(\.old-[0-9a-f]+-.+|.+\.old-[0-9a-f]+)\.journal\.tmp$/;

/** The name a replacement sets `finalDir` aside as (beside it: a rename moves it). */
export function setAsideName(finalName: string, hex: string): string {
  return `.old-${hex}-${finalName}`;
}

/**
 * Whether a directory's `name` is a set-aside one's (of this form: never a resource name). Its
 * journal is a file of the same prefix: sweepStaging looks at directories alone.
 */
export function isSetAside(name: string): boolean {
  return /^\.old-[0-9a-f]+-[A-Za-z0-9]/.test(name);
}

const isFile = (path: string): boolean => {
  try {
    return lstatSync(path).isFile();
  } catch {
    return false;
  }
};

/**
 * Run `rows()` and move the staged directory to `finalDir` (the one there set aside first) in one
 * store transaction, journaled for start-up recovery. When the transaction rolls back the
 * directories are put back; the caller removes the old one with finishReplace once committed.
 */
export function replaceDir<T extends { id: string }>(o: ReplaceOptions<T>): Replaced<T> {
  const crash = o.crash ?? ((): void => undefined);
  const oldDir = join(
    dirname(o.finalDir),
    setAsideName(basename(o.finalDir), randomBytes(4).toString('hex')),
  );
  const journal = `${oldDir}.journal`;
  let journaled = false;
  let moved = false;
  let installed = false;
  try {
    const rows = o.store.transaction(() => {
      const old = o.table.getByName(basename(o.finalDir))?.id ?? null;
      const out = o.rows();
      // Recovery reads "the old row is gone" as "committed": rows() must have deleted it.
      if (old !== null && o.table.getById(old) !== undefined)
        throw new Error(`replacing ${o.finalDir}: row ${old} was kept (rows() must delete it)`);
      const hadOldDir = existsSync(o.finalDir);
      crash(`${o.kind}.replace.journal`);
      const j: Journal = { old_row: old, new_row: out.id, had_old_dir: hadOldDir };
      writeFileAtomicSync(journal, JSON.stringify(j) + '\n', { fsync: true, tmp: `${journal}.tmp` });
      journaled = true;
      crash(`${o.kind}.replace.set_aside`);
      if (hadOldDir) {
        renameSync(o.finalDir, oldDir);
        moved = true;
      }
      crash(`${o.kind}.replace.move_in`);
      renameSync(o.staging, o.finalDir);
      installed = true;
      crash(`${o.kind}.replace.commit`);
      return out;
    });
    return { rows, oldDir: moved ? oldDir : undefined, journal };
  } catch (err) {
    // The transaction rolled back: put the directories back the way they were. If that fails
    // too, the journal stays and start-up recovery finishes the job.
    try {
      if (installed) renameSync(o.finalDir, o.staging);
      if (moved) renameSync(oldDir, o.finalDir);
      if (journaled) rmSync(journal, { force: true });
    } catch (restoreErr) {
      o.log.error({ err: restoreErr, dir: o.finalDir }, 'could not restore the previous files');
    }
    throw err;
  }
}

/**
 * After the COMMIT: remove the old directory, then the journal. Never throws (the new rows and
 * files are in place; a failure here is logged, and start-up recovery retries the removal).
 */
export async function finishReplace(
  r: Replaced<unknown>,
  log: Logger,
  crash: CrashPoint | undefined,
  kind: string,
): Promise<void> {
  try {
    crash?.(`${kind}.replace.cleanup`);
    if (r.oldDir !== undefined) await rm(r.oldDir, { recursive: true, force: true });
    crash?.(`${kind}.replace.forget`);
    await rm(r.journal, { force: true });
  } catch (err) {
    log.warn({ err, dir: r.oldDir }, 'could not remove the replaced files (the next start retries)');
  }
}

/**
 * Finish or undo the replacements a killed daemon left in `dir` (call at start, before
 * sweepStaging removes *.old-* directories and sweepOrphanDirs unowned ones). Returns what it did,
 * one line per journal.
 */
export async function recoverReplacements(dir: string, table: RowTable, log: Logger): Promise<string[]> {
  const done: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    // Journals are regular files: a directory of that name is an image or kernel named so.
    if (!isFile(join(dir, name))) continue;
    if (JOURNAL_TMP.test(name)) {
      // A journal being written: nothing had moved yet.
      await rm(join(dir, name), { force: true });
      continue;
    }
    const m = JOURNAL.exec(name) ?? LEGACY_JOURNAL.exec(name);
    if (!m?.[1] || !m[2]) continue;
    const oldDir = join(dir, m[1]);
    const finalDir = join(dir, m[2]);
    let j: Journal;
    try {
      j = parseJournal(readFileSync(join(dir, name), 'utf8'));
    } catch (err) {
      // Left alone, with its .old- directory (sweepStaging keeps those): a person decides.
      log.error({ err, journal: join(dir, name) }, 'unreadable replacement journal; left as is');
      continue;
    }
    const committed =
      j.old_row !== null ? table.getById(j.old_row) === undefined : table.getById(j.new_row) !== undefined;
    let what: string;
    if (committed) {
      await rm(oldDir, { recursive: true, force: true });
      what = 'committed: removed the old files';
    } else if (j.old_row !== null) {
      // The old row still names finalDir: it gets its own files back.
      if (existsSync(oldDir)) {
        await rm(finalDir, { recursive: true, force: true });
        await rename(oldDir, finalDir);
        what = 'not committed: restored the old files';
      } else if (!j.had_old_dir) {
        await rm(finalDir, { recursive: true, force: true });
        what = 'not committed: removed the uncommitted files';
      } else {
        what = 'not committed: the old files had not moved';
      }
    } else {
      // No row named the old directory: nothing of value; finalDir is the orphan sweep's to judge.
      await rm(oldDir, { recursive: true, force: true });
      what = 'not committed: removed the unowned old files';
    }
    await rm(join(dir, name), { force: true });
    done.push(`${basename(dirname(finalDir))}/${basename(finalDir)}: ${what}`);
  }
  return done;
}

/** Whether `dir/name` (a set-aside directory) still has a journal recovery could not read. */
export function hasJournal(dir: string, name: string): boolean {
  return isFile(join(dir, `${name}.journal`));
}

function parseJournal(text: string): Journal {
  const v = JSON.parse(text) as Partial<Journal>;
  const id = (x: unknown): x is string => typeof x === 'string' && x !== '';
  if (!(v.old_row === null || id(v.old_row)) || !id(v.new_row) || typeof v.had_old_dir !== 'boolean')
    throw new Error('not a replacement journal');
  return { old_row: v.old_row, new_row: v.new_row, had_old_dir: v.had_old_dir };
}
