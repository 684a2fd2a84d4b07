// A small streaming tar reader (ustar, POSIX pax and the GNU long-name extensions), enough for
// image layers and `docker save` archives, with no dependency. Entries come out one at a time;
// a body the caller does not read is skipped. Names must be UTF-8 (ext4 names are bytes, but a
// JS string cannot carry arbitrary bytes; a non-UTF-8 name is refused rather than mangled).

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarHeader {
  /** As stored (pax path, GNU long name or ustar prefix/name), not normalized. */
  path: string;
  type: TarEntryType;
  /** Permission bits including setuid, setgid and sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Body size (0 for everything but files). */
  size: number;
  /** Seconds since the epoch (pax fractions dropped). */
  mtime: number;
  /** Symlink target or hardlink target path. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from pax SCHILY.xattr.* (and LIBARCHIVE.xattr.*) records. */
  xattrs: Map<string, Buffer>;
  /** Offset of the body in the tar stream (the decompressed one for a compressed layer). */
  dataOffset: number;
}

export class TarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarError';
  }
}

const BLOCK = 512;
/** Largest pax / GNU long-name body read into memory. */
const MAX_META = 1024 * 1024;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Exact reads over an async stream of chunks, counting the bytes consumed. */
export class ByteReader {
  private readonly it: AsyncIterator<Buffer>;
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  /** Bytes consumed so far. */
  offset = 0;

  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    while (this.pos >= this.buf.length) {
      const r = await this.it.next();
      if (r.done) return false;
      this.buf = r.value;
      this.pos = 0;
    }
    return true;
  }

  /** n bytes, or undefined at a clean end of stream; throws on a short read. */
  async readExact(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill())) return undefined;
    if (this.buf.length - this.pos >= n) {
      const b = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return b;
    }
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      if (!(await this.fill())) throw new TarError(`truncated tar stream at byte ${this.offset}`);
      const take = Math.min(n - got, this.buf.length - this.pos);
      parts.push(this.buf.subarray(this.pos, this.pos + take));
      this.pos += take;
      this.offset += take;
      got += take;
    }
    return Buffer.concat(parts, n);
  }

  /** The next n bytes as they arrive (views into the source chunks). */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (!(await this.fill())) throw new TarError(`truncated tar stream at byte ${this.offset}`);
      const take = Math.min(left, this.buf.length - this.pos);
      const b = this.buf.subarray(this.pos, this.pos + take);
      this.pos += take;
      this.offset += take;
      left -= take;
      yield b;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.chunks(n)) {
      // discard
    }
  }

  /** Consume the rest of the stream (so a hash over all of it completes). */
  async drain(): Promise<void> {
    while (await this.fill()) {
      this.offset += this.buf.length - this.pos;
      this.pos = this.buf.length;
    }
  }
}

function cstring(b: Buffer): Buffer {
  const nul = b.indexOf(0);
  return nul >= 0 ? b.subarray(0, nul) : b;
}

function text(b: Buffer, what: string): string {
  try {
    return utf8.decode(cstring(b));
  } catch {
    throw new TarError(`${what} is not valid UTF-8: ${JSON.stringify(cstring(b).toString('latin1'))}`);
  }
}

