// A minimal, deterministic "newc" cpio writer: enough to build a busybox initramfs in memory
// (the accel probe, tests) without a cpio binary. The kernel accepts it uncompressed.

export interface CpioEntry {
  /** Path inside the archive, without a leading slash (e.g. "bin/busybox"). */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  /** Permission bits; default 0755 for dirs and files, 0777 for symlinks. */
  mode?: number;
  /** File content, or the symlink target. */
  data?: Buffer | string;
}

const TYPE_BITS = { file: 0o100000, dir: 0o040000, symlink: 0o120000 } as const;

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function header(fields: number[]): string {
  return '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
}

function record(ino: number, mode: number, name: string, data: Buffer): Buffer[] {
  const nameBuf = Buffer.from(name + '\0', 'utf8');
  const nlink = (mode & 0o170000) === TYPE_BITS.dir ? 2 : 1;
  // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
  const h = Buffer.from(
    header([ino, mode, 0, 0, nlink, 0, data.length, 0, 0, 0, 0, nameBuf.length, 0]),
    'ascii',
  );
  return [h, nameBuf, Buffer.alloc(pad4(h.length + nameBuf.length)), data, Buffer.alloc(pad4(data.length))];
}

export function buildCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const path = e.path.replace(/^\/+/, '');
    const perm = e.mode ?? (e.type === 'symlink' ? 0o777 : 0o755);
    const data =
      e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    parts.push(
      ...record(ino++, TYPE_BITS[e.type] | (perm & 0o7777), path, e.type === 'dir' ? Buffer.alloc(0) : data),
    );
  }
  parts.push(...record(0, 0, 'TRAILER!!!', Buffer.alloc(0)));
  return Buffer.concat(parts);
}

/**
 * An initramfs whose /init is a busybox shell script. `busybox` is the static binary's bytes;
 * the script runs with /bin/busybox as interpreter (applets are called as `busybox NAME`, or
 * after `busybox --install -s`).
 */
export function busyboxInitramfs(busybox: Buffer, init: string, extra: CpioEntry[] = []): Buffer {
  return buildCpio([
    { path: 'bin', type: 'dir' },
    { path: 'dev', type: 'dir' },
    { path: 'proc', type: 'dir' },
    { path: 'sys', type: 'dir' },
    { path: 'bin/busybox', type: 'file', data: busybox },
    { path: 'bin/sh', type: 'symlink', data: 'busybox' },
    ...extra,
    { path: 'init', type: 'file', data: init.startsWith('#!') ? init : `#!/bin/busybox sh\n${init}` },
  ]);
}
