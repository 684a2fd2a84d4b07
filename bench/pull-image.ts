// The images of the `pull` part, generated once and cached: an OCI layout holding
//   bench/pull:v1  several gzip layers with realistic content — the Debian minbase tarball of the
//                  OCI test fixtures (≈78 MB, 4.3k entries), a tree of many small text files
//                  (node_modules-like, with symlinks), large compressible files (text from a word
//                  list, ≈2.4× under gzip) and large incompressible ones (already-compressed assets)
//   bench/pull:v2  the same layers plus one small layer (what a second pull must fetch)
// Content comes from a seeded generator (aes-128-ctr over zeros), so the digests are stable; the
// layers are tarred by GNU tar with fixed owners and times and gzipped by gzip -n -6 (the level
// Go's archive writers use). Scale `small` (≈30 MB, no minbase) is for developing the bench.
import { spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { LayoutWriter, MEDIA, type LayerBlob } from '../test/fixtures/oci/layouts.ts';

/** Bump when the generated content changes (the cache key). */
const GENERATOR = 1;
export const PULL_CACHE = process.env.BANGER_BENCH_PULL_CACHE ?? '/var/cache/banger-test/bench-pull';
const MB = 1024 * 1024;

export type PullScale = 'full' | 'small';

export interface PullLayerInfo {
  name: string;
  digest: string;
  compressed: number;
  uncompressed: number;
  entries: number;
}

export interface PullFixture {
  layout: string;
  scale: PullScale;
  /** The first image's layers, then the second image's extra one. */
  layers: PullLayerInfo[];
  first: { tag: string; digest: string; compressed: number; uncompressed: number; entries: number };
  second: { tag: string; digest: string; compressed: number; uncompressed: number; entries: number };
}

const SPECS: Record<
  PullScale,
  { smallFiles: number; textFiles: [number, number]; randomFiles: [number, number]; minbase: boolean }
> = {
  // [count, MB each]
  full: { smallFiles: 20_000, textFiles: [8, 10], randomFiles: [6, 16], minbase: true },
  small: { smallFiles: 2_000, textFiles: [2, 4], randomFiles: [2, 4], minbase: false },
};

/** Deterministic pseudo-random bytes: AES-CTR keystream of a seed. */
class Prng {
  private readonly cipher;
  constructor(seed: string) {
    const key = createHash('sha256').update(seed).digest();
    this.cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  }
  bytes(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n));
  }
}

/** Text from a fixed vocabulary: compresses about as well as source code or docs (≈2.4× under gzip). */
class TextGen {
  private readonly words: Buffer[];
  private readonly rng: Prng;
  constructor(seed: string) {
    this.rng = new Prng(seed);
    const letters = 'etaoinshrdlucmfwypvbgkjqxz';
    const raw = this.rng.bytes(4096 * 11);
    this.words = Array.from({ length: 4096 }, (_, i) => {
      const len = 2 + ((raw[i * 11] ?? 0) % 9);
      let w = '';
      for (let k = 1; k <= len; k++) w += letters[((raw[i * 11 + k] ?? 0) * (raw[i * 11 + k] ?? 0)) % 26];
      return Buffer.from(w);
    });
  }
  text(n: number): Buffer {
    const out = Buffer.alloc(n);
    const picks = this.rng.bytes(Math.ceil(n / 2) + 16);
    let pos = 0;
    let k = 0;
    let col = 0;
    while (pos < n) {
      const w = this.words[picks.readUInt16LE(k % (picks.length - 1)) & 4095]!;
      k += 2;
      pos += w.copy(out, pos);
      col++;
      if (pos < n) out[pos++] = col % 12 === 0 ? 0x0a : 0x20;
    }
    return out;
  }
}

