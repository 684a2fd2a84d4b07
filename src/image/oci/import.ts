// `image import --oci-layout DIR[:TAG]` and `--docker-archive FILE`: the same manifest, config and
// layers as a pull, read from disk. Every blob is copied into the shared cache with its digest
// verified (or, for a docker archive's members, computed), so the rest of the pipeline only ever
// reads verified cached blobs, and images imported and pulled share layers.
import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { BlobCache } from './blobs.ts';
import type { OciImage, OciLayer } from './image.ts';
import { detectCompression } from './layers.ts';
import {
  formatPlatform,
  ManifestError,
  parseImageConfig,
  parseManifestDoc,
  parsePlatform,
  pickPlatform,
  type Descriptor,
  type ImageManifestDoc,
  type Platform,
} from './manifest.ts';
import { DEFAULT_PLATFORM } from './pull.ts';
import { ByteReader, readTar } from './tar.ts';

export interface ImportOptions {
  cacheDir: string;
  /** For an OCI layout: the org.opencontainers.image.ref.name; for a docker archive: a RepoTag. */
  tag?: string;
  platform?: string | Platform;
  signal?: AbortSignal;
}

const REF_NAME = 'org.opencontainers.image.ref.name';
const HEX = /^sha256:([a-f0-9]{64})$/;

/** Split `DIR[:TAG]` (a colon followed by a tag-like word at the end). */
export function parseLayoutArg(arg: string): { dir: string; tag?: string } {
  const m = /^(.+):([\w][\w.-]{0,127})$/.exec(arg);
  if (m?.[1] && m[2] && !m[2].includes('/')) return { dir: m[1], tag: m[2] };
  return { dir: arg };
}

function wantPlatform(p: ImportOptions['platform']): Platform {
  return typeof p === 'string' ? parsePlatform(p) : (p ?? DEFAULT_PLATFORM);
}

async function readJson(path: string, what: string): Promise<unknown> {
  const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new ManifestError(`${what}: ${e.code === 'ENOENT' ? 'missing' : e.message} (${path})`);
  });
  try {
    return JSON.parse(text);
  } catch {
    throw new ManifestError(`${what}: not JSON (${path})`);
  }
}

