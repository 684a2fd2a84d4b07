// The content-addressed blob cache shared by every image: DIR/sha256/<hex>. A blob lands there
// only after its digest and size were verified while it streamed in, so a file under its digest
// is always good. A download in progress is DIR/sha256/<hex>.partial: an interrupted download is
// resumed with a Range request (the bytes already there are hashed first); a mismatch deletes it.
// More bytes than the descriptor says are refused as they arrive. Downloads of one blob are
// serialized (in this process by a map, across processes by a lock file).
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../util/atomic-write.ts';
import { withBuildLock } from '../manifest.ts';
import { TransientError, withRetry, type RetryPolicy } from './http.ts';

export interface BlobDescriptor {
  digest: string;
  size: number;
}

/** Where a blob's bytes come from: a stream starting at `start` (≤ the offset asked for). */
export interface BlobSource {
  open(
    offset: number,
    signal?: AbortSignal,
  ): Promise<{ start: number; body: AsyncIterable<Buffer> & { destroy(): void } }>;
  /** Names the source in errors (registry host, file). */
  describe: string;
}

export interface FetchOptions {
  signal?: AbortSignal;
  retry?: RetryPolicy;
  /** Bytes of this blob present so far (resumed bytes included) and its size. */
  onProgress?: (done: number, total: number) => void;
  /** A failed attempt that will be retried (resuming) after delayMs. */
  onRetry?: (attempt: number, error: unknown, delayMs: number) => void;
}

export interface PruneResult {
  removed: { digest: string; size: number }[];
  /** Abandoned partial downloads removed. */
  partials: string[];
  bytes: number;
}

export class BlobError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BlobError';
  }
}

const DIGEST = /^sha256:([a-f0-9]{64})$/;
/** Local write failures: retrying the download will not help (the partial file stays for later). */
const LOCAL_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EACCES', 'EPERM']);

function hexOf(digest: string): string {
  const m = DIGEST.exec(digest);
  if (!m?.[1]) throw new BlobError(`unsupported digest ${JSON.stringify(digest)} (sha256 only)`);
  return m[1];
}

export class BlobCache {
  readonly dir: string;
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(dir: string) {
    this.dir = dir;
  }

  path(digest: string): string {
    return join(this.dir, 'sha256', hexOf(digest));
  }

  /** The verified blob's path when present (with the expected size, if given). */
  async has(digest: string, size?: number): Promise<string | undefined> {
    const p = this.path(digest);
    const st = await stat(p).catch(() => undefined);
    if (!st?.isFile() || (size !== undefined && st.size !== size)) return undefined;
    return p;
  }

  /** Get a blob into the cache (no-op when present); returns its path. */
  fetch(desc: BlobDescriptor, source: BlobSource, opts: FetchOptions = {}): Promise<string> {
    const running = this.inflight.get(desc.digest);
    if (running) return running;
    const p = this.fetchLocked(desc, source, opts).finally(() => this.inflight.delete(desc.digest));
    this.inflight.set(desc.digest, p);
    return p;
  }

  private async fetchLocked(desc: BlobDescriptor, source: BlobSource, opts: FetchOptions): Promise<string> {
    const hex = hexOf(desc.digest);
    const found = await this.has(desc.digest, desc.size);
    if (found) {
      opts.onProgress?.(desc.size, desc.size);
      return found;
    }
    const dir = join(this.dir, 'sha256');
    await mkdir(dir, { recursive: true });
    return withBuildLock(join(dir, `${hex}.lock`), opts.signal, async () => {
      const again = await this.has(desc.digest, desc.size);
      if (again) return again;
      await withRetry(opts.retry ?? {}, opts.signal, () => this.download(desc, source, opts), opts.onRetry);
      return this.path(desc.digest);
    });
  }

