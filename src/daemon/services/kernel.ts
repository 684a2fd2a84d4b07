// kernel.* : guest kernels (and their initramfs). Imported kernels live in STATE/kernels/<name>/;
// a built image's kernel is a row of the image's name pointing into STATE/images/<name>/.
// Also the file helpers image.import shares: input checks, sparse copies, the bzImage version.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, rm, stat } from 'node:fs/promises';
import { renameSync, rmSync } from 'node:fs';
import { dirname, join, relative, isAbsolute } from 'node:path';
import { promisify } from 'node:util';
import type { KernelService } from '../../../generated/handlers.gen.ts';
import type {
  KernelCatalogResult,
  KernelDeleteParams,
  KernelDeleteResult,
  KernelImportParams,
  KernelImportResult,
  KernelListResult,
  KernelPullFrame,
  KernelPullParams,
  KernelPullResult,
  KernelShowParams,
  KernelShowResult,
} from '../../../generated/types.gen.ts';
import type { Logger } from '../../log/logger.ts';
import type { CrashPoint } from '../../vm/crash.ts';
import type { OperationRegistry } from '../../ops/operations.ts';
import type { StreamReply } from '../../rpc/adapters.ts';
import type { RpcContext } from '../../rpc/context.ts';
import { ErrorResponse, badRequest, notFound } from '../../rpc/errors.ts';
import { type KernelRow, type Store, isUniqueViolation } from '../../store/index.ts';
import { kernelToWire, namesBy } from './convert.ts';
import { hasJournal, isSetAside } from './dir-replace.ts';
import { KernelPulls } from './kernel-pull.ts';

const execFileP = promisify(execFile);

/** schema $defs ResourceName */
export const RESOURCE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** File names of an imported kernel inside STATE/kernels/<name>/. */
export const KERNEL_FILES = { kernel: 'vmlinuz', initrd: 'initrd.img' } as const;

export function checkResourceName(name: string, what: string): void {
  if (!RESOURCE_NAME_PATTERN.test(name)) {
    throw badRequest(
      `invalid ${what} name ${JSON.stringify(name)}: letters, digits, dots, dashes and underscores, ` +
        'at most 64 characters, starting with a letter or digit',
    );
  }
}

export function alreadyExists(message: string): ErrorResponse {
  return new ErrorResponse('already_exists', message);
}

/** An input file the user names: not_found if missing, bad_request if not a regular file. */
export async function checkInputFile(path: string, what: string): Promise<number> {
  if (!isAbsolute(path)) throw badRequest(`${what} path ${path} is not absolute`);
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw notFound(`${what} ${path}`);
    if (code === 'EACCES') throw badRequest(`${what} ${path} is not readable`);
    throw err;
  }
  if (!st.isFile()) throw badRequest(`${what} ${path} is not a regular file`);
  return st.size;
}

/** Copy one file keeping holes (raw root filesystems are mostly holes). argv, never a shell. */
export async function copySparse(src: string, dest: string, signal?: AbortSignal): Promise<void> {
  try {
    await execFileP('cp', ['--sparse=always', '--', src, dest], signal ? { signal } : {});
  } catch (err) {
    const e = err as { stderr?: unknown; message?: string };
    const stderr = typeof e.stderr === 'string' ? e.stderr.trim() : '';
    throw new Error(`copying ${src} to ${dest} failed${stderr ? `: ${stderr}` : ''}`, { cause: err });
  }
}

/**
 * The release of a bzImage, from its setup header (Linux boot protocol >= 2.00): the u16 at 0x20E
 * points (minus 0x200) at a NUL-terminated string like "6.1.0-28-cloud-amd64 (debian-kernel@...)
 * #1 SMP ...". Undefined when the file is not a bzImage or holds no version string.
 */
export async function readKernelVersion(path: string): Promise<string | undefined> {
  const fh = await open(path, 'r').catch(() => undefined);
  if (!fh) return undefined;
  try {
    const hdr = Buffer.alloc(0x210);
    const { bytesRead } = await fh.read(hdr, 0, hdr.length, 0);
    if (bytesRead < hdr.length || hdr.toString('latin1', 0x202, 0x206) !== 'HdrS') return undefined;
    if (hdr.readUInt16LE(0x206) < 0x200) return undefined;
    const ptr = hdr.readUInt16LE(0x20e);
    if (ptr === 0) return undefined;
    const buf = Buffer.alloc(256);
    const r = await fh.read(buf, 0, buf.length, ptr + 0x200);
    const text = buf.subarray(0, r.bytesRead).toString('latin1');
    const end = text.indexOf('\0');
    const release = (end >= 0 ? text.slice(0, end) : text).trim().split(/\s+/)[0] ?? '';
    return /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/.test(release) ? release : undefined;
  } finally {
    await fh.close();
  }
}

