// Reading a layer blob as a tar stream: the compression is detected from the first bytes (gzip,
// zstd or none; media types lie often enough), every decompressed byte counts against a budget
// shared by all layers of an image (a decompression bomb stops at the bound, not at a full disk),
// and the decompressed stream is hashed so it can be checked against the config's diff_ids.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createZstdDecompress } from 'node:zlib';

export type Compression = 'gzip' | 'zstd' | 'none';

export class LayerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LayerError';
  }
}

/** Bytes every decompressed layer of one image may add up to, shared across its layers. */
export class ByteBudget {
  readonly max: number;
  used = 0;
  constructor(max: number) {
    this.max = max;
  }
  take(n: number, what: string): void {
    this.used += n;
    if (this.used > this.max) {
      throw new LayerError(
        `${what}: decompressed data exceeds the limit of ${this.max} bytes ` +
          '(a decompression bomb, or raise the limit for a very large image)',
      );
    }
  }
}

export function detectCompression(head: Buffer): Compression | 'bzip2' | 'xz' {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  if (head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  return 'none';
}

export async function sniffCompression(path: string): Promise<Compression> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(8);
    const { bytesRead } = await fh.read(head, 0, 8, 0);
    const c = detectCompression(head.subarray(0, bytesRead));
    if (c === 'bzip2' || c === 'xz') throw new LayerError(`${c}-compressed layers are not supported`);
    return c;
  } finally {
    await fh.close();
  }
}

export interface OpenedLayer {
  compression: Compression;
  /** Decompressed chunks, counted against the budget and hashed. */
  chunks: AsyncGenerator<Buffer>;
  /** sha256:<hex> of everything read so far (the diff_id once chunks is exhausted). */
  diffId(): string;
}

/** Open a layer blob for reading as tar. `what` names it in errors (its digest). */
export async function openLayer(
  path: string,
  what: string,
  budget: ByteBudget,
  signal?: AbortSignal,
): Promise<OpenedLayer> {
  const compression = await sniffCompression(path);
  const hash = createHash('sha256');
  const source = createReadStream(path, { highWaterMark: 256 * 1024 });
  let stream: Readable = source;
  let piped: Promise<void> | undefined;
  if (compression !== 'none') {
    // 128 KiB output chunks instead of zlib's 16 KiB: an eighth of the callbacks, hash updates and
    // writes per layer (npm run bench -- --parts pull: ≈30 % less CPU flattening its large files).
    const chunkSize = 128 * 1024;
    const d = compression === 'gzip' ? createGunzip({ chunkSize }) : createZstdDecompress({ chunkSize });
    // The pipeline destroys the decompressor when the file read fails, so iteration throws.
    piped = pipeline(source, d, { signal }).catch(() => undefined);
    stream = d;
  }
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      for await (const c of stream as AsyncIterable<Buffer>) {
        signal?.throwIfAborted();
        budget.take(c.length, what);
        hash.update(c);
        yield c;
      }
    } catch (e) {
      if (e instanceof LayerError || signal?.aborted) throw e;
      throw new LayerError(`${what}: cannot read ${compression} layer: ${(e as Error).message}`);
    } finally {
      stream.destroy();
      source.destroy();
      await piped;
    }
  }
  return { compression, chunks: chunks(), diffId: () => `sha256:${hash.copy().digest('hex')}` };
}
