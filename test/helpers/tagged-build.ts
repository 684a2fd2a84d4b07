// The fake image builder of the image-replace crash tests (the test and its SIGKILL child): every
// file it writes, and the kernel version, carry the build's tag, so a test can tell whose files a
// row names after a crash.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuildImageOptions, BuildResult } from '../../src/image/builder.ts';
import { MANIFEST_FORMAT, type ImageManifest } from '../../src/image/manifest.ts';

/** A builder stand-in whose files (and kernel version) carry the build's tag. */
export function taggedBuild(tag: string): (o: BuildImageOptions) => Promise<BuildResult> {
  return async (o) => {
    await mkdir(o.outDir, { recursive: true });
    await writeFile(join(o.outDir, 'vmlinuz'), `kernel ${tag}`);
    await writeFile(join(o.outDir, 'initrd.cpio.gz'), `initrd ${tag}`);
    await writeFile(join(o.outDir, 'rootfs.ext4'), `rootfs ${tag}`);
    const manifest: ImageManifest = {
      format: MANIFEST_FORMAT,
      recipe_hash: `hash-${tag}`,
      recipe_name: 'debian-bookworm',
      builder_version: '1',
      kernel_version: `6.1.0-${tag}`,
      kernel_package: { name: 'linux-image', version: '6.1' },
      files: { kernel: 'vmlinuz', initrd: 'initrd.cpio.gz', rootfs: 'rootfs.ext4' },
      sizes: { kernel: 1, initrd: 1, rootfs: 1, rootfs_allocated: 0 },
      root_label: 'banger-root',
      seed_label: 'banger-seed',
      initramfs_modules: [],
      created_at: new Date().toISOString(),
      build_mode: 'unshare',
      build_duration_ms: 1,
      stage_durations_ms: {},
    };
    await writeFile(join(o.outDir, 'manifest.json'), JSON.stringify(manifest));
    return { dir: o.outDir, manifest, cached: false, durationMs: 1 };
  };
}
