// The tar reader and the layer model: pax/GNU names, whiteouts, opaque directories, hard links,
// paths through image symlinks resolved inside the image, and hostile layers refused with a clear
// error, leaving nothing behind.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { flattenLayers, type FlatImage } from '../../src/image/oci/flatten.ts';
import { ByteReader, parseNumeric, readTar, type TarHeader } from '../../src/image/oci/tar.ts';
import { splitPath, type Inode } from '../../src/image/oci/tree.ts';
import { gzip, sha256, tarEntries, zstd, type TarSpec } from '../helpers/oci-tar.ts';

async function headers(tar: Buffer, chunk = 7): Promise<TarHeader[]> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < tar.length; i += chunk) pieces.push(tar.subarray(i, i + chunk));
  const out: TarHeader[] = [];
  for await (const e of readTar(new ByteReader(Readable.from(pieces)))) out.push(e.header);
  return out;
}

describe('tar reader', () => {
  it('reads ustar, pax (long names, xattrs) and GNU long names in tiny chunks', async () => {
    const long = `d/${'x'.repeat(150)}`;
    const hs = await headers(
      tarEntries([
        { path: 'a/', type: 'dir', mode: 0o2755, uid: 7, gid: 8 },
        { path: 'a/f', body: 'hello', mode: 0o4711 },
        { path: long, body: 'p', xattrs: { 'security.capability': Buffer.from([1, 0, 0, 2]) } },
        { path: `g/${'y'.repeat(120)}`, body: 'g', gnuLongName: true },
        { path: 'l', type: 'symlink', linkname: `/${'t'.repeat(130)}` },
        { path: 'c', type: 'char', devmajor: 4, devminor: 64 },
      ]),
    );
    expect(hs.map((h) => [h.path, h.type, h.mode.toString(8), h.size])).toEqual([
      ['a/', 'dir', '2755', 0],
      ['a/f', 'file', '4711', 5],
      [long, 'file', '644', 1],
      [`g/${'y'.repeat(120)}`, 'file', '644', 1],
      ['l', 'symlink', '644', 0],
      ['c', 'char', '644', 0],
    ]);
    expect(hs[0]).toMatchObject({ uid: 7, gid: 8 });
    expect(hs[2]?.xattrs.get('security.capability')).toEqual(Buffer.from([1, 0, 0, 2]));
    expect(hs[4]?.linkname).toBe(`/${'t'.repeat(130)}`);
    expect(hs[5]).toMatchObject({ devmajor: 4, devminor: 64 });
  });

  it('base-256 numbers, bad checksums, truncation and unsupported types', async () => {
    expect(parseNumeric(Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 1, 0]), 'uid')).toBe(256);
    const t = tarEntries([{ path: 'f', body: 'abc' }]);
    const bad = Buffer.from(t);
    bad[0] = 0x67;
    await expect(headers(bad)).rejects.toThrow(/bad tar header checksum/);
    await expect(
      (async () => {
        for await (const e of readTar(new ByteReader(Readable.from([t.subarray(0, 600)])))) {
          for await (const _ of e.body) {
            // read
          }
        }
      })(),
    ).rejects.toThrow(/truncated tar stream/);
    await expect(headers(tarEntries([{ path: 'x', rawType: 'S' }]))).rejects.toThrow(/sparse/);
    // A v7-style directory: a regular-file entry whose name ends in a slash.
    expect((await headers(tarEntries([{ path: 'old/', rawType: '0' }])))[0]?.type).toBe('dir');
  });
});

describe('splitPath', () => {
  it('absolute and dotted names land in the root; ".." is refused', () => {
    expect(splitPath('/etc/passwd')).toEqual(['etc', 'passwd']);
    expect(splitPath('./a//b/./c/')).toEqual(['a', 'b', 'c']);
    expect(() => splitPath('a/../../etc/passwd')).toThrow(/path traversal/);
  });
});