export async function importOciLayout(dir: string, opts: ImportOptions): Promise<OciImage> {
  const cache = new BlobCache(opts.cacheDir);
  const layout = await readJson(join(dir, 'oci-layout'), `${dir} is not an OCI image layout: oci-layout`);
  if ((layout as { imageLayoutVersion?: unknown }).imageLayoutVersion !== '1.0.0') {
    throw new ManifestError(`${dir}: unsupported imageLayoutVersion`);
  }
  const blobPath = (digest: string): string => {
    const hex = HEX.exec(digest)?.[1];
    if (!hex) throw new ManifestError(`${dir}: unsupported digest ${digest}`);
    return join(dir, 'blobs', 'sha256', hex);
  };
  const blobs: string[] = [];
  const readDoc = async (d: Descriptor): Promise<Buffer> => {
    await cache.ingestFile(blobPath(d.digest), d, opts.signal);
    blobs.push(d.digest);
    return (await cache.readBytes(d.digest)) ?? Buffer.alloc(0);
  };
  const index = parseManifestDoc(await readFile(join(dir, 'index.json')));
  if (index.kind !== 'index') throw new ManifestError(`${dir}/index.json is not an image index`);
  const tagged = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== undefined);
  let entry: Descriptor | undefined;
  if (opts.tag !== undefined) {
    entry = index.manifests.find((m) => m.annotations?.[REF_NAME] === opts.tag);
    if (!entry) {
      const tags = tagged.map((m) => m.annotations?.[REF_NAME]).join(', ');
      throw new ManifestError(`${dir}: no image tagged ${opts.tag} (tags: ${tags || 'none'})`);
    }
  } else if (index.manifests.length === 1) {
    entry = index.manifests[0];
  } else {
    const tags = tagged.map((m) => m.annotations?.[REF_NAME]).join(', ');
    throw new ManifestError(
      `${dir} holds ${index.manifests.length} images: say which (DIR:TAG; tags: ${tags || 'none'})`,
    );
  }
  if (!entry) throw new ManifestError(`${dir}: empty index`);
  const want = wantPlatform(opts.platform);
  let doc = parseManifestDoc(await readDoc(entry), entry.mediaType);
  let digest = entry.digest;
  let indexDigest: string | undefined;
  // Nested indexes (a multi-platform image in a layout): pick the platform.
  for (let depth = 0; doc.kind === 'index'; depth++) {
    if (depth > 4) throw new ManifestError(`${dir}: indexes nested too deep`);
    indexDigest ??= digest;
    const picked = pickPlatform(doc, want);
    doc = parseManifestDoc(await readDoc(picked), picked.mediaType);
    digest = picked.digest;
  }
  const manifest: ImageManifestDoc = doc;
  const config = parseImageConfig(await readDoc(manifest.config));
  const layers: OciLayer[] = [];
  for (const l of manifest.layers) {
    opts.signal?.throwIfAborted();
    await cache.ingestFile(blobPath(l.digest), l, opts.signal);
    layers.push({ digest: l.digest, size: l.size, mediaType: l.mediaType, path: cache.path(l.digest) });
    blobs.push(l.digest);
  }
  const image: OciImage = {
    digest,
    platform: configPlatform(config, want),
    config,
    configDigest: manifest.config.digest,
    layers,
    blobs: [...new Set(blobs)],
  };
  if (indexDigest !== undefined) image.indexDigest = indexDigest;
  const name = entry.annotations?.[REF_NAME];
  if (opts.tag !== undefined || name !== undefined) image.reference = opts.tag ?? name;
  return image;
}

function configPlatform(
  config: { os?: string; architecture?: string; variant?: string },
  want: Platform,
): Platform {
  const p: Platform = { os: config.os ?? want.os, architecture: config.architecture ?? want.architecture };
  if (config.variant) p.variant = config.variant;
  if (p.os !== want.os || p.architecture !== want.architecture) {
    throw new ManifestError(`the image is ${formatPlatform(p)}, not ${formatPlatform(want)}`);
  }
  return p;
}

interface Member {
  type: 'file' | 'symlink' | 'hardlink' | 'other';
  offset: number;
  size: number;
  link: string;
}

/** Index a docker archive's members (name → where), following nothing yet. */
async function indexArchive(file: string, signal?: AbortSignal): Promise<Map<string, Member>> {
  const head = Buffer.alloc(8);
  const fh = await open(file, 'r');
  try {
    await fh.read(head, 0, 8, 0);
  } finally {
    await fh.close();
  }
  const c = detectCompression(head);
  if (c !== 'none') {
    throw new ManifestError(
      `${file} is ${c}-compressed: decompress it first (docker save writes a plain tar)`,
    );
  }
  const members = new Map<string, Member>();
  const reader = new ByteReader(createReadStream(file, { signal, highWaterMark: 1024 * 1024 }));
  for await (const e of readTar(reader)) {
    const name = posix.normalize(e.header.path.replace(/^\.?\/+/, '')).replace(/\/$/, '');
    const h = e.header;
    members.set(name, {
      type: h.type === 'file' || h.type === 'symlink' || h.type === 'hardlink' ? h.type : 'other',
      offset: h.dataOffset,
      size: h.size,
      link: h.linkname,
    });
  }
  return members;
}

