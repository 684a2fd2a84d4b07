// Pull through src/image/oci from a REAL registry: Debian's docker-registry on 127.0.0.1 (a free
// port, storage in the test's directory), fed by skopeo from OCI layouts we write ourselves
// (test/fixtures/oci/layouts.ts; digests preserved). Then flatten + ext4, and every inode read
// back with debugfs against the tar headers. Runs in the host namespace on loopback only; no VM.
// Hostile registries (bad digests, truncation, errors, stalls) are the in-process fake's job
// (oci-pull.test.ts): this file shows the client agrees with a real implementation.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layersToExt4 } from '../../src/image/oci/convert.ts';
import { dockerConfigCredentials } from '../../src/image/oci/credentials.ts';
import { layerInputs } from '../../src/image/oci/image.ts';
import { pullImage, type PullOptions, type PullProgress } from '../../src/image/oci/pull.ts';
import { catImage, listImage, statImage } from '../helpers/oci-debugfs.ts';
import { checkImage, EXPECTED, type Expected } from '../helpers/oci-ext4-check.ts';
import { CRAFTED_CONFIG, writeCraftedLayout, writeMultiLayout } from '../fixtures/oci/layouts.ts';
import {
  preparedFixtures,
  pushLayout,
  registryToolsMissing,
  startRegistry,
  type Registry,
} from '../fixtures/oci/registry.ts';
import { readTarHeaders, type TarHeaderInfo } from '../fixtures/oci/tar-headers.ts';

const MISSING = registryToolsMissing();
if (MISSING) console.warn(`oci-registry.test.ts skipped: ${MISSING}`);
const FIXTURES = MISSING ? undefined : preparedFixtures();
const NO_MINBASE = FIXTURES
  ? undefined
  : 'no prepared minbase fixture (run test/fixtures/oci/prepare.sh as root; scripts/test.sh does)';
if (!MISSING && NO_MINBASE) console.warn(`oci-registry.test.ts: the minbase case is skipped: ${NO_MINBASE}`);

const FAST = { attempts: 3, baseDelayMs: 50, maxDelayMs: 200 };

/** crafted:v2 = v1 plus LAYER4 (layouts.ts): /etc/v2 added, /usr/bin/su replaced. */
const EXPECTED_V2: Expected[] = [
  ...EXPECTED.filter((e) => e.path !== '/usr/bin/su'),
  { path: '/usr/bin/su', type: 'regular', mode: 0o4711, uid: 0, gid: 0, body: 'su-v3' },
  { path: '/etc/v2', type: 'regular', mode: 0o600, uid: 4321, gid: 4321, body: 'only in v2\n' },
];

