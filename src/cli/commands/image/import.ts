import { Flags } from '@oclif/core';
import type {
  Image,
  ImageImportParams,
  ImagePullBeginParams,
  ImagePullBeginResult,
  ImagePullStatusResult,
} from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes } from '../../format.ts';
import { commonPullParams, runPull, splitSourceArg } from '../../image-pull.ts';
import { checkResourceName, hostFile, usageError } from '../../vm-ref.ts';

export default class ImageImport extends BangerCommand {
  static override summary =
    'Import an image you bring: a root filesystem and a kernel, an OCI image layout, or a docker save archive.';
  static override description = `Three forms:

--rootfs FILE --kernel FILE [--initrd FILE] --name NAME copies a raw ext4 root filesystem, a kernel (bzImage/vmlinuz) and, if the kernel needs one, an initramfs into banger's state and records an image and a kernel of that name. The originals are left as they are.

--oci-layout DIR[:TAG] reads an OCI image layout directory (what skopeo copy ... oci:DIR:TAG, buildah push or docker buildx --output type=oci write); TAG picks the index.json entry whose org.opencontainers.image.ref.name it is (needed when the layout holds several).

--docker-archive FILE[:TAG] reads what docker save writes (an uncompressed tar); TAG picks one of its RepoTags (needed when it holds several images).

The OCI forms run the same pipeline as image pull: the blobs go into the shared layer cache (verified), the layers are flattened into an ext4 root filesystem without root, made bootable with banger's kernel and guest bits, and recorded with the image's digest and config. The name defaults to the tag (or the directory/file name); progress is drawn on stderr and Ctrl-C cancels. Relative paths are taken from the current directory.`;
  static override examples = [
    {
      description: 'A root filesystem and a kernel of your own',
      command: '<%= config.bin %> image import --name my-image --rootfs ./rootfs.ext4 --kernel ./vmlinuz',
    },
    {
      description: 'With an initramfs, as the default image',
      command:
        '<%= config.bin %> image import --name alpine --rootfs alpine.ext4 --kernel vmlinuz-virt --initrd initramfs-virt --default',
    },
    {
      description: 'An OCI layout written by skopeo copy docker://debian:bookworm oci:./debian:bookworm',
      command: '<%= config.bin %> image import --oci-layout ./debian:bookworm',
    },
    {
      description: 'What docker save wrote, one of its tags, under a name of your choice',
      command: '<%= config.bin %> image import --docker-archive ./app.tar:app:1.2 --name app',
    },
  ];
  static override flags = {
    name: Flags.string({
      char: 'n',
      summary: 'Name of the new image (required with --rootfs; default for the OCI forms: from the tag).',
    }),
    rootfs: Flags.string({ summary: 'Raw ext4 root filesystem file.', helpValue: '<file>' }),
    kernel: Flags.string({
      char: 'k',
      summary: 'Kernel image (bzImage/vmlinuz), with --rootfs.',
      helpValue: '<file>',
    }),
    initrd: Flags.string({
      summary: 'Initramfs, if the kernel needs one (with --rootfs).',
      helpValue: '<file>',
    }),
    'oci-layout': Flags.string({
      summary: 'An OCI image layout directory, optionally :TAG.',
      helpValue: '<dir[:tag]>',
    }),
    'docker-archive': Flags.string({
      summary: 'A docker save archive, optionally :TAG (a RepoTag).',
      helpValue: '<file[:tag]>',
    }),
    platform: Flags.string({
      summary: 'os/arch[/variant] to pick from a multi-platform OCI layout (default linux/amd64).',
      helpValue: '<os/arch>',
    }),
    size: Flags.string({
      summary: 'Root filesystem size for the OCI forms (default: the content plus at least 1 GiB; sparse).',
      helpValue: '<size>',
    }),
    default: Flags.boolean({ summary: 'Make it the default image for new VMs.' }),
    detach: Flags.boolean({
      char: 'd',
      summary: 'OCI forms: return once the import has begun; do not wait or show progress.',
    }),
  };

  async run(): Promise<Image | ImagePullStatusResult | ImagePullBeginResult> {
    const { flags } = await this.parseWith(ImageImport);
    const layout = flags['oci-layout'];
    const archive = flags['docker-archive'];
    if (layout !== undefined || archive !== undefined) {
      if (layout !== undefined && archive !== undefined)
        throw usageError('give --oci-layout or --docker-archive, not both');
      for (const f of ['rootfs', 'kernel', 'initrd'] as const) {
        if (flags[f] !== undefined)
          throw usageError(
            `--${f} is for the --rootfs form (a root filesystem and a kernel), not --oci-layout or --docker-archive`,
          );
      }
      const p: ImagePullBeginParams = {};
      if (layout !== undefined) {
        const s = splitSourceArg(layout, '--oci-layout', 'dir');
        p.oci_layout = s.path;
        if (s.tag !== undefined) p.tag = s.tag;
      } else if (archive !== undefined) {
        const s = splitSourceArg(archive, '--docker-archive', 'file');
        p.docker_archive = s.path;
        if (s.tag !== undefined) p.tag = s.tag;
      }
      Object.assign(p, commonPullParams(flags));
      const io = {
        client: this.client,
        bin: this.config.bin,
        json: this.jsonEnabled(),
        say: (l: string) => this.say(l),
      };
      return runPull(io, p, flags.detach);
    }
    if (flags.rootfs === undefined || flags.kernel === undefined || flags.name === undefined) {
      throw usageError(
        'give --name, --rootfs and --kernel (a root filesystem and a kernel), or --oci-layout DIR[:TAG], or --docker-archive FILE[:TAG]',
      );
    }
    for (const f of ['platform', 'size', 'detach'] as const) {
      if (flags[f] !== undefined && flags[f] !== false)
        throw usageError(`--${f} goes with --oci-layout or --docker-archive, not --rootfs`);
    }
    checkResourceName(flags.name, 'image');
    const p: ImageImportParams = {
      name: flags.name,
      rootfs: hostFile(flags.rootfs, '--rootfs'),
      kernel: hostFile(flags.kernel, '--kernel'),
    };
    if (flags.initrd !== undefined) p.initrd = hostFile(flags.initrd, '--initrd');
    if (flags.default) p.make_default = true;
    const { image } = await this.client.image.import(p);
    this.say(
      `imported image ${image.name} (${formatBytes(image.size_bytes)}, kernel ${image.kernel_version})${image.default ? ', now the default' : ''}`,
    );
    return image;
  }
}