async function writeSmallFiles(root: string, count: number): Promise<void> {
  const gen = new TextGen('small-files');
  const sizes = new Prng('small-sizes').bytes(count * 2);
  const perPkg = 50;
  await mkdir(join(root, 'usr/local/bin'), { recursive: true });
  for (let p = 0; p * perPkg < count; p++) {
    const pkg = join(root, 'usr/local/lib/node_modules', `pkg${p}`);
    await mkdir(join(pkg, 'lib'), { recursive: true });
    await mkdir(join(pkg, 'src'), { recursive: true });
    const writes: Promise<void>[] = [];
    for (let f = 0; f < perPkg && p * perPkg + f < count; f++) {
      // Log-uniform-ish sizes from ≈100 B to ≈16 KB, as in a package tree.
      const i = p * perPkg + f;
      const size = Math.round(100 * Math.pow(160, (sizes.readUInt16LE(i * 2) ?? 0) / 65535));
      const name = f === 0 ? 'index.js' : `${f % 2 ? 'lib' : 'src'}/file${f}.js`;
      writes.push(writeFile(join(pkg, name), gen.text(size)));
    }
    writes.push(symlink(`../lib/node_modules/pkg${p}/index.js`, join(root, 'usr/local/bin', `pkg${p}`)));
    await Promise.all(writes);
  }
}

async function writeBigFiles(root: string, dir: string, n: number, mb: number, kind: 'text' | 'random') {
  await mkdir(join(root, dir), { recursive: true });
  for (let i = 0; i < n; i++) {
    const seed = `${kind}-${i}`;
    const data = kind === 'text' ? new TextGen(seed).text(mb * MB) : new Prng(seed).bytes(mb * MB);
    await writeFile(join(root, dir, `${kind}-${i}.${kind === 'text' ? 'dat' : 'bin'}`), data);
  }
}