/** A numeric header field: octal text, or base-256 when the high bit of the first byte is set. */
export function parseNumeric(b: Buffer, what: string): number {
  const first = b[0] ?? 0;
  if (first & 0x80) {
    if (first === 0xff) throw new TarError(`negative ${what} in tar header`);
    let v = first & 0x7f;
    for (let i = 1; i < b.length; i++) v = v * 256 + (b[i] ?? 0);
    if (!Number.isSafeInteger(v)) throw new TarError(`${what} too large in tar header`);
    return v;
  }
  const s = cstring(b).toString('latin1').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarError(`bad ${what} field in tar header: ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const want = parseNumeric(h.subarray(148, 156), 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 32 : (h[i] ?? 0);
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return want === unsigned || want === signed;
}

/** Parse pax extended header records ("LEN key=value\n"); values stay bytes (xattrs are binary). */
export function parsePax(body: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < body.length) {
    if (body[i] === 0) break;
    const sp = body.indexOf(0x20, i);
    if (sp < 0) throw new TarError('malformed pax record (no length)');
    const len = Number(body.subarray(i, sp).toString('latin1'));
    if (!Number.isInteger(len) || len <= sp - i || i + len > body.length) {
      throw new TarError('malformed pax record (bad length)');
    }
    const rec = body.subarray(sp + 1, i + len - 1); // without the trailing newline
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new TarError('malformed pax record (no =)');
    out.set(text(rec.subarray(0, eq), 'pax key'), Buffer.from(rec.subarray(eq + 1)));
    i += len;
  }
  return out;
}

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

export interface TarEntry {
  header: TarHeader;
  /** The body; read it before asking for the next entry, or it is skipped. */
  body: AsyncGenerator<Buffer>;
}

function paxNumber(v: Buffer | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const s = v.toString('latin1');
  if (!/^-?\d+(\.\d+)?$/.test(s)) throw new TarError(`bad pax ${what}: ${JSON.stringify(s)}`);
  const n = Math.floor(Number(s));
  if (!Number.isSafeInteger(n)) throw new TarError(`pax ${what} out of range`);
  return n;
}

/**
 * Entries of a tar stream. Stops at the end-of-archive block (the rest of the stream is left to
 * the caller; see ByteReader.drain) or at the end of the stream.
 */
export async function* readTar(reader: ByteReader): AsyncGenerator<TarEntry> {
  let global = new Map<string, Buffer>();
  let pax = new Map<string, Buffer>();
  let longName: string | undefined;
  let longLink: string | undefined;
  for (;;) {
    const h = await reader.readExact(BLOCK);
    if (h === undefined) return;
    if (h.every((b) => b === 0)) return;
    let ok = false;
    try {
      ok = checksumOk(h);
    } catch {
      // an unparsable checksum field: not a tar header at all
    }
    if (!ok)
      throw new TarError(`bad tar header checksum at byte ${reader.offset - BLOCK} (not a tar stream?)`);
    const flag = String.fromCharCode(h[156] ?? 0);
    let size = parseNumeric(h.subarray(124, 136), 'size');
    const padded = (n: number): number => Math.ceil(n / BLOCK) * BLOCK;

    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > MAX_META) throw new TarError(`tar metadata entry of ${size} bytes is too large`);
      const body = (await reader.readExact(padded(size))) ?? Buffer.alloc(0);
      const data = body.subarray(0, size);
      if (flag === 'x') pax = new Map([...pax, ...parsePax(data)]);
      else if (flag === 'g') global = new Map([...global, ...parsePax(data)]);
      else if (flag === 'L') longName = text(data, 'GNU long name');
      else longLink = text(data, 'GNU long link name');
      continue;
    }
    let type = TYPES[flag];
    if (type === undefined) {
      if (flag === 'S') throw new TarError('GNU sparse tar entries are not supported');
      throw new TarError(`unsupported tar entry type ${JSON.stringify(flag)}`);
    }
    const rec = new Map([...global, ...pax]);
    for (const k of rec.keys()) {
      if (k.startsWith('GNU.sparse.'))
        throw new TarError('sparse tar entries (pax GNU.sparse) are not supported');
    }
    const magic = h.subarray(257, 263).toString('latin1');
    let path = text(h.subarray(0, 100), 'tar entry name');
    if (magic === 'ustar\0') {
      const prefix = text(h.subarray(345, 500), 'tar name prefix');
      if (prefix !== '') path = `${prefix}/${path}`;
    }
    if (longName !== undefined) path = longName;
    const paxPath = rec.get('path');
    if (paxPath !== undefined) path = text(paxPath, 'pax path');
    let linkname = longLink ?? text(h.subarray(157, 257), 'tar link name');
    const paxLink = rec.get('linkpath');
    if (paxLink !== undefined) linkname = text(paxLink, 'pax linkpath');
    size = paxNumber(rec.get('size'), 'size') ?? size;
    // Old (v7) archives mark a directory by a trailing slash on a regular-file entry.
    if (type === 'file' && (flag === '0' || flag === '\0') && path.endsWith('/')) type = 'dir';

    const xattrs = new Map<string, Buffer>();
    for (const [k, v] of rec) {
      if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), v);
      else if (k.startsWith('LIBARCHIVE.xattr.')) {
        xattrs.set(
          decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length)),
          Buffer.from(v.toString(), 'base64'),
        );
      }
    }
    const header: TarHeader = {
      path,
      type,
      mode: parseNumeric(h.subarray(100, 108), 'mode') & 0o7777,
      uid: paxNumber(rec.get('uid'), 'uid') ?? parseNumeric(h.subarray(108, 116), 'uid'),
      gid: paxNumber(rec.get('gid'), 'gid') ?? parseNumeric(h.subarray(116, 124), 'gid'),
      size: type === 'file' ? size : 0,
      mtime: paxNumber(rec.get('mtime'), 'mtime') ?? parseNumeric(h.subarray(136, 148), 'mtime'),
      linkname,
      devmajor: type === 'char' || type === 'block' ? parseNumeric(h.subarray(329, 337), 'devmajor') : 0,
      devminor: type === 'char' || type === 'block' ? parseNumeric(h.subarray(337, 345), 'devminor') : 0,
      xattrs,
      dataOffset: reader.offset,
    };
    pax = new Map();
    longName = undefined;
    longLink = undefined;
    // Like Go's archive/tar (which wrote most layers), only files have a body: the size field of
    // a link, directory, device or fifo header is ignored.
    const end = header.dataOffset + (type === 'file' ? padded(size) : 0);
    yield { header, body: reader.chunks(type === 'file' ? size : 0) };
    // Whatever the consumer left unread (a break out of the body closes it early), and the padding.
    if (reader.offset < end) await reader.skip(end - reader.offset);
  }
}
