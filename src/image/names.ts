// Image names shared by the daemon (what `image pull` and `image import` name an image by
// default) and the CLI (what `vm run --dry-run` says a devcontainer's pull will be named), so the
// two cannot drift apart.
import { basename } from 'node:path';
import { parseReference } from './oci/reference.ts';

/** The embedded default image: built on first use, so a new user needs no image step. */
export const DEFAULT_IMAGE_NAME = 'debian-bookworm';

/** Where an OCI image comes from: a registry reference, an OCI layout directory or a docker archive. */
export type ImageSource =
  | { kind: 'registry'; reference: string }
  | { kind: 'oci_layout'; path: string; tag?: string }
  | { kind: 'docker_archive'; path: string; tag?: string };

/** A name made to fit ResourceName: invalid characters become dashes, at most 64 characters. */
export function sanitizeImageName(s: string): string {
  const n = s
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 64)
    .replace(/[-.]+$/, '');
  return n === '' ? 'image' : n;
}

/** `repo[:tag]` (a docker RepoTag or a reference) → `lastcomponent-tag`. */
function nameFromRepoTag(repo: string, tag: string | undefined): string {
  const last = repo.split('/').at(-1) ?? repo;
  return sanitizeImageName(tag === undefined ? last : `${last}-${tag}`);
}

/**
 * The default name of an image from `source`: the repository's last path component and the tag
 * (`127.0.0.1:5000/test/minbase:bookworm` → `minbase-bookworm`; a digest-only reference uses the
 * digest's first 12 hex digits), or for a local source its tag and file or directory name. The
 * built default image's name (debian-bookworm, whose kernel OCI images boot) gets `-oci`.
 * Throws ImageReferenceError when a registry reference does not parse.
 */
export function defaultImageName(source: ImageSource): string {
  const n = nameOf(source);
  return n === DEFAULT_IMAGE_NAME ? `${n}-oci` : n;
}

function nameOf(source: ImageSource): string {
  if (source.kind === 'registry') {
    const r = parseReference(source.reference);
    const tag = r.tag ?? (r.digest ? r.digest.slice('sha256:'.length, 'sha256:'.length + 12) : 'latest');
    return nameFromRepoTag(r.repository, tag);
  }
  if (source.tag !== undefined) {
    const colon = source.tag.lastIndexOf(':');
    if (colon > source.tag.lastIndexOf('/'))
      return nameFromRepoTag(source.tag.slice(0, colon), source.tag.slice(colon + 1));
    const base = basename(source.path).replace(/\.tar$/, '');
    return sanitizeImageName(source.kind === 'oci_layout' ? `${base}-${source.tag}` : source.tag);
  }
  return sanitizeImageName(basename(source.path).replace(/\.tar$/, ''));
}