/** A member by name, through the archive's own symlinks/hardlinks (docker save links shared layers). */
function resolveMember(members: Map<string, Member>, name: string, file: string): Member & { name: string } {
  let cur = posix.normalize(name.replace(/^\.?\/+/, ''));
  for (let hops = 0; hops < 10; hops++) {
    const m = members.get(cur);
    if (!m) throw new ManifestError(`${file}: no member ${JSON.stringify(cur)}`);
    if (m.type === 'file') return { ...m, name: cur };
    if (m.type === 'symlink') cur = posix.normalize(posix.join(posix.dirname(cur), m.link));
    else if (m.type === 'hardlink') cur = posix.normalize(m.link.replace(/^\.?\/+/, ''));
    else throw new ManifestError(`${file}: member ${cur} is not a file`);
    if (cur.startsWith('../') || cur === '..')
      throw new ManifestError(`${file}: member link escapes the archive`);
  }
  throw new ManifestError(`${file}: member links loop at ${name}`);
}

/** What `docker save` writes: manifest.json ([{Config, RepoTags, Layers}]), config and layer tars. */
export async function importDockerArchive(file: string, opts: ImportOptions): Promise<OciImage> {
  const cache = new BlobCache(opts.cacheDir);
  await stat(file);
  const members = await indexArchive(file, opts.signal);
  const readMember = async (name: string): Promise<Buffer> => {
    const m = resolveMember(members, name, file);
    if (m.size > 16 * 1024 * 1024) throw new ManifestError(`${file}: ${name} is too large for metadata`);
    const fh = await open(file, 'r');
    try {
      const b = Buffer.alloc(m.size);
      await fh.read(b, 0, m.size, m.offset);
      return b;
    } finally {
      await fh.close();
    }
  };
  const list = JSON.parse((await readMember('manifest.json')).toString('utf8')) as unknown;
  if (!Array.isArray(list) || list.length === 0)
    throw new ManifestError(`${file}: manifest.json lists no image`);
  type Entry = { Config?: unknown; RepoTags?: unknown; Layers?: unknown };
  const entries = list as Entry[];
  const tagsOf = (e: Entry): string[] =>
    Array.isArray(e.RepoTags) ? e.RepoTags.filter((t): t is string => typeof t === 'string') : [];
  let entry: Entry | undefined;
  if (opts.tag !== undefined) {
    const t = opts.tag;
    entry = entries.find((e) => tagsOf(e).some((x) => x === t || x.endsWith(`/${t}`)));
    if (!entry)
      throw new ManifestError(
        `${file}: no image tagged ${t} (tags: ${entries.flatMap(tagsOf).join(', ') || 'none'})`,
      );
  } else if (entries.length === 1) {
    entry = entries[0];
  } else {
    throw new ManifestError(
      `${file} holds ${entries.length} images: say which tag (${entries.flatMap(tagsOf).join(', ')})`,
    );
  }
  if (!entry || typeof entry.Config !== 'string' || !Array.isArray(entry.Layers)) {
    throw new ManifestError(`${file}: manifest.json entry without Config and Layers`);
  }
  const configBody = await readMember(entry.Config);
  const configDigest = await cache.putBytes(configBody);
  const config = parseImageConfig(configBody);
  const layers: OciLayer[] = [];
  for (const name of entry.Layers) {
    opts.signal?.throwIfAborted();
    if (typeof name !== 'string') throw new ManifestError(`${file}: bad layer name in manifest.json`);
    const m = resolveMember(members, name, file);
    const d = await cache.ingestFile(file, undefined, opts.signal, { start: m.offset, length: m.size });
    layers.push({
      digest: d.digest,
      size: d.size,
      mediaType: 'application/vnd.docker.image.rootfs.diff.tar',
      path: cache.path(d.digest),
    });
  }
  const image: OciImage = {
    digest: configDigest,
    platform: configPlatform(config, wantPlatform(opts.platform)),
    config,
    configDigest,
    layers,
    blobs: [...new Set([configDigest, ...layers.map((l) => l.digest)])],
  };
  const tag = opts.tag ?? tagsOf(entry)[0];
  if (tag !== undefined) image.reference = tag;
  return image;
}
