// Tar archives built by the tests themselves (ustar headers, pax records for xattrs and long
// names), so layer contents — owners, modes, links, whiteouts, hostile names — are exactly what a
// test says, independent of the host's tar and of the user running the test.
import { createHash } from 'node:crypto';
import { gzipSync, zstdCompressSync } from 'node:zlib';

export interface TarSpec {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  body?: string | Buffer;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, Buffer | string>;
  /** Force a GNU long-name ('L') record instead of pax for a long path. */
  gnuLongName?: boolean;
  /** Raw type flag (for unsupported-type tests). */
  rawType?: string;
}

const FLAGS = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' } as const;

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function header(name: string, flag: string, size: number, s: TarSpec, linkname = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, 'utf8');
  h.write(octal(s.mode ?? (s.type === 'dir' ? 0o755 : 0o644), 8), 100, 'latin1');
  h.write(octal(s.uid ?? 0, 8), 108, 'latin1');
  h.write(octal(s.gid ?? 0, 8), 116, 'latin1');
  h.write(octal(size, 12), 124, 'latin1');
  h.write(octal(s.mtime ?? 1_700_000_000, 12), 136, 'latin1');
  h.write(flag, 156, 'latin1');
  h.write(linkname.slice(0, 100), 157, 'utf8');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  h.write(octal(s.devmajor ?? 0, 8), 329, 'latin1');
  h.write(octal(s.devminor ?? 0, 8), 337, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

function pad(b: Buffer): Buffer {
  const rest = (512 - (b.length % 512)) % 512;
  return rest ? Buffer.concat([b, Buffer.alloc(rest)]) : b;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const kv = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = kv.length + 1;
  while (String(len).length + kv.length !== len) len = String(len).length + kv.length;
  return Buffer.concat([Buffer.from(String(len)), kv]);
}

export function tarEntries(specs: readonly TarSpec[], opts: { noEnd?: boolean } = {}): Buffer {
  const out: Buffer[] = [];
  for (const s of specs) {
    const type = s.type ?? 'file';
    const body = type === 'file' ? Buffer.from(s.body ?? '') : Buffer.alloc(0);
    const pax: Buffer[] = [];
    let name = s.path;
    if (Buffer.byteLength(s.path) > 100) {
      if (s.gnuLongName) {
        const ln = Buffer.from(s.path + '\0');
        out.push(header('././@LongLink', 'L', ln.length, { path: '' }), pad(ln));
      } else pax.push(paxRecord('path', Buffer.from(s.path)));
      name = s.path.slice(0, 99);
    }
    const linkname = s.linkname ?? '';
    if (Buffer.byteLength(linkname) > 100) pax.push(paxRecord('linkpath', Buffer.from(linkname)));
    for (const [k, v] of Object.entries(s.xattrs ?? {}))
      pax.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.from(v)));
    if (pax.length > 0) {
      const pb = Buffer.concat(pax);
      out.push(header('PaxHeaders/x', 'x', pb.length, { path: '' }), pad(pb));
    }
    out.push(header(name, s.rawType ?? FLAGS[type], body.length, s, linkname));
    if (body.length > 0) out.push(pad(body));
  }
  if (!opts.noEnd) out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

export function gzip(b: Buffer): Buffer {
  return gzipSync(b);
}

export function zstd(b: Buffer): Buffer {
  return zstdCompressSync(b);
}

export function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** A VFS capability (v2) xattr value: cap_net_bind_service (bit 10) permitted+effective. */
export function capNetBindService(): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(0x02000001, 0); // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
  b.writeUInt32LE(1 << 10, 4); // permitted[0]
  return b;
}
