import { Flags } from '@oclif/core';
import type { KernelCatalogResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes } from '../../format.ts';
import { renderRows } from '../../table.ts';

type Row = KernelCatalogResult['kernels'][number];

export default class KernelCatalog extends BangerCommand {
  static override summary = 'List the guest kernels the Debian archive offers.';
  static override description = `Reads the Debian archive the default image build uses (deb.debian.org bookworm, bookworm-updates and bookworm-security) through banger's own apt index in its cache directory (the host's apt state is not touched) and lists its amd64 kernels: NAME (the kernel release, what banger kernel pull takes), the package version, the flavour (cloud-amd64 is the small one made for virtual machines), the download size, and whether a kernel of that release is already in banger. ALIASES are the other names kernel pull takes for it: the flavour on the newest of each flavour (cloud-amd64), a series (6.12-cloud-amd64). --flavour shows one flavour only. --json prints {archive, kernels}.`;
  static override examples = [
    { description: 'What can be pulled', command: '<%= config.bin %> kernel catalog' },
    {
      description: 'Only the cloud kernels',
      command: '<%= config.bin %> kernel catalog --flavour cloud-amd64',
    },
    { description: 'As JSON, e.g. for a script', command: '<%= config.bin %> kernel catalog --json' },
    {
      description: 'Then pull the newest cloud kernel',
      command: '<%= config.bin %> kernel pull cloud-amd64',
    },
  ];

  static override flags = {
    flavour: Flags.string({ summary: 'Only kernels of this flavour (amd64, cloud-amd64, rt-amd64, ...).' }),
  };

  async run(): Promise<KernelCatalogResult> {
    const { flags } = await this.parseWith(KernelCatalog);
    const all = await this.client.kernel.catalog();
    const r =
      flags.flavour === undefined
        ? all
        : { ...all, kernels: all.kernels.filter((k) => k.flavour === flags.flavour) };
    if (r.kernels.length === 0) {
      this.say(
        `no ${flags.flavour === undefined ? '' : `${flags.flavour} `}kernel packages in ${r.archive.join('; ')}`,
      );
      return r;
    }
    const lines = renderRows<Row>(
      [
        { header: 'NAME', get: (k) => k.name },
        { header: 'VERSION', get: (k) => k.version },
        { header: 'FLAVOUR', get: (k) => k.flavour },
        { header: 'SIZE', get: (k) => formatBytes(k.size_bytes) },
        { header: 'ALIASES', get: (k) => (k.aliases ?? []).join(',') },
        { header: 'PULLED', get: (k) => (k.pulled ? (k.kernels ?? []).join(',') || 'yes' : '-') },
      ],
      r.kernels,
    );
    for (const l of lines) this.say(l);
    return r;
  }
}