/** A fresh staging directory beside `finalDir` (same filesystem, so it can be renamed into place). */
export async function makeStagingDir(finalDir: string, kind: 'import' | 'build'): Promise<string> {
  const parent = dirname(finalDir);
  await mkdir(parent, { recursive: true, mode: 0o700 });
  const dir = join(parent, `.${kind}-${randomBytes(4).toString('hex')}-${finalDir.slice(parent.length + 1)}`);
  await mkdir(dir, { mode: 0o700 });
  return dir;
}

/**
 * Move a complete staging directory to its final place, synchronously (so callers can do it
 * inside a store transaction: nothing else runs between the row and the files appearing). A
 * leftover directory at the final place (no row points at it) is removed first.
 */
export function installDirSync(staging: string, finalDir: string): void {
  rmSync(finalDir, { recursive: true, force: true });
  renameSync(staging, finalDir);
}

/**
 * Remove staging leftovers (.import-*, .build-*, set-aside .old-<hex>-<name> directories) of a
 * daemon that died mid-way: names no image or kernel can have (a resource name starts with a
 * letter or digit). Call after recoverReplacements (dir-replace.ts): a set-aside directory may be
 * an image's only copy until its journal is read; one whose journal is still there (unreadable)
 * is kept.
 */
export async function sweepStaging(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const name = e.name;
    const old = e.isDirectory() && isSetAside(name);
    if (old && hasJournal(dir, name)) continue;
    if (name.startsWith('.import-') || name.startsWith('.build-') || old) {
      await rm(join(dir, name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  return removed;
}

/**
 * Remove the <name> directories of STATE/images or STATE/kernels that no row owns: a daemon that
 * died after moving a staged directory into place but before its row committed (the move runs
 * inside the row's transaction) leaves one. Only banger's own layout is touched: a directory (not
 * a link) directly below `dir` whose name is a resource name; `keep` says which of those a row
 * names or work in flight is about to fill. Returns the names removed.
 */
export async function sweepOrphanDirs(
  dir: string,
  keep: (name: string, path: string) => boolean,
): Promise<string[]> {
  const removed: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    // A set-aside directory of the earlier form (<name>.old-<hex>) whose journal could not be read
    // stays for a person to judge; without one it is a name like any other.
    if (!e.isDirectory() || !RESOURCE_NAME_PATTERN.test(e.name) || hasJournal(dir, e.name)) continue;
    const path = join(dir, e.name);
    if (keep(e.name, path)) continue;
    await rm(path, { recursive: true, force: true });
    removed.push(e.name);
  }
  return removed;
}

/** Names of the images that boot a kernel (its wire form lists them; a forced pull may not replace it). */
export function imagesUsingKernel(store: Store, kernelId: KernelRow['id']): string[] {
  return store.images
    .list()
    .filter((i) => i.kernelId === kernelId)
    .map((i) => i.name);
}

export function isInside(parent: string, path: string): boolean {
  const rel = relative(parent, path);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel);
}

export interface StagedKernel {
  staging: string;
  version: string;
  hasInitrd: boolean;
}

/** Copy a kernel (and initrd) into a staging dir beside STATE/kernels/<name>/, read-only. */
export async function stageKernelFiles(
  finalDir: string,
  src: { kernel: string; initrd?: string | undefined; version?: string | undefined },
  signal?: AbortSignal,
): Promise<StagedKernel> {
  const staging = await makeStagingDir(finalDir, 'import');
  try {
    const kernel = join(staging, KERNEL_FILES.kernel);
    await copySparse(src.kernel, kernel, signal);
    await chmod(kernel, 0o444);
    if (src.initrd !== undefined) {
      const initrd = join(staging, KERNEL_FILES.initrd);
      await copySparse(src.initrd, initrd, signal);
      await chmod(initrd, 0o444);
    }
    const version = src.version ?? (await readKernelVersion(kernel)) ?? 'unknown';
    return { staging, version, hasInitrd: src.initrd !== undefined };
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
}

/** Remove a deleted kernel's files: its own directory, or its files when they live elsewhere in STATE. */
export async function removeKernelFiles(stateDir: string, row: KernelRow): Promise<void> {
  const own = join(stateDir, 'kernels', row.name);
  await rm(own, { recursive: true, force: true });
  for (const f of [row.kernelPath, row.initrdPath]) {
    if (f !== null && isInside(stateDir, f) && !isInside(own, f)) await rm(f, { force: true });
  }
}

export interface KernelServiceDeps {
  store: Store;
  log: Logger;
  stateDir: string;
  /** kernel.catalog / kernel.pull need these three (pulls are operations; apt state in the cache). */
  ops?: OperationRegistry;
  cacheDir?: string;
  /** sources.list text of the Debian archive (default: the default image recipe's). */
  aptSources?: string;
  /** TEST-ONLY crash points of a forced pull's replacement (`kernel.replace.<step>`). */
  crash?: CrashPoint;
}

export class KernelServiceImpl implements KernelService {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly kernelsDir: string;
  private readonly stateDir: string;
  /** Names with an import in flight (the files are copied before the row exists). */
  private readonly importing = new Set<string>();
  /** kernel.catalog and kernel.pull (src/daemon/services/kernel-pull.ts). */
  private readonly pulls: KernelPulls | undefined;

  constructor(deps: KernelServiceDeps) {
    this.store = deps.store;
    this.log = deps.log;
    this.stateDir = deps.stateDir;
    this.kernelsDir = join(deps.stateDir, 'kernels');
    if (deps.ops && deps.cacheDir !== undefined) {
      this.pulls = new KernelPulls({
        store: deps.store,
        ops: deps.ops,
        log: deps.log,
        stateDir: deps.stateDir,
        cacheDir: deps.cacheDir,
        ...(deps.aptSources !== undefined ? { aptSources: deps.aptSources } : {}),
        crash: deps.crash,
      });
    }
  }

  /** Whether a kernel import or pull of `name` is in flight (its files may be on their way in). */
  busy(name: string): boolean {
    return this.importing.has(name) || this.pulls?.busy(name) === true;
  }

  async catalog(ctx: RpcContext): Promise<KernelCatalogResult> {
    return this.pullPart().catalog(ctx);
  }

  async pull(p: KernelPullParams, ctx: RpcContext): Promise<StreamReply<KernelPullFrame, KernelPullResult>> {
    return this.pullPart().pull(p, ctx);
  }

  private pullPart(): KernelPulls {
    if (!this.pulls)
      throw new Error('kernel catalog and pull need the operation registry and cache directory');
    return this.pulls;
  }

  async list(_ctx: RpcContext): Promise<KernelListResult> {
    const users = namesBy(this.store.images.list(), (i) => i.kernelId);
    return { kernels: this.store.kernels.list().map((k) => kernelToWire(k, users.get(k.id) ?? [])) };
  }

  async show(p: KernelShowParams, _ctx: RpcContext): Promise<KernelShowResult> {
    return { kernel: this.wire(this.get(p.name)) };
  }

  async import(p: KernelImportParams, ctx: RpcContext): Promise<KernelImportResult> {
    checkResourceName(p.name, 'kernel');
    if (this.importing.has(p.name) || this.store.kernels.getByName(p.name)) {
      throw alreadyExists(`kernel ${p.name} already exists`);
    }
    await checkInputFile(p.kernel, 'kernel');
    if (p.initrd !== undefined) await checkInputFile(p.initrd, 'initrd');
    const finalDir = join(this.kernelsDir, p.name);
    this.importing.add(p.name);
    try {
      const staged = await stageKernelFiles(finalDir, p, ctx.signal);
      try {
        const row = this.store.transaction(() => {
          const k = this.store.kernels.insert({
            name: p.name,
            version: staged.version,
            kernelPath: join(finalDir, KERNEL_FILES.kernel),
            initrdPath: staged.hasInitrd ? join(finalDir, KERNEL_FILES.initrd) : null,
            source: 'imported',
          });
          installDirSync(staged.staging, finalDir);
          return k;
        });
        this.log.info({ kernel: p.name, version: row.version }, 'kernel imported');
        return { kernel: this.wire(row) };
      } catch (err) {
        await rm(staged.staging, { recursive: true, force: true });
        if (isUniqueViolation(err)) throw alreadyExists(`kernel ${p.name} already exists`);
        throw err;
      }
    } finally {
      this.importing.delete(p.name);
    }
  }

  async delete(p: KernelDeleteParams, _ctx: RpcContext): Promise<KernelDeleteResult> {
    const row = this.get(p.name);
    // A kernel still in use: StoreError in_use, which the error table makes conflict.
    this.store.kernels.delete(row.id);
    await removeKernelFiles(this.stateDir, row);
    this.log.info({ kernel: p.name }, 'kernel deleted');
    return { name: p.name, deleted: true };
  }

  private get(name: string): KernelRow {
    const row = this.store.kernels.getByName(name);
    if (!row) throw notFound(`kernel ${name}`);
    return row;
  }

  private wire(row: KernelRow): ReturnType<typeof kernelToWire> {
    return kernelToWire(row, imagesUsingKernel(this.store, row.id));
  }
}
