// `image pull`: reference → manifest (an index or list picks one platform) → config and layers
// into the shared blob cache, a few layers at a time, with progress per layer and overall. Blobs
// already in the cache are not downloaded again (a second image sharing layers fetches only what
// is new); an interrupted pull resumes from the partial files.
import { BlobCache } from './blobs.ts';
import { dockerConfigCredentials, type CredentialLookup, type Credentials } from './credentials.ts';
import type { RetryPolicy } from './http.ts';
import type { OciImage } from './image.ts';
import {
  formatPlatform,
  ManifestError,
  parseImageConfig,
  parsePlatform,
  pickPlatform,
  type ImageManifestDoc,
  type Platform,
} from './manifest.ts';
import { formatReference, parseReference } from './reference.ts';
import { RegistryClient } from './registry.ts';

export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

export type PullProgress =
  | {
      kind: 'resolved';
      reference: string;
      digest: string;
      platform: string;
      /** How many layers the image has (what the `layer` events count up to). */
      layers: number;
      message: string;
    }
  | {
      kind: 'layer';
      index: number;
      digest: string;
      done: number;
      total: number;
      overallDone: number;
      overallTotal: number;
    }
  | { kind: 'retry'; what: string; attempt: number; error: string; delayMs: number };

export interface PullOptions {
  ref: string;
  /** os/arch[/variant]; default linux/amd64. */
  platform?: string | Platform;
  insecure?: boolean;
  /** The blob cache directory (e.g. STATE/oci/blobs). */
  cacheDir: string;
  /** Default: the user's docker config (~/.docker/config.json, $DOCKER_CONFIG). */
  credentials?: Credentials | CredentialLookup;
  signal?: AbortSignal;
  onProgress?: (p: PullProgress) => void;
  retry?: RetryPolicy;
  idleTimeoutMs?: number;
  /** Layers downloaded at the same time (default 3). */
  concurrency?: number;
}

export async function pullImage(opts: PullOptions): Promise<OciImage> {
  const ref = parseReference(opts.ref);
  const want =
    typeof opts.platform === 'string' ? parsePlatform(opts.platform) : (opts.platform ?? DEFAULT_PLATFORM);
  const cache = new BlobCache(opts.cacheDir);
  const client = new RegistryClient({
    registry: ref.registry,
    insecure: opts.insecure,
    credentials: opts.credentials ?? dockerConfigCredentials(),
    retry: opts.retry,
    idleTimeoutMs: opts.idleTimeoutMs,
    onRetry: (what, attempt, e, delayMs) =>
      opts.onProgress?.({ kind: 'retry', what, attempt, error: (e as Error).message, delayMs }),
  });
  const { signal } = opts;
  const blobs: string[] = [];

  let top = await client.getManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest', signal);
  blobs.push(await cache.putBytes(top.body));
  const topDigest = top.digest;
  let how: string;
  if (top.doc.kind === 'index') {
    const entry = pickPlatform(top.doc, want);
    const list = top.doc.mediaType.includes('docker') ? 'manifest list' : 'index';
    top = await client.getManifest(ref.repository, entry.digest, signal);
    blobs.push(await cache.putBytes(top.body));
    if (top.doc.kind !== 'manifest') throw new ManifestError(`${entry.digest}: an index inside an index`);
    how = `picked ${formatPlatform(entry.platform ?? want)} from a ${list} (${topDigest.slice(0, 19)})`;
  } else {
    how = 'single-platform manifest';
  }
  const manifest: ImageManifestDoc = top.doc;
  const configBody = await client.getBlob(
    ref.repository,
    manifest.config.digest,
    manifest.config.size,
    signal,
  );
  blobs.push(await cache.putBytes(configBody));
  const config = parseImageConfig(configBody);
  const platform: Platform = {
    os: config.os ?? want.os,
    architecture: config.architecture ?? want.architecture,
    ...(config.variant ? { variant: config.variant } : {}),
  };
  if (platform.os !== want.os || platform.architecture !== want.architecture) {
    throw new ManifestError(
      `${formatReference(ref)} is a ${formatPlatform(platform)} image, not ${formatPlatform(want)}`,
    );
  }
  const reference = formatReference(ref);
  opts.onProgress?.({
    kind: 'resolved',
    reference,
    digest: top.digest,
    platform: formatPlatform(platform),
    layers: manifest.layers.length,
    message: `${reference}: ${how}, ${manifest.layers.length} layers`,
  });

  const overallTotal = manifest.layers.reduce((n, l) => n + l.size, 0);
  const done = manifest.layers.map(() => 0);
  const paths: string[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      const layer = manifest.layers[i];
      if (!layer) return;
      paths[i] = await cache.fetch(
        layer,
        {
          describe: `registry ${ref.registry}`,
          open: async (offset, s) => {
            const r = await client.openBlob(ref.repository, layer.digest, offset, s);
            return { start: r.start, body: r.response.body };
          },
        },
        {
          signal,
          retry: opts.retry,
          onRetry: (attempt, e, delayMs) =>
            opts.onProgress?.({
              kind: 'retry',
              what: `layer ${i + 1}/${manifest.layers.length} ${layer.digest.slice(0, 19)}`,
              attempt,
              error: (e as Error).message,
              delayMs,
            }),
          onProgress: (d, total) => {
            done[i] = d;
            opts.onProgress?.({
              kind: 'layer',
              index: i,
              digest: layer.digest,
              done: d,
              total,
              overallDone: done.reduce((a, b) => a + b, 0),
              overallTotal,
            });
          },
        },
      );
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 3) }, worker));
  return {
    reference,
    digest: top.digest,
    ...(topDigest !== top.digest ? { indexDigest: topDigest } : {}),
    platform,
    config,
    configDigest: manifest.config.digest,
    layers: manifest.layers.map((l, i) => ({
      digest: l.digest,
      size: l.size,
      mediaType: l.mediaType,
      path: paths[i] ?? '',
    })),
    blobs: [...new Set([...blobs, ...manifest.layers.map((l) => l.digest)])],
  };
}
