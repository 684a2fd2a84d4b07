// The ext4 exactness check: layers built here (owners other than the runner, setuid/setgid,
// sticky, a security.capability xattr, hard links, symlinks absolute/relative/dangling, device
// nodes, a fifo, whiteouts, an opaque directory, a write through an image symlink, long names),
// flattened and written to ext4, then every inode read back with debugfs and compared with the
// expected final state. Importable by the vitest test (as root) and runnable as a script, so the
// test can run it again under `setpriv --reuid=65534` to show no privilege is needed:
//   node test/helpers/oci-ext4-check.ts WORKDIR   → prints JSON { mismatches, checked, whoami }
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { layersToExt4 } from '../../src/image/oci/convert.ts';
import { catImage, listImage, statImage } from './oci-debugfs.ts';
import { capNetBindService, gzip, sha256, tarEntries, zstd, type TarSpec } from './oci-tar.ts';

export interface Expected {
  path: string;
  type: 'regular' | 'directory' | 'symlink' | 'character special' | 'block special' | 'FIFO';
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  target?: string;
  dev?: [number, number];
  xattrs?: Record<string, Buffer>;
  body?: string;
  mtime?: number;
  /** Paths expected to share this inode. */
  sameInodeAs?: string;
}

const LONG = `usr/share/${'d'.repeat(60)}/${'n'.repeat(70)}.txt`;
const GNU_LONG = `usr/share/${'g'.repeat(120)}`;
const BIG = Buffer.alloc(200_000, 'abcdefgh');
const LONG_TARGET = `/usr/lib/${'t'.repeat(80)}`;