describe.skipIf(MISSING !== undefined)('pull from docker-registry on 127.0.0.1 (pushed by skopeo)', () => {
  let dir: string;
  let open: Registry;
  let priv: Registry;
  let crafted: ReturnType<typeof writeCraftedLayout>;
  let multi: ReturnType<typeof writeMultiLayout>;
  const opts = (reg: Registry, ref: string, extra: Partial<PullOptions> = {}): PullOptions => ({
    ref: `${reg.host}/${ref}`,
    cacheDir: join(dir, 'blobs'),
    // Not the runner's own docker config: anonymous unless a test says otherwise.
    credentials: async () => undefined,
    retry: FAST,
    idleTimeoutMs: 10_000,
    ...extra,
  });
  const toExt4 = async (image: Awaited<ReturnType<typeof pullImage>>, name: string): Promise<string> => {
    const path = join(dir, `${name}.ext4`);
    await layersToExt4(layerInputs(image), {
      imagePath: path,
      workDir: dir,
      label: name,
      headroomBytes: 8 << 20,
    });
    return path;
  };
  /** Blob GETs the registry answered since `from` (an index into its request log). */
  const blobGets = (reg: Registry, from: number): string[] =>
    reg
      .requests()
      .slice(from)
      .filter((r) => r.method === 'GET' && r.path.includes('/blobs/'))
      .map((r) => r.path.split('/blobs/')[1]!);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'oci-registry-'));
    crafted = writeCraftedLayout(join(dir, 'layout-crafted'));
    multi = writeMultiLayout(join(dir, 'layout-multi'));
    open = await startRegistry({ workDir: join(dir, 'open') });
    priv = await startRegistry({
      workDir: join(dir, 'private'),
      token: { user: 'tester', pass: 's3cret', publicPrefix: 'public/' },
    });
    const push = (reg: Registry, layout: string, tag: string, dest: string, all = false): Promise<void> =>
      pushLayout({ layout, tag, registry: reg, dest, all, workDir: dir });
    await push(open, join(dir, 'layout-crafted'), 'v1', 'test/crafted:v1');
    await push(open, join(dir, 'layout-crafted'), 'v2', 'test/crafted:v2');
    await push(open, join(dir, 'layout-multi'), 'latest', 'test/multi:latest', true);
    await push(priv, join(dir, 'layout-crafted'), 'v1', 'private/crafted:v1');
    await push(priv, join(dir, 'layout-multi'), 'latest', 'public/multi:latest', true);
    if (FIXTURES) {
      await push(open, FIXTURES.layouts.minbase, 'bookworm', 'minbase:bookworm');
      await push(open, FIXTURES.layouts.python, 'bookworm', 'python:bookworm');
    }
  }, 120_000);

  afterAll(async () => {
    await open?.stop();
    await priv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pulls by tag (gzip, zstd and plain layers), keeps the config, and every inode matches the tar headers', async () => {
    const events: PullProgress[] = [];
    const image = await pullImage(opts(open, 'test/crafted:v1', { onProgress: (e) => events.push(e) }));
    expect(image.digest).toBe(crafted.v1.digest);
    expect(image.reference).toBe(`${open.host}/test/crafted:v1`);
    expect(image.layers.map((l) => l.digest)).toEqual(crafted.v1.layers);
    expect(image.layers.map((l) => l.mediaType)).toEqual([
      'application/vnd.oci.image.layer.v1.tar+gzip',
      'application/vnd.oci.image.layer.v1.tar+zstd',
      'application/vnd.oci.image.layer.v1.tar',
    ]);
    expect(image.config).toMatchObject(CRAFTED_CONFIG);
    expect(events.find((e) => e.kind === 'resolved')).toMatchObject({ platform: 'linux/amd64' });
    const r = checkImage(await toExt4(image, 'crafted-v1'));
    expect(r.mismatches).toEqual([]);
    expect(r.checked).toBeGreaterThan(35);
  }, 60_000);

  it('pulls by digest; a second image sharing three of its four layers downloads only the new one', async () => {
    const before = open.requests().length;
    const v1 = await pullImage(opts(open, `test/crafted@${crafted.v1.digest}`));
    expect(v1.digest).toBe(crafted.v1.digest);
    expect(
      open
        .requests()
        .slice(before)
        .map((r) => r.path),
    ).toContain(`/v2/test/crafted/manifests/${crafted.v1.digest}`);
    // (the first test may have filled the cache already: the layers are fetched at most once)
    const mid = open.requests().length;
    const v2 = await pullImage(opts(open, 'test/crafted:v2'));
    expect(v2.digest).toBe(crafted.v2.digest);
    const got = blobGets(open, mid);
    const newLayer = crafted.v2.layers[3]!;
    expect(got).toContain(newLayer);
    for (const shared of crafted.v1.layers) expect(got).not.toContain(shared);
    const r = checkImage(await toExt4(v2, 'crafted-v2'), EXPECTED_V2);
    expect(r.mismatches).toEqual([]);
  }, 60_000);

  it('picks the platform from an index: linux/amd64 by default, linux/arm64 when asked', async () => {
    const events: PullProgress[] = [];
    const amd = await pullImage(opts(open, 'test/multi:latest', { onProgress: (e) => events.push(e) }));
    expect(amd.digest).toBe(multi.amd64);
    expect(amd.indexDigest).toBe(multi.digest);
    const resolved = events.find((e) => e.kind === 'resolved');
    expect(resolved?.kind === 'resolved' && resolved.message).toMatch(/picked linux\/amd64 from a.* index/);
    expect(catImage(await toExt4(amd, 'multi-amd64'), '/etc/platform').toString()).toBe('linux/amd64\n');
    const arm = await pullImage(opts(open, 'test/multi:latest', { platform: 'linux/arm64' }));
    expect(arm.digest).toBe(multi.arm64);
    expect(arm.platform).toMatchObject({ os: 'linux', architecture: 'arm64' });
    expect(catImage(await toExt4(arm, 'multi-arm64'), '/etc/platform').toString()).toBe('linux/arm64\n');
    await expect(pullImage(opts(open, 'test/multi:latest', { platform: 'linux/s390x' }))).rejects.toThrow(
      /linux\/amd64.*linux\/arm64/s,
    );
  }, 60_000);

  it('a token-protected private repository: refused anonymously, pulled with docker config credentials', async () => {
    // Anonymous tokens only cover public/*: the public repository pulls without credentials.
    const pub = await pullImage(opts(priv, 'public/multi:latest', { cacheDir: join(dir, 'blobs-priv') }));
    expect(pub.digest).toBe(multi.amd64);
    await expect(
      pullImage(opts(priv, 'private/crafted:v1', { cacheDir: join(dir, 'blobs-priv') })),
    ).rejects.toThrow(/access to repository:private\/crafted:pull denied .*no credentials for it/);
    const cfgDir = join(dir, 'docker');
    mkdirSync(cfgDir, { recursive: true });
    writeFileSync(
      join(cfgDir, 'config.json'),
      JSON.stringify({ auths: { [priv.host]: { auth: Buffer.from('tester:s3cret').toString('base64') } } }),
    );
    const image = await pullImage(
      opts(priv, 'private/crafted:v1', {
        cacheDir: join(dir, 'blobs-priv'),
        credentials: dockerConfigCredentials(join(cfgDir, 'config.json')),
      }),
    );
    expect(image.digest).toBe(crafted.v1.digest);
    // Wrong credentials: the token endpoint refuses them, and the error says so.
    writeFileSync(
      join(cfgDir, 'config.json'),
      JSON.stringify({ auths: { [priv.host]: { auth: Buffer.from('tester:wrong').toString('base64') } } }),
    );
    await expect(
      pullImage(
        opts(priv, `private/crafted:v1`, {
          cacheDir: join(dir, 'blobs-other'),
          credentials: dockerConfigCredentials(join(cfgDir, 'config.json')),
        }),
      ),
    ).rejects.toThrow(/token endpoint .* refused \(HTTP 401/);
  }, 60_000);

  it.skipIf(NO_MINBASE !== undefined)(
    'minbase:bookworm (a real Debian tree): every file of the ext4 has the stat of its tar header',
    async () => {
      const f = FIXTURES!;
      const image = await pullImage(opts(open, 'minbase:bookworm'));
      expect(image.digest).toBe(f.summary.minbase.digest);
      const ext4 = await toExt4(image, 'minbase');
      const mismatches = compareWithTar(ext4, readTarHeaders(f.minbaseTarGz));
      expect(mismatches.slice(0, 20)).toEqual([]);
    },
    300_000,
  );

  it.skipIf(NO_MINBASE !== undefined)(
    "python:bookworm (minbase's layer + python3's): after minbase only the new layer is downloaded, and the ext4 matches both layers' headers",
    async () => {
      const f = FIXTURES!;
      const [base, py] = f.summary.python.layers as [string, string];
      expect(base).toBe(f.summary.minbase.layers[0]);
      await pullImage(opts(open, 'minbase:bookworm'));
      const from = open.requests().length;
      const image = await pullImage(opts(open, 'python:bookworm'));
      expect(image.digest).toBe(f.summary.python.digest);
      const got = blobGets(open, from);
      expect(got).toContain(py);
      expect(got).not.toContain(base);
      const ext4 = await toExt4(image, 'python');
      const headers = [
        ...readTarHeaders(f.minbaseTarGz),
        ...readTarHeaders(join(f.layouts.python, 'blobs', 'sha256', py.slice(7))),
      ];
      expect(compareWithTar(ext4, headers).slice(0, 20)).toEqual([]);
      const [python] = statImage(ext4, ['/usr/bin/python3.11']);
      expect(python).toMatchObject({ type: 'regular', mode: 0o755, uid: 0 });
    },
    300_000,
  );
});

