// Image references as docker and containerd read them: `[registry[:port]/]path[:tag][@digest]`.
// A first component with a dot, a colon or equal to `localhost` is a registry; otherwise the
// registry is docker.io, whose single-component names live under `library/`. docker.io is an alias
// of the API host registry-1.docker.io. No tag and no digest means `latest`.

export const DOCKER_HUB = 'docker.io';
/** The host that serves docker.io's registry API. */
export const DOCKER_HUB_API = 'registry-1.docker.io';

export interface ImageReference {
  /** Registry as written (docker.io for Docker Hub), with its port if any. */
  registry: string;
  /** Repository path, e.g. library/debian. */
  repository: string;
  /** Tag, when given or defaulted (latest when neither tag nor digest is given). */
  tag?: string;
  /** sha256:<64 hex>, when given. */
  digest?: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::\d{1,5})?$/;

export class ImageReferenceError extends Error {
  constructor(ref: string, why: string) {
    super(`invalid image reference ${JSON.stringify(ref)}: ${why}`);
    this.name = 'ImageReferenceError';
  }
}

export function isDigest(s: string): boolean {
  return DIGEST.test(s);
}

export function parseReference(input: string): ImageReference {
  const ref = input.trim();
  if (ref === '') throw new ImageReferenceError(input, 'empty');
  if (ref.length > 4096) throw new ImageReferenceError(input, 'too long');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new ImageReferenceError(input, `digest must be sha256:<64 hex digits>`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new ImageReferenceError(input, `bad tag ${JSON.stringify(tag)}`);
  }
  const parts = rest.split('/');
  let registry = DOCKER_HUB;
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    if (!HOST.test(first)) throw new ImageReferenceError(input, `bad registry host ${JSON.stringify(first)}`);
    registry = first.toLowerCase();
    parts.shift();
  }
  if (registry === 'index.docker.io' || registry === DOCKER_HUB_API) registry = DOCKER_HUB;
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p))) {
    throw new ImageReferenceError(
      input,
      'repository path components must be lowercase letters, digits and single separators (. _ __ -)',
    );
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (repository.length > 255)
    throw new ImageReferenceError(input, 'repository name longer than 255 characters');
  const out: ImageReference = { registry, repository };
  if (tag !== undefined) out.tag = tag;
  if (digest !== undefined) out.digest = digest;
  if (tag === undefined && digest === undefined) out.tag = 'latest';
  return out;
}

/** The canonical form: registry/repository[:tag][@digest] (docker.io/library/debian:12). */
export function formatReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

/** The host the registry API is reached at (docker.io → registry-1.docker.io). */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** What to ask the manifest endpoint for: the digest when pinned, else the tag. */
export function manifestReference(r: ImageReference): string {
  return r.digest ?? r.tag ?? 'latest';
}
