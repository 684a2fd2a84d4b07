import { PROTOCOL_VERSION } from '../../../generated/methods.gen.ts';
import { BANGER_VERSION } from '../../version.ts';
import { BangerCommand } from '../base.ts';

export default class Version extends BangerCommand {
  static override summary = 'Print the banger version.';
  static override description =
    "Prints the CLI's version, its protocol version and the Node.js it runs on; with a reachable daemon, the daemon's version too.";
  static override examples = ['<%= config.bin %> version', '<%= config.bin %> version --json'];

  async run(): Promise<{ version: string; protocol_version: number; node: string; daemon?: string }> {
    await this.parseWith(Version);
    const out: { version: string; protocol_version: number; node: string; daemon?: string } = {
      version: BANGER_VERSION,
      protocol_version: PROTOCOL_VERSION,
      node: process.version,
    };
    try {
      out.daemon = (await this.client.ping(undefined, { timeoutMs: 2000 })).version;
    } catch {
      // no daemon: the CLI's own version is still worth printing
    }
    this.say(`banger ${out.version} (protocol ${out.protocol_version}, node ${out.node})`);
    if (out.daemon) this.say(`bangerd ${out.daemon}`);
    return out;
  }
}
