// What pull and both imports produce: one platform's image with its config and its layers, all
// verified blobs in the shared cache, ready for the flatten → ext4 pipeline (convert.ts).
import type { LayerInput } from './flatten.ts';
import type { ImageConfig, Platform } from './manifest.ts';

export interface OciLayer {
  digest: string;
  size: number;
  mediaType: string;
  /** The verified blob in the cache. */
  path: string;
}

export interface OciImage {
  /** Canonical reference (registry/repository:tag[@digest]) or a tag given to an import. */
  reference?: string;
  /**
   * The image's identity: the manifest digest (pull, OCI layout), or the config digest (a docker
   * archive has no manifest digest; it is docker's image ID).
   */
  digest: string;
  /** The index / manifest list the reference pointed at, when it was one (what a user pins). */
  indexDigest?: string;
  platform: Platform;
  config: ImageConfig;
  configDigest: string;
  layers: OciLayer[];
  /** Every cached blob this image uses (manifests, config, layers): what a cache prune keeps. */
  blobs: string[];
}

/** The layers as flatten inputs, each with its diff_id from the config when the counts agree. */
export function layerInputs(image: OciImage): LayerInput[] {
  const ids = image.config.diffIds.length === image.layers.length ? image.config.diffIds : [];
  return image.layers.map((l, i) => {
    const input: LayerInput = { digest: l.digest, path: l.path };
    const id = ids[i];
    if (id !== undefined) input.diffId = id;
    return input;
  });
}