/** Every path of the image against the archive's last header for it (hard links: their target's). */
function compareWithTar(image: string, headers: TarHeaderInfo[]): string[] {
  const byPath = new Map<string, TarHeaderInfo>();
  for (const h of headers) byPath.set(h.path, h);
  const out: string[] = [];
  const paths = listImage(image);
  const inImage = new Set(paths);
  for (const p of paths) if (!byPath.has(p)) out.push(`${p}: in the image, not in the tarball`);
  for (const p of byPath.keys()) if (!inImage.has(p)) out.push(`${p}: in the tarball, not in the image`);
  const present = paths.filter((p) => byPath.has(p));
  const stats = new Map(statImage(image, present).map((s) => [s.path, s]));
  const TYPE: Record<TarHeaderInfo['type'], string> = {
    file: 'regular',
    hardlink: 'regular',
    symlink: 'symlink',
    char: 'character special',
    block: 'block special',
    dir: 'directory',
    fifo: 'FIFO',
  };
  let symlinks = 0;
  for (const p of present) {
    const link = byPath.get(p)!;
    const h = link.type === 'hardlink' ? byPath.get(link.linkname) : link;
    const s = stats.get(p)!;
    const bad = (what: string, got: unknown, want: unknown): void => {
      out.push(`${p}: ${what} ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    };
    if (!h) {
      bad('hard link target', undefined, link.linkname);
      continue;
    }
    if (link.type === 'hardlink' && stats.get(link.linkname)?.ino !== s.ino)
      bad('inode', s.ino, `shared with ${link.linkname}`);
    if (s.type !== TYPE[h.type]) bad('type', s.type, TYPE[h.type]);
    // Symlinks are 0777 whatever the header says (as tar -x gives on Linux).
    const mode = h.type === 'symlink' ? 0o777 : h.mode;
    if (s.mode !== mode) bad('mode', s.mode.toString(8), mode.toString(8));
    if (s.uid !== h.uid) bad('uid', s.uid, h.uid);
    if (s.gid !== h.gid) bad('gid', s.gid, h.gid);
    if (s.mtime !== h.mtime) bad('mtime', s.mtime, h.mtime);
    if (h.type === 'file' && s.size !== h.size) bad('size', s.size, h.size);
    if (h.type === 'symlink') {
      symlinks++;
      const target = s.target ?? catImage(image, p).toString('utf8');
      if (target !== h.linkname) bad('target', target, h.linkname);
    }
    if ((h.type === 'char' || h.type === 'block') && JSON.stringify(s.dev) !== JSON.stringify(h.dev))
      bad('device', s.dev, h.dev);
    if (JSON.stringify(s.xattrs) !== JSON.stringify(h.xattrs)) bad('xattrs', s.xattrs, h.xattrs);
  }
  // A real tree, not an empty one: thousands of entries, symlinks among them.
  if (present.length < 3000) out.push(`only ${present.length} paths compared`);
  if (symlinks < 50) out.push(`only ${symlinks} symlinks compared`);
  return out;
}
