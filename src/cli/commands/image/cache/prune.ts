import { Flags } from '@oclif/core';
import type { ImageCachePruneResult } from '../../../../../generated/types.gen.ts';
import { BangerCommand } from '../../../base.ts';
import { formatBytes } from '../../../format.ts';

export default class ImageCachePrune extends BangerCommand {
  static override summary = 'Remove layers of the shared OCI layer cache that no image uses.';
  static override description = `image pull and image import --oci-layout/--docker-archive keep every blob (manifest, config, layer) in one content-addressed cache shared by all images, so a second image sharing layers downloads only what is new. Each image records the blobs it was made from; this removes the others (those of deleted images, of failed or canceled pulls) and abandoned partial downloads. An image's root filesystem does not need the cache once recorded, but pulling it again or an image sharing its layers would download them again.

Refused while a pull or an OCI import runs (its blobs are not recorded yet).`;
  static override examples = [
    { description: 'See what would go', command: '<%= config.bin %> image cache prune --dry-run' },
    { description: 'Remove it', command: '<%= config.bin %> image cache prune' },
    { description: 'As JSON, for scripts', command: '<%= config.bin %> image cache prune --dry-run --json' },
  ];
  static override flags = {
    'dry-run': Flags.boolean({ summary: 'List what would be removed; remove nothing.' }),
  };

  async run(): Promise<ImageCachePruneResult> {
    const { flags } = await this.parseWith(ImageCachePrune);
    const dryRun = flags['dry-run'];
    const r = await this.client.image.cache.prune(dryRun ? { dry_run: true } : {});
    for (const b of r.removed)
      this.say(`${dryRun ? 'would remove' : 'removed'} ${b.digest} (${formatBytes(b.size_bytes)})`);
    for (const f of r.partials) this.say(`${dryRun ? 'would remove' : 'removed'} partial download ${f}`);
    const n = r.removed.length + r.partials.length;
    this.say(
      n === 0
        ? `nothing to remove; ${r.kept} blob${r.kept === 1 ? '' : 's'} in use`
        : `${dryRun ? 'would free' : 'freed'} ${formatBytes(r.bytes)} (${n} file${n === 1 ? '' : 's'}); ${r.kept} blob${r.kept === 1 ? '' : 's'} in use kept`,
    );
    return r;
  }
}