export const LAYER1: TarSpec[] = [
  { path: './', type: 'dir', mode: 0o755 },
  { path: 'bin/', type: 'dir' },
  { path: 'usr/', type: 'dir' },
  { path: 'usr/bin/', type: 'dir' },
  { path: 'usr/bin/su', mode: 0o4755, body: 'su-binary', mtime: 1_600_000_000 },
  { path: 'usr/bin/wall', mode: 0o2755, gid: 5, body: 'wall' },
  { path: 'usr/bin/ping', mode: 0o755, body: 'ping', xattrs: { 'security.capability': capNetBindService() } },
  { path: 'usr/bin/tool', mode: 0o755, body: 'same-inode', xattrs: { 'user.comment': 'hello' } },
  { path: 'usr/bin/tool-link', type: 'hardlink', linkname: 'usr/bin/tool' },
  { path: 'usr/lib/', type: 'dir' },
  { path: 'lib', type: 'symlink', linkname: 'usr/lib' },
  { path: 'etc/', type: 'dir' },
  { path: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC' },
  { path: 'etc/shadow', mode: 0o640, gid: 42, body: 'root:*:19000::::::\n' },
  { path: 'dangling', type: 'symlink', linkname: '/nonexistent/target' },
  { path: 'longlink', type: 'symlink', linkname: LONG_TARGET },
  { path: 'tmp/', type: 'dir', mode: 0o1777 },
  { path: 'home/user/', type: 'dir', mode: 0o700, uid: 1000, gid: 1000 },
  { path: 'home/user/notes', mode: 0o640, uid: 1000, gid: 1000, body: 'notes' },
  { path: 'dev/', type: 'dir' },
  { path: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
  { path: 'dev/sda', type: 'block', mode: 0o660, gid: 6, devmajor: 8, devminor: 0 },
  { path: 'run/', type: 'dir' },
  { path: 'run/initctl', type: 'fifo', mode: 0o600 },
  { path: 'old/', type: 'dir', mode: 0o755 },
  { path: 'old/a', body: 'a' },
  { path: 'old/b', body: 'b' },
  { path: 'gone.txt', body: 'gone' },
  { path: 'opaque/', type: 'dir' },
  { path: 'opaque/x', body: 'x' },
  { path: 'opaque/sub/', type: 'dir' },
  { path: 'opaque/sub/y', body: 'y' },
  { path: LONG, body: 'long pax name' },
  { path: GNU_LONG, body: 'gnu long name', gnuLongName: true },
  { path: '/abs/inside', body: 'absolute name lands in the root' },
  // Modes an unprivileged staging copy could not carry (mkfs must still read them): set by debugfs.
  { path: 'etc/nothing', mode: 0o000, body: 'mode 0' },
  { path: 'etc/writeonly', mode: 0o220, body: 'w' },
  { path: 'locked/', type: 'dir', mode: 0o311, uid: 7 },
  { path: 'locked/inside', mode: 0o600, uid: 7, body: 'in a dir without r' },
  { path: 'var/mail/', type: 'dir', mode: 0o2775, gid: 8 },
  { path: 'ro/', type: 'dir', mode: 0o555 },
  { path: 'ro/file', mode: 0o444, body: 'read-only dir' },
];

export const LAYER2: TarSpec[] = [
  { path: '.wh.gone.txt' },
  { path: 'opaque/.wh..wh..opq' },
  { path: 'opaque/new', body: 'new' },
  // Written through the image's own symlink lib -> usr/lib: lands at usr/lib/libx.so.
  { path: 'lib/libx.so', mode: 0o755, body: 'elf' },
  { path: 'old/', type: 'dir', mode: 0o750, uid: 5, gid: 5 },
  { path: 'old/.wh.a' },
  { path: 'usr/bin/tool-link2', type: 'hardlink', linkname: 'usr/bin/tool' },
  { path: 'big.bin', body: BIG },
];

export const LAYER3: TarSpec[] = [
  { path: 'etc/hostname', body: 'uncompressed layer\n', uid: 100000, gid: 100000, mtime: 1_234_567_890 },
  { path: 'usr/bin/su', mode: 0o4750, gid: 10, body: 'su-v2' },
];

const T = 1_700_000_000;
export const EXPECTED: Expected[] = [
  { path: '/', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  { path: '/abs', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: 0 },
  {
    path: '/abs/inside',
    type: 'regular',
    mode: 0o644,
    uid: 0,
    gid: 0,
    body: 'absolute name lands in the root',
  },
  { path: '/big.bin', type: 'regular', mode: 0o644, uid: 0, gid: 0, size: BIG.length },
  { path: '/bin', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  { path: '/dangling', type: 'symlink', mode: 0o777, uid: 0, gid: 0, target: '/nonexistent/target' },
  { path: '/dev', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  { path: '/dev/null', type: 'character special', mode: 0o666, uid: 0, gid: 0, dev: [1, 3] },
  { path: '/dev/sda', type: 'block special', mode: 0o660, uid: 0, gid: 6, dev: [8, 0] },
  { path: '/etc', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  {
    path: '/etc/hostname',
    type: 'regular',
    mode: 0o644,
    uid: 100000,
    gid: 100000,
    body: 'uncompressed layer\n',
    mtime: 1_234_567_890,
  },
  { path: '/etc/localtime', type: 'symlink', mode: 0o777, uid: 0, gid: 0, target: '/usr/share/zoneinfo/UTC' },
  { path: '/etc/shadow', type: 'regular', mode: 0o640, uid: 0, gid: 42, body: 'root:*:19000::::::\n' },
  { path: '/etc/nothing', type: 'regular', mode: 0o000, uid: 0, gid: 0, body: 'mode 0' },
  { path: '/etc/writeonly', type: 'regular', mode: 0o220, uid: 0, gid: 0, body: 'w' },
  { path: '/locked', type: 'directory', mode: 0o311, uid: 7, gid: 0 },
  { path: '/locked/inside', type: 'regular', mode: 0o600, uid: 7, gid: 0, body: 'in a dir without r' },
  { path: '/var', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: 0 },
  { path: '/var/mail', type: 'directory', mode: 0o2775, uid: 0, gid: 8 },
  { path: '/home', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: 0 },
  { path: '/home/user', type: 'directory', mode: 0o700, uid: 1000, gid: 1000 },
  { path: '/home/user/notes', type: 'regular', mode: 0o640, uid: 1000, gid: 1000, body: 'notes' },
  { path: '/lib', type: 'symlink', mode: 0o777, uid: 0, gid: 0, target: 'usr/lib' },
  { path: '/longlink', type: 'symlink', mode: 0o777, uid: 0, gid: 0, target: LONG_TARGET },
  { path: '/old', type: 'directory', mode: 0o750, uid: 5, gid: 5 },
  { path: '/old/b', type: 'regular', mode: 0o644, uid: 0, gid: 0, body: 'b' },
  { path: '/opaque', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  { path: '/opaque/new', type: 'regular', mode: 0o644, uid: 0, gid: 0, body: 'new' },
  { path: '/ro', type: 'directory', mode: 0o555, uid: 0, gid: 0 },
  { path: '/ro/file', type: 'regular', mode: 0o444, uid: 0, gid: 0, body: 'read-only dir' },
  { path: '/run', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  { path: '/run/initctl', type: 'FIFO', mode: 0o600, uid: 0, gid: 0 },
  { path: '/tmp', type: 'directory', mode: 0o1777, uid: 0, gid: 0 },
  { path: '/usr', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  { path: '/usr/bin', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  {
    path: '/usr/bin/ping',
    type: 'regular',
    mode: 0o755,
    uid: 0,
    gid: 0,
    body: 'ping',
    xattrs: { 'security.capability': capNetBindService() },
  },
  { path: '/usr/bin/su', type: 'regular', mode: 0o4750, uid: 0, gid: 10, body: 'su-v2' },
  {
    path: '/usr/bin/tool',
    type: 'regular',
    mode: 0o755,
    uid: 0,
    gid: 0,
    body: 'same-inode',
    xattrs: { 'user.comment': Buffer.from('hello') },
  },
  {
    path: '/usr/bin/tool-link',
    type: 'regular',
    mode: 0o755,
    uid: 0,
    gid: 0,
    body: 'same-inode',
    xattrs: { 'user.comment': Buffer.from('hello') },
    sameInodeAs: '/usr/bin/tool',
  },
  {
    path: '/usr/bin/tool-link2',
    type: 'regular',
    mode: 0o755,
    uid: 0,
    gid: 0,
    body: 'same-inode',
    xattrs: { 'user.comment': Buffer.from('hello') },
    sameInodeAs: '/usr/bin/tool',
  },
  { path: '/usr/bin/wall', type: 'regular', mode: 0o2755, uid: 0, gid: 5, body: 'wall' },
  { path: '/usr/lib', type: 'directory', mode: 0o755, uid: 0, gid: 0 },
  { path: '/usr/lib/libx.so', type: 'regular', mode: 0o755, uid: 0, gid: 0, body: 'elf' },
  { path: '/usr/share', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: 0 },
  { path: `/${GNU_LONG}`, type: 'regular', mode: 0o644, uid: 0, gid: 0, body: 'gnu long name' },
  {
    path: `/${LONG.split('/').slice(0, 3).join('/')}`,
    type: 'directory',
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtime: 0,
  },
  { path: `/${LONG}`, type: 'regular', mode: 0o644, uid: 0, gid: 0, body: 'long pax name' },
];

/** Write the three test layers (gzip, zstd, uncompressed) into dir; returns the layer inputs. */
export function writeTestLayers(dir: string): { digest: string; path: string; diffId: string }[] {
  const tars = [tarEntries(LAYER1), tarEntries(LAYER2), tarEntries(LAYER3)];
  const blobs = [gzip(tars[0]!), zstd(tars[1]!), tars[2]!];
  return blobs.map((b, i) => {
    const path = join(dir, `layer${i}`);
    writeFileSync(path, b);
    return { digest: sha256(b), path, diffId: sha256(tars[i]!) };
  });
}

export interface CheckResult {
  mismatches: string[];
  checked: number;
  uid: number;
}

/**
 * The least memory scratch the tests take (the test layers need far less than the daemon's
 * 64 MiB floor): memory scratch works on any tmpfs /dev/shm, a 64 MiB Docker default too.
 */
export const TEST_MEMORY_MIN = 2 ** 20;

/** Build, convert, read back and compare. */
export async function runExt4Check(
  dir: string,
  memoryDir?: string | false,
): Promise<CheckResult & { scratch: string }> {
  const layers = writeTestLayers(dir);
  const image = join(dir, 'rootfs.ext4');
  const r = await layersToExt4(layers, {
    imagePath: image,
    workDir: dir,
    memoryDir,
    memoryMin: TEST_MEMORY_MIN,
    label: 'oci-test',
    headroomBytes: 8 * 1024 * 1024,
  });
  return { ...checkImage(image), scratch: r.scratch };
}

/**
 * Read every inode of an image made from LAYER1..3 (plus whatever `expected` adds or changes:
 * test/integration/oci-registry.test.ts pulls these layers from a real registry) and compare.
 */
export function checkImage(image: string, expected: readonly Expected[] = EXPECTED): CheckResult {
  const mismatches: string[] = [];
  const paths = listImage(image);
  const want = new Map(expected.map((e) => [e.path, e]));
  for (const p of paths) if (!want.has(p)) mismatches.push(`${p}: unexpected in the image`);
  for (const p of want.keys()) if (!paths.includes(p)) mismatches.push(`${p}: missing from the image`);
  const present = expected.filter((e) => paths.includes(e.path));
  const stats = statImage(
    image,
    present.map((e) => e.path),
  );
  const byPath = new Map(stats.map((s) => [s.path, s]));
  for (const e of present) {
    const s = byPath.get(e.path)!;
    const bad = (what: string, got: unknown, exp: unknown): void => {
      mismatches.push(`${e.path}: ${what} ${JSON.stringify(got)}, want ${JSON.stringify(exp)}`);
    };
    if (s.type !== e.type) bad('type', s.type, e.type);
    if (s.mode !== e.mode) bad('mode', s.mode.toString(8), e.mode.toString(8));
    if (s.uid !== e.uid) bad('uid', s.uid, e.uid);
    if (s.gid !== e.gid) bad('gid', s.gid, e.gid);
    const size = e.size ?? (e.body !== undefined ? Buffer.byteLength(e.body) : undefined);
    if (size !== undefined && s.size !== size) bad('size', s.size, size);
    if (e.target !== undefined) {
      const got = s.target ?? catImage(image, e.path).toString('utf8');
      if (got !== e.target) bad('target', got, e.target);
    }
    if (e.dev && JSON.stringify(s.dev) !== JSON.stringify(e.dev)) bad('device', s.dev, e.dev);
    const wantX = Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, v.toString('hex')]));
    if (JSON.stringify(s.xattrs) !== JSON.stringify(wantX)) bad('xattrs', s.xattrs, wantX);
    // Directories made implicitly (no header) get mtime 0; every header here has T unless it says.
    if (s.mtime !== (e.mtime ?? T)) bad('mtime', s.mtime, e.mtime ?? T);
    if (e.sameInodeAs !== undefined) {
      const other = byPath.get(e.sameInodeAs);
      if (other?.ino !== s.ino) bad('inode', s.ino, `same as ${e.sameInodeAs} (${other?.ino})`);
      if (s.links !== 3) bad('links', s.links, 3);
    }
    if (e.body !== undefined && e.type === 'regular') {
      const got = catImage(image, e.path).toString('utf8');
      if (got !== e.body) bad('content', got.slice(0, 40), e.body.slice(0, 40));
    }
  }
  if (!catImage(image, '/big.bin').equals(BIG)) mismatches.push('/big.bin: content differs');
  return { mismatches, checked: present.length, uid: process.getuid?.() ?? -1 };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const dir = process.argv[2];
  if (!dir) throw new Error('usage: oci-ext4-check.ts WORKDIR [memory|disk]');
  runExt4Check(dir, process.argv[3] === 'disk' ? false : undefined).then(
    (r) => console.log(JSON.stringify(r)),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