function sh(argv: string[]): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr.slice(-500)}`);
}

async function sha256File(path: string, gunzip = false): Promise<string> {
  const h = createHash('sha256');
  if (gunzip) await pipeline(createReadStream(path), createGunzip(), h);
  else await pipeline(createReadStream(path), h);
  return `sha256:${h.digest('hex')}`;
}

/** A directory → a deterministic tar → gzip; returns the .tar.gz path, diff_id and sizes. */
async function tarLayer(
  dir: string,
  out: string,
): Promise<{ path: string; diffId: string; uncompressed: number; entries: number }> {
  const tar = `${out}.tar`;
  sh([
    'tar',
    '--sort=name',
    '--format=posix',
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    '--numeric-owner',
    '--owner=0',
    '--group=0',
    '--mtime=@1700000000',
    '-C',
    dir,
    '-cf',
    tar,
    '.',
  ]);
  const diffId = await sha256File(tar);
  const uncompressed = statSync(tar).size;
  const list = spawnSync('tar', ['-tf', tar], { encoding: 'utf8', maxBuffer: 256 * MB });
  const entries = list.stdout.split('\n').filter(Boolean).length;
  sh(['sh', '-c', 'gzip -n -6 -c "$1" > "$2"', 'sh', tar, `${out}.tar.gz`]);
  rmSync(tar);
  return { path: `${out}.tar.gz`, diffId, uncompressed, entries };
}

/**
 * The cached fixture for a scale, generated when missing (≈1–2 min for `full`). `minbaseTarGz`
 * is the OCI test fixtures' minbase tarball (needed for `full`).
 */
export async function pullFixture(o: {
  scale: PullScale;
  minbaseTarGz?: string;
  say: (l: string) => void;
}): Promise<PullFixture> {
  const spec = SPECS[o.scale];
  if (spec.minbase && o.minbaseTarGz === undefined) {
    throw new Error(
      'the full pull image needs the minbase tarball (run test/fixtures/oci/prepare.sh as root)',
    );
  }
  const mb = spec.minbase && o.minbaseTarGz ? statSync(o.minbaseTarGz) : undefined;
  const key = createHash('sha256')
    .update(JSON.stringify({ GENERATOR, spec, minbase: mb ? [o.minbaseTarGz, mb.size, mb.mtimeMs] : null }))
    .digest('hex')
    .slice(0, 16);
  const dir = join(PULL_CACHE, `${o.scale}-${key}`);
  const summary = join(dir, 'summary.json');
  if (existsSync(summary)) return JSON.parse(readFileSync(summary, 'utf8')) as PullFixture;

  o.say(`generating the ${o.scale} pull images in ${dir} (once; cached)`);
  mkdirSync(PULL_CACHE, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const src = join(tmp, 'src');
    const built: { name: string; path: string; diffId: string; uncompressed: number; entries: number }[] = [];
    if (spec.minbase && o.minbaseTarGz) {
      const list = spawnSync('tar', ['-tzf', o.minbaseTarGz], { encoding: 'utf8', maxBuffer: 256 * MB });
      let uncompressed = 0;
      const h = createHash('sha256');
      await pipeline(
        createReadStream(o.minbaseTarGz),
        createGunzip(),
        async (chunks: AsyncIterable<Buffer>) => {
          for await (const c of chunks) {
            uncompressed += c.length;
            h.update(c);
          }
        },
      );
      built.push({
        name: 'minbase (Debian bookworm, mmdebstrap)',
        path: o.minbaseTarGz,
        diffId: `sha256:${h.digest('hex')}`,
        uncompressed,
        entries: list.stdout.split('\n').filter(Boolean).length,
      });
    }
    const layer = async (name: string, fill: (root: string) => Promise<void>): Promise<void> => {
      const root = join(src, String(built.length));
      await mkdir(root, { recursive: true });
      await fill(root);
      built.push({ name, ...(await tarLayer(root, join(tmp, `layer${built.length}`))) });
      rmSync(root, { recursive: true, force: true });
    };
    await layer(`${spec.smallFiles} small text files (≈100 B–16 KB) and symlinks`, (r) =>
      writeSmallFiles(r, spec.smallFiles),
    );
    const [tn, tmb] = spec.textFiles;
    await layer(`${tn} × ${tmb} MB compressible text`, (r) =>
      writeBigFiles(r, 'usr/share/bench', tn, tmb, 'text'),
    );
    const [rn, rmb] = spec.randomFiles;
    await layer(`${rn} × ${rmb} MB incompressible data`, (r) =>
      writeBigFiles(r, 'opt/assets', rn, rmb, 'random'),
    );
    await layer('the second image’s own layer: 40 small files', async (r) => {
      await mkdir(join(r, 'etc/bench-v2'), { recursive: true });
      const gen = new TextGen('v2');
      for (let i = 0; i < 40; i++)
        await writeFile(join(r, 'etc/bench-v2', `conf${i}`), gen.text(2000 + i * 100));
    });

    const w = new LayoutWriter(join(tmp, 'layout'));
    const blobs: LayerBlob[] = [];
    const layers: PullLayerInfo[] = [];
    for (const b of built) {
      const desc = await w.putFile(b.path, MEDIA.gzip);
      blobs.push({ desc, diffId: b.diffId });
      layers.push({
        name: b.name,
        digest: desc.digest,
        compressed: desc.size,
        uncompressed: b.uncompressed,
        entries: b.entries,
      });
    }
    const config = {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['bash'],
    };
    const v1 = w.image(blobs.slice(0, -1), config);
    const v2 = w.image(blobs, config);
    w.tag('v1', v1);
    w.tag('v2', v2);
    const sum = (ls: PullLayerInfo[]) => ({
      compressed: ls.reduce((n, l) => n + l.compressed, 0),
      uncompressed: ls.reduce((n, l) => n + l.uncompressed, 0),
      entries: ls.reduce((n, l) => n + l.entries, 0),
    });
    for (const f of built) if (f.path.startsWith(tmp)) rmSync(f.path, { force: true });
    rmSync(src, { recursive: true, force: true });
    const fixture: PullFixture = {
      layout: join(dir, 'layout'),
      scale: o.scale,
      layers,
      first: { tag: 'v1', digest: v1.digest, ...sum(layers.slice(0, -1)) },
      second: { tag: 'v2', digest: v2.digest, ...sum(layers) },
    };
    await writeFile(join(tmp, 'summary.json'), JSON.stringify(fixture, null, 1));
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    return fixture;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