describe('flattenLayers', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'oci-flat-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  let n = 0;
  const layer = (specs: TarSpec[], c: 'gzip' | 'zstd' | 'none' = 'gzip', extra?: Buffer) => {
    const tar = tarEntries(specs);
    const blob = c === 'gzip' ? gzip(tar) : c === 'zstd' ? zstd(tar) : tar;
    const path = join(dir, `l${n++}`);
    writeFileSync(path, extra ?? blob);
    return { digest: sha256(blob), path, diffId: sha256(tar) };
  };
  const flat = (layers: ReturnType<typeof layer>[], limits = {}): Promise<FlatImage> =>
    flattenLayers(layers, { workDir: dir, ...limits });
  const paths = (f: FlatImage): Record<string, Inode> =>
    Object.fromEntries([...f.tree.walk()].map(({ path, node }) => [path, node.inode]));
  const leftovers = (): string[] => readdirSync(dir).filter((f) => f.startsWith('spill-'));

  it('applies whiteouts and opaque dirs to lower layers only, keeps dir children, links and symlinks', async () => {
    const f = await flat([
      layer([
        { path: 'keep/', type: 'dir', mode: 0o755 },
        { path: 'keep/a', body: 'a' },
        { path: 'gone', body: 'x' },
        { path: 'op/', type: 'dir' },
        { path: 'op/old', body: 'o' },
        { path: 'op/d/', type: 'dir' },
        { path: 'op/d/deep', body: 'd' },
        { path: 'h1', body: 'shared', uid: 3 },
        { path: 'h2', type: 'hardlink', linkname: 'h1' },
        { path: 'rel', type: 'symlink', linkname: '../x/y' },
        { path: 'dang', type: 'symlink', linkname: '/does/not/exist' },
      ]),
      layer(
        [
          { path: 'keep/', type: 'dir', mode: 0o700, uid: 9 },
          { path: '.wh.gone' },
          { path: 'op/fresh', body: 'f' },
          { path: 'op/.wh..wh..opq' },
          { path: 'op/d/', type: 'dir' },
          { path: 'new', body: 'n' },
          { path: '.wh.new' }, // same layer: not hidden
          { path: 'h3', type: 'hardlink', linkname: 'h2' },
        ],
        'zstd',
      ),
    ]);
    try {
      const p = paths(f);
      expect(Object.keys(p).sort()).toEqual(
        [
          '/',
          '/dang',
          '/h1',
          '/h2',
          '/h3',
          '/keep',
          '/keep/a',
          '/new',
          '/op',
          '/op/d',
          '/op/fresh',
          '/rel',
        ].sort(),
      );
      expect(p['/keep']).toMatchObject({ mode: 0o700, uid: 9 });
      expect(p['/h1']).toBe(p['/h2']);
      expect(p['/h3']).toBe(p['/h1']);
      expect(p['/h1']?.nlink).toBe(3);
      expect(p['/rel']?.target).toBe('../x/y');
      expect(p['/dang']?.target).toBe('/does/not/exist');
    } finally {
      await f.dispose();
    }
    expect(leftovers()).toEqual([]);
  });

  it('resolves a path through an image symlink inside the image, whatever the link says', async () => {
    const f = await flat([
      layer([
        { path: 'usr/lib/', type: 'dir' },
        { path: 'lib', type: 'symlink', linkname: 'usr/lib' },
        { path: 'escape', type: 'symlink', linkname: '../../../../tmp' },
        { path: 'abs', type: 'symlink', linkname: '/etc' },
      ]),
      layer([
        { path: 'lib/libc.so', body: 'elf' },
        { path: 'escape/pwned', body: 'stays inside' },
        { path: 'abs/passwd', body: 'root:x:0:0' },
      ]),
    ]);
    try {
      const p = paths(f);
      expect(p['/usr/lib/libc.so']?.size).toBe(3);
      expect(p['/tmp/pwned']?.size).toBe(12);
      expect(p['/etc/passwd']?.size).toBe(10);
      expect(p['/lib']?.type).toBe('symlink');
    } finally {
      await f.dispose();
    }
  });

  it('strictSymlinks refuses a write through a link climbing above the root; in-root links still work', async () => {
    const base = layer([
      { path: 'usr/lib/', type: 'dir' },
      { path: 'lib', type: 'symlink', linkname: 'usr/lib' },
      { path: 'escape', type: 'symlink', linkname: '../../../../tmp' },
    ]);
    const ok = await flat([base, layer([{ path: 'lib/x', body: 'x' }])], { strictSymlinks: true });
    expect(paths(ok)['/usr/lib/x']?.size).toBe(1);
    await ok.dispose();
    await expect(
      flat([base, layer([{ path: 'escape/pwned', body: 'x' }])], { strictSymlinks: true }),
    ).rejects.toThrow(
      /layer 2\/2 .*"escape\/pwned": goes through a symlink that points above the image root/,
    );
    expect(leftovers()).toEqual([]);
  });

  it('refuses ".." names, hard links to missing files, and links looping, with the layer named', async () => {
    await expect(flat([layer([{ path: '../../etc/passwd', body: 'x' }])])).rejects.toThrow(
      /layer 1\/1 \(sha256:[0-9a-f]{12}\): "..\/..\/etc\/passwd": a ".." component \(path traversal\) is refused/,
    );
    await expect(flat([layer([{ path: 'h', type: 'hardlink', linkname: 'nope' }])])).rejects.toThrow(
      /hard link to missing "nope"/,
    );
    await expect(flat([layer([{ path: 'h', type: 'hardlink', linkname: '../x' }])])).rejects.toThrow(
      /path traversal/,
    );
    await expect(
      flat([
        layer([
          { path: 'a', type: 'symlink', linkname: 'b' },
          { path: 'b', type: 'symlink', linkname: 'a' },
          { path: 'a/x', body: 'loop' },
        ]),
      ]),
    ).rejects.toThrow(/too many levels of symbolic links/);
    await expect(
      flat([
        layer([
          { path: 'f', body: 'file' },
          { path: 'f/x', body: 'under a file' },
        ]),
      ]),
    ).rejects.toThrow(/"f" on the way is a file, not a directory/);
    expect(leftovers()).toEqual([]);
  });

  it('stops a decompression bomb at the bound and removes what it spilled', async () => {
    const bomb = layer([{ path: 'zeros', body: Buffer.alloc(8 * 1024 * 1024) }]);
    const t0 = Date.now();
    await expect(flat([bomb], { maxBytes: 1024 * 1024 })).rejects.toThrow(
      /decompressed data exceeds the limit of 1048576 bytes \(a decompression bomb/,
    );
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(leftovers()).toEqual([]);
    await expect(
      flat([layer([{ path: 'a' }, { path: 'b' }, { path: 'c' }])], { maxEntries: 2 }),
    ).rejects.toThrow(/more than 2 entries/);
  });

  it('an aborted flatten stops and removes its spill directory', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(
      flattenLayers([layer([{ path: 'a', body: 'a' }])], { workDir: dir, signal: ac.signal }),
    ).rejects.toThrow(/abort/i);
    expect(leftovers()).toEqual([]);
  });

  it('checks the diff_id, detects compression by magic bytes, refuses bzip2 and garbage', async () => {
    const l = layer([{ path: 'a', body: 'a' }], 'zstd');
    await expect(flat([{ ...l, diffId: sha256('other') }])).rejects.toThrow(
      /uncompressed content is sha256:[0-9a-f]{64}, but the image config says/,
    );
    const f = await flat([l, layer([{ path: 'b', body: 'b' }], 'none')]);
    const p = paths(f);
    expect(p['/b']?.content).toMatchObject({ kind: 'blob' });
    expect(p['/a']?.content).toMatchObject({ kind: 'spill' });
    await f.dispose();
    await expect(flat([layer([], 'none', Buffer.from('BZh91AY&SY'))])).rejects.toThrow(
      /bzip2-compressed layers are not supported/,
    );
    await expect(flat([layer([], 'none', Buffer.alloc(700, 0x41))])).rejects.toThrow(
      /bad tar header checksum/,
    );
    await expect(flat([layer([], 'none', gzip(Buffer.alloc(10)).subarray(0, 15))])).rejects.toThrow(
      /cannot read gzip layer/,
    );
  });
});
