// Exactness of layers → ext4: every inode of the image read back with debugfs and compared with
// the tar headers (test/helpers/oci-ext4-check.ts). Run in-process, and — when the test runs as
// root — again as nobody (uid 65534, no groups) to show the mechanism needs no privilege. Both
// with the scratch (spill files, staging tree) on tmpfs, the default, and on disk.
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statfsSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { layersToExt4 } from '../../src/image/oci/convert.ts';
import { debugfsQuote } from '../../src/image/oci/ext4.ts';
import { scratchSettled } from '../../src/image/oci/scratch.ts';
import { checkImage, runExt4Check, TEST_MEMORY_MIN, writeTestLayers } from '../helpers/oci-ext4-check.ts';
import { statImage } from '../helpers/oci-debugfs.ts';
import { tarEntries } from '../helpers/oci-tar.ts';

const ENV = { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` };
const isRoot = process.getuid?.() === 0;
const hasSetpriv = spawnSync('setpriv', ['--version']).status === 0;
// The memory cases need /dev/shm to be a tmpfs (any size: they take TEST_MEMORY_MIN of it); a
// machine without one has no memory scratch to test.
const TMPFS_MAGIC = 0x01021994;
const shmIsTmpfs = (() => {
  try {
    return statfsSync('/dev/shm').type === TMPFS_MAGIC;
  } catch {
    return false;
  }
})();

describe('layers → ext4', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'oci-ext4-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it.each(
    (
      [
        ['memory', undefined],
        ['disk', false],
      ] as const
    ).filter(([where]) => where === 'disk' || shmIsTmpfs),
  )(
    'every inode matches the tar headers (type, mode incl. setuid/setgid/sticky, owner, size, target, device, xattrs, links), scratch in %s',
    async (where, memoryDir) => {
      const r = await runExt4Check(dir, memoryDir);
      expect(r.scratch).toBe(where);
      expect(r.mismatches).toEqual([]);
      expect(r.checked).toBeGreaterThan(35);
      // And the filesystem is consistent.
      execFileSync('e2fsck', ['-fn', join(dir, 'rootfs.ext4')], { env: ENV, stdio: 'pipe' });
    },
  );

  it.skipIf(!isRoot || !hasSetpriv).each(
    [
      ['memory', 'mkfs in a user namespace mapping us to root'],
      ['disk', 'mkfs in a user namespace mapping us to root'],
      ['memory', 'no user namespace (every owner set by debugfs)'],
    ].filter(([where]) => where === 'disk' || shmIsTmpfs),
  )(
    'the same check passes unprivileged (uid 65534, no groups, no capabilities), scratch in %s, %s',
    (where, how) => {
      chmodSync(dir, 0o777);
      const node = process.execPath;
      const script = resolve('test/helpers/oci-ext4-check.ts');
      const r = spawnSync(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          '--inh-caps=-all',
          '--bounding-set=-all',
          node,
          script,
          dir,
          where,
        ],
        {
          encoding: 'utf8',
          env: { ...ENV, HOME: dir, ...(how.startsWith('no ') ? { BANGER_OCI_NO_USERNS: '1' } : {}) },
          timeout: 60_000,
        },
      );
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout) as {
        mismatches: string[];
        checked: number;
        uid: number;
        scratch: string;
      };
      expect(out.uid).toBe(65534);
      expect(out.scratch).toBe(where);
      expect(out.mismatches).toEqual([]);
      expect(out.checked).toBeGreaterThan(35);
    },
  );

  it('an explicit size is honoured, a too-small one fails and leaves no image or scratch behind', async () => {
    const layers = writeTestLayers(dir);
    const image = join(dir, 'sized.ext4');
    const r = await layersToExt4(layers, { imagePath: image, workDir: dir, label: 'x', sizeBytes: 64 << 20 });
    expect(r.size).toBe(64 << 20);
    const small = join(dir, 'small.ext4');
    await expect(
      layersToExt4(layers, { imagePath: small, workDir: dir, label: 'x', sizeBytes: 256 << 10 }),
    ).rejects.toThrow(/mkfs\.ext4/);
    expect(existsSync(small)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('convert-'))).toEqual([]);
  });

  it('odd names survive the debugfs pass (spaces, quotes, backslashes, UTF-8); newlines are refused', async () => {
    const names = ['a b', 'q"uo"te', "it's", 'back\\slash', 'ünï', ' lead', 'semi;#c'];
    const tar = tarEntries(names.map((n) => ({ path: `d/${n}`, body: n, uid: 4242, mode: 0o4711 })));
    const lp = join(dir, 'odd');
    writeFileSync(lp, tar);
    const image = join(dir, 'odd.ext4');
    await layersToExt4([{ digest: 'sha256:odd', path: lp }], {
      imagePath: image,
      workDir: dir,
      label: 'odd',
      headroomBytes: 1 << 20,
    });
    for (const s of statImage(
      image,
      names.map((n) => `/d/${n}`),
    )) {
      expect(s).toMatchObject({ uid: 4242, mode: 0o4711, type: 'regular' });
    }
    expect(() => debugfsQuote('a\nb')).toThrow(/newlines/);
  });

  it.skipIf(!shmIsTmpfs)(
    "scratch in memory: a tmpfs is used and left empty, dead processes' leftovers are swept; not a tmpfs or too small: disk",
    async () => {
      const layers = writeTestLayers(dir);
      const shm = mkdtempSync('/dev/shm/oci-ext4-test-');
      try {
        // A leftover of a daemon that died mid-conversion (pid 2^22+1 > pid_max: never alive).
        const dead = join(shm, 'banger-oci-4194305-abc');
        mkdirSync(join(dead, 'spill'), { recursive: true });
        writeFileSync(join(dead, 'spill', '1'), 'x');
        const stages: string[] = [];
        const a = await layersToExt4(layers, {
          imagePath: join(dir, 'a.ext4'),
          workDir: dir,
          memoryDir: shm,
          memoryMin: TEST_MEMORY_MIN,
          label: 'x',
          onStage: (_s, m) => stages.push(m),
        });
        expect(a.scratch).toBe('memory');
        await scratchSettled();
        expect(readdirSync(shm)).toEqual([]);
        expect(checkImage(join(dir, 'a.ext4')).mismatches).toEqual([]);
        // A directory on disk is no memory scratch.
        const b = await layersToExt4(layers, {
          imagePath: join(dir, 'b.ext4'),
          workDir: dir,
          memoryDir: dir,
          label: 'x',
        });
        expect(b.scratch).toBe('disk');
        // Outgrowing the memory share mid-flatten: again on disk, same result, nothing left in memory.
        const c = await layersToExt4(layers, {
          imagePath: join(dir, 'c.ext4'),
          workDir: dir,
          memoryDir: shm,
          memoryMin: TEST_MEMORY_MIN,
          memoryLimit: 64 * 1024,
          label: 'x',
          onStage: (_s, m) => stages.push(m),
        });
        expect(c.scratch).toBe('disk');
        expect(
          stages.some((m) =>
            /does not fit in .* memory scratch: flattening again with scratch on disk/.test(m),
          ),
        ).toBe(true);
        await scratchSettled();
        expect(readdirSync(shm)).toEqual([]);
        expect(readdirSync(dir).filter((f) => f.startsWith('convert-'))).toEqual([]);
        expect(checkImage(join(dir, 'c.ext4')).mismatches).toEqual([]);
      } finally {
        rmSync(shm, { recursive: true, force: true });
      }
    },
  );
});
