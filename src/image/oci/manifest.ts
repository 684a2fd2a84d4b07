// Image manifests, indexes and configs (OCI image spec v1 and Docker schema 2), shape-checked,
// and the choice of one platform's manifest from an index or manifest list.

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** What the registry client asks for (schema 1 is not accepted). */
export const MANIFEST_ACCEPT = [
  MEDIA.ociIndex,
  MEDIA.ociManifest,
  MEDIA.dockerList,
  MEDIA.dockerManifest,
].join(', ');

const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.zstd',
]);

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageManifestDoc {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndexDoc {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

/** The parts of the image config banger uses (run defaults) and checks (diff_ids). */
export interface ImageConfig {
  os?: string;
  architecture?: string;
  variant?: string;
  Env: string[];
  WorkingDir?: string;
  User?: string;
  Entrypoint?: string[];
  Cmd?: string[];
  diffIds: string[];
}

export class ManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ManifestError';
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const DIGEST = /^sha256:[a-f0-9]{64}$/;

function descriptor(v: unknown, what: string): Descriptor {
  if (!isRecord(v)) throw new ManifestError(`${what}: not an object`);
  const { mediaType, digest, size } = v;
  if (typeof digest !== 'string' || !DIGEST.test(digest)) {
    throw new ManifestError(`${what}: digest ${JSON.stringify(digest)} is not sha256:<64 hex>`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new ManifestError(`${what}: bad size ${JSON.stringify(size)}`);
  }
  const d: Descriptor = { mediaType: typeof mediaType === 'string' ? mediaType : '', digest, size };
  if (isRecord(v.platform)) {
    const p = v.platform;
    if (typeof p.os === 'string' && typeof p.architecture === 'string') {
      d.platform = { os: p.os, architecture: p.architecture };
      if (typeof p.variant === 'string' && p.variant !== '') d.platform.variant = p.variant;
    }
  }
  if (isRecord(v.annotations)) {
    d.annotations = Object.fromEntries(
      Object.entries(v.annotations).filter((e): e is [string, string] => typeof e[1] === 'string'),
    );
  }
  if (Array.isArray(v.urls)) d.urls = v.urls.filter((u): u is string => typeof u === 'string');
  return d;
}

/** Parse a manifest or index; `contentType` is the response's (the body's mediaType wins). */
export function parseManifestDoc(body: Buffer, contentType?: string): ImageManifestDoc | ImageIndexDoc {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ManifestError('manifest is not JSON');
  }
  if (!isRecord(v)) throw new ManifestError('manifest is not a JSON object');
  if (v.schemaVersion === 1) throw new ManifestError('Docker schema 1 manifests are not supported');
  if (v.schemaVersion !== 2)
    throw new ManifestError(`unsupported schemaVersion ${JSON.stringify(v.schemaVersion)}`);
  const mediaType =
    typeof v.mediaType === 'string' ? v.mediaType : (contentType?.split(';')[0]?.trim() ?? '');
  if (Array.isArray(v.manifests) || mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList) {
    if (!Array.isArray(v.manifests)) throw new ManifestError('index without manifests');
    return {
      kind: 'index',
      mediaType: mediaType || MEDIA.ociIndex,
      manifests: v.manifests.map((m, i) => descriptor(m, `manifests[${i}]`)),
    };
  }
  if (!Array.isArray(v.layers))
    throw new ManifestError(`manifest (${mediaType || 'no mediaType'}) without layers`);
  const config = descriptor(v.config, 'config');
  if (config.mediaType !== MEDIA.ociConfig && config.mediaType !== MEDIA.dockerConfig) {
    throw new ManifestError(
      `not a container image: config media type ${JSON.stringify(config.mediaType)} (an OCI artifact?)`,
    );
  }
  const layers = v.layers.map((l, i) => descriptor(l, `layers[${i}]`));
  for (const [i, l] of layers.entries()) {
    if (!LAYER_TYPES.has(l.mediaType)) {
      throw new ManifestError(`layers[${i}]: unsupported layer media type ${JSON.stringify(l.mediaType)}`);
    }
  }
  return { kind: 'manifest', mediaType: mediaType || MEDIA.ociManifest, config, layers };
}

export function parsePlatform(s: string): Platform {
  const [os, architecture, variant, ...rest] = s.split('/');
  if (!os || !architecture || rest.length > 0) {
    throw new ManifestError(
      `platform ${JSON.stringify(s)}: want os/architecture[/variant], e.g. linux/amd64`,
    );
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** arm64's default variant is v8, so linux/arm64 and linux/arm64/v8 are the same platform. */
function variantOf(p: Platform): string | undefined {
  if (p.variant) return p.variant;
  return p.architecture === 'arm64' ? 'v8' : undefined;
}

/** The index entry for `want`; throws naming the platforms there are. */
export function pickPlatform(index: ImageIndexDoc, want: Platform): Descriptor {
  const images = index.manifests.filter(
    (m) =>
      m.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest' && m.platform?.os !== 'unknown',
  );
  const matching = images.filter(
    (m) => m.platform?.os === want.os && m.platform.architecture === want.architecture,
  );
  const wantVariant = variantOf(want);
  const exact = matching.find((m) => m.platform && variantOf(m.platform) === wantVariant);
  const chosen = exact ?? (want.variant === undefined ? matching[0] : undefined);
  if (!chosen) {
    const have = images.map((m) => (m.platform ? formatPlatform(m.platform) : '(no platform)'));
    throw new ManifestError(
      `no ${formatPlatform(want)} image in the index; it has: ${have.length ? have.join(', ') : 'nothing'}`,
    );
  }
  return chosen;
}

function strings(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.every((s) => typeof s === 'string') ? v : undefined;
}

export function parseImageConfig(body: Buffer): ImageConfig {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ManifestError('image config is not JSON');
  }
  if (!isRecord(v)) throw new ManifestError('image config is not a JSON object');
  const c = isRecord(v.config) ? v.config : {};
  const rootfs = isRecord(v.rootfs) ? v.rootfs : {};
  const out: ImageConfig = { Env: strings(c.Env) ?? [], diffIds: strings(rootfs.diff_ids) ?? [] };
  if (typeof v.os === 'string') out.os = v.os;
  if (typeof v.architecture === 'string') out.architecture = v.architecture;
  if (typeof v.variant === 'string') out.variant = v.variant;
  if (typeof c.WorkingDir === 'string' && c.WorkingDir !== '') out.WorkingDir = c.WorkingDir;
  if (typeof c.User === 'string' && c.User !== '') out.User = c.User;
  const ep = strings(c.Entrypoint);
  if (ep) out.Entrypoint = ep;
  const cmd = strings(c.Cmd);
  if (cmd) out.Cmd = cmd;
  return out;
}