  /** One attempt: resume or start the partial file, stream, verify, rename into place. */
  private async download(desc: BlobDescriptor, source: BlobSource, opts: FetchOptions): Promise<void> {
    const final = this.path(desc.digest);
    const partial = `${final}.partial`;
    const what = `blob ${desc.digest} from ${source.describe}`;
    let h = createHash('sha256');
    let have = await hashExisting(partial, h);
    if (have > desc.size) {
      await rm(partial, { force: true });
      have = 0;
      h = createHash('sha256');
    }
    if (have > 0) opts.onProgress?.(have, desc.size);
    let fh: FileHandle | undefined;
    try {
      if (have < desc.size || have === 0) {
        const { start, body } = await source.open(have, opts.signal);
        if (start !== have) {
          // No Range support (or a fresh start): begin again.
          have = 0;
          h = createHash('sha256');
        }
        fh = await open(partial, have === 0 ? 'w' : 'a', 0o644);
        try {
          for await (const chunk of body) {
            if (have + chunk.length > desc.size) {
              body.destroy();
              await fh.close();
              fh = undefined;
              await rm(partial, { force: true });
              throw new BlobError(`${what}: more bytes than the ${desc.size} the manifest says; discarded`);
            }
            h.update(chunk);
            await writeAll(fh, chunk);
            have += chunk.length;
            opts.onProgress?.(have, desc.size);
          }
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (e instanceof BlobError || opts.signal?.aborted) throw e;
          if (code !== undefined && LOCAL_ERRORS.has(code)) {
            // What reached the disk is re-hashed from the file when the download resumes.
            throw new BlobError(
              `${what}: cannot write ${partial} (${code}: ${(e as Error).message}); ` +
                `${have} bytes kept to resume once there is room`,
            );
          }
          // A broken connection keeps what arrived for the next attempt.
          throw new TransientError(`${what}: ${(e as Error).message} at ${have} of ${desc.size} bytes`);
        }
        await fh.datasync();
        await fh.close();
        fh = undefined;
      }
      if (have < desc.size) {
        throw new TransientError(`${what}: truncated at ${have} of ${desc.size} bytes (kept to resume)`);
      }
      const got = `sha256:${h.digest('hex')}`;
      if (got !== desc.digest) {
        await rm(partial, { force: true });
        throw new BlobError(`${what}: content has digest ${got}; discarded`);
      }
      await rename(partial, final);
      opts.onProgress?.(desc.size, desc.size);
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }

  /** Put small content (a manifest, a config) into the cache; returns its digest. */
  async putBytes(data: Buffer): Promise<string> {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (await this.has(digest, data.length)) return digest;
    const dir = join(this.dir, 'sha256');
    await mkdir(dir, { recursive: true });
    // An .ingest- name: prune removes what a crash left.
    const tmp = join(dir, `.ingest-${process.pid}-${Math.random().toString(36).slice(2)}`);
    await writeFileAtomic(this.path(digest), data, { mode: 0o644, tmp });
    return digest;
  }

  /** A cached blob's bytes (small ones: manifests, configs). */
  async readBytes(digest: string): Promise<Buffer | undefined> {
    return readFile(this.path(digest)).catch(() => undefined);
  }

  /**
   * Copy a local file (or a byte range of one: a member of a tar archive) into the cache,
   * verifying its digest when expected, else computing it.
   */
  async ingestFile(
    path: string,
    expected?: BlobDescriptor,
    signal?: AbortSignal,
    range?: { start: number; length: number },
  ): Promise<BlobDescriptor> {
    if (expected) {
      const hit = await this.has(expected.digest, expected.size);
      if (hit) return expected;
    }
    const size = range?.length ?? (await stat(path)).size;
    if (expected && size !== expected.size) {
      throw new BlobError(
        `${path}: ${size} bytes, but the manifest says ${expected.size} for ${expected.digest}`,
      );
    }
    const dir = join(this.dir, 'sha256');
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.ingest-${process.pid}-${Math.random().toString(36).slice(2)}`);
    const hash = createHash('sha256');
    try {
      const fh = await open(tmp, 'wx', 0o644);
      try {
        const src =
          range === undefined
            ? createReadStream(path, { signal })
            : range.length === 0
              ? []
              : createReadStream(path, { signal, start: range.start, end: range.start + range.length - 1 });
        let n = 0;
        for await (const chunk of src as AsyncIterable<Buffer>) {
          n += chunk.length;
          hash.update(chunk);
          await fh.write(chunk);
        }
        await fh.datasync();
        if (n !== size) throw new BlobError(`${path}: read ${n} bytes, expected ${size}`);
      } finally {
        await fh.close();
      }
      const digest = `sha256:${hash.digest('hex')}`;
      if (expected && digest !== expected.digest) {
        throw new BlobError(
          `${path}: content has digest ${digest}, but the manifest says ${expected.digest}`,
        );
      }
      await rename(tmp, this.path(digest));
      return { digest, size };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /**
   * Remove every blob not in `referenced` (digests of all images' manifests, configs and layers),
   * and abandoned partial downloads. With dryRun, only say what would go.
   */
  async prune(referenced: Iterable<string>, opts: { dryRun?: boolean } = {}): Promise<PruneResult> {
    const keep = new Set(referenced);
    const dir = join(this.dir, 'sha256');
    const out: PruneResult = { removed: [], partials: [], bytes: 0 };
    const names = await readdir(dir).catch(() => [] as string[]);
    const locked = new Set(names.filter((n) => n.endsWith('.lock')).map((n) => n.slice(0, -'.lock'.length)));
    for (const name of names.sort()) {
      const p = join(dir, name);
      const st = await stat(p).catch(() => undefined);
      if (!st?.isFile()) continue;
      if (/^[a-f0-9]{64}$/.test(name)) {
        const digest = `sha256:${name}`;
        if (keep.has(digest) || this.inflight.has(digest)) continue;
        out.removed.push({ digest, size: st.size });
        out.bytes += st.size;
      } else if (name.endsWith('.partial') || name.startsWith('.ingest-')) {
        const hex = name.replace(/\.partial$/, '');
        if (locked.has(hex) || this.inflight.has(`sha256:${hex}`)) continue;
        out.partials.push(name);
        out.bytes += st.size;
      } else continue;
      if (!opts.dryRun) await rm(p, { force: true });
    }
    return out;
  }
}

/** Feed an existing partial file through the hash; its length (0 when absent). */
async function hashExisting(path: string, hash: Hash): Promise<number> {
  let n = 0;
  try {
    for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      n += chunk.length;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  return n;
}

/** fh.write may write less than asked (a filling disk): loop until all of it is written. */
async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}
