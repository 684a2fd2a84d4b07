import { Args, Flags } from '@oclif/core';
import type {
  ImagePullBeginParams,
  ImagePullBeginResult,
  ImagePullStatusResult,
} from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { commonPullParams, runPull } from '../../image-pull.ts';

export default class ImagePull extends BangerCommand {
  static override summary = 'Pull an OCI (docker) image from a registry and make it a banger image.';
  static override description = `Downloads the image's layers into banger's shared layer cache (verified while they stream; layers another image already brought are not downloaded again, and an interrupted pull resumes), flattens them into an ext4 root filesystem without root privileges, makes it bootable with banger's kernel and guest bits (installing init, sshd and the guest agent with the image's own package manager when it lacks them; Debian and Ubuntu images) and records the image. Its config's Env, WorkingDir and User become the defaults of vm run, vm exec and vm ssh.

REF is read as docker reads it: debian:bookworm is docker.io/library/debian:bookworm, a first component with a dot, a colon or localhost is a registry, @sha256:… pins a digest. Credentials come from your docker config (~/.docker/config.json), so an existing docker login works. Registries on loopback may speak plain HTTP; others only with --insecure.

The image is named after the repository's last path component and the tag (127.0.0.1:5000/team/minbase:bookworm becomes minbase-bookworm) unless --name. Progress (bytes per layer and overall) is drawn on stderr; Ctrl-C cancels, removes the partial image and exits 130.`;
  static override examples = [
    {
      description: 'Pull Debian from Docker Hub (named debian-bookworm-oci)',
      command: '<%= config.bin %> image pull debian:bookworm',
    },
    {
      description: 'Pull from a registry on this machine, under a name of your choice',
      command: '<%= config.bin %> image pull 127.0.0.1:5000/minbase:bookworm --name minbase',
    },
    {
      description: 'Pin a digest and the arm64 variant of a multi-platform image',
      command: '<%= config.bin %> image pull ghcr.io/org/app@sha256:4f1c… --platform linux/arm64',
    },
    {
      description: 'Then run something in it',
      command: '<%= config.bin %> vm run --image debian-bookworm-oci --rm -- cat /etc/os-release',
    },
  ];
  static override args = {
    ref: Args.string({
      required: true,
      description: 'Image reference, e.g. debian:bookworm or host:5000/app:1.2.',
    }),
  };
  static override flags = {
    name: Flags.string({
      char: 'n',
      summary: 'Name of the image (default: repository and tag, e.g. minbase-bookworm).',
    }),
    platform: Flags.string({
      summary: 'os/arch[/variant] to pick from a multi-platform image (default linux/amd64).',
      helpValue: '<os/arch>',
    }),
    insecure: Flags.boolean({
      summary: 'Allow plain HTTP and any TLS certificate for a registry not on loopback.',
    }),
    size: Flags.string({
      summary: 'Root filesystem size, e.g. 8G (default: the content plus at least 1 GiB; sparse).',
      helpValue: '<size>',
    }),
    default: Flags.boolean({ summary: 'Make it the default image for new VMs.' }),
    detach: Flags.boolean({
      char: 'd',
      summary: 'Return once the pull has begun; do not wait or show progress.',
    }),
  };

  async run(): Promise<ImagePullStatusResult | ImagePullBeginResult> {
    const { args, flags } = await this.parseWith(ImagePull);
    const p: ImagePullBeginParams = { reference: args.ref };
    Object.assign(p, commonPullParams(flags));
    if (flags.insecure) p.insecure = true;
    return runPull(
      { client: this.client, bin: this.config.bin, json: this.jsonEnabled(), say: (l) => this.say(l) },
      p,
      flags.detach,
    );
  }
}
