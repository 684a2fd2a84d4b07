import { Args } from '@oclif/core';
import type { VmPortsResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { renderTable } from '../../table.ts';
import { checkVmName } from '../../vm-ref.ts';

export default class VmPorts extends BangerCommand {
  static override summary = 'List the TCP ports a VM listens on, with the address to reach each.';
  static override description = `Runs ss -Htlnp in the guest over SSH. For a bridged VM each port that is not bound to loopback gets an endpoint <name>.vm:<port> (or the guest address) that the host and other VMs can connect to. A user-mode VM is reachable only through banger vm ssh, so no endpoints are shown.`;
  static override examples = [
    '<%= config.bin %> vm ports calm-otter',
    '<%= config.bin %> vm ports calm-otter --json',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };

  async run(): Promise<VmPortsResult> {
    const { args } = await this.parseWith(VmPorts);
    checkVmName(args.name);
    const r = await this.client.vm.ports({ name: args.name });
    if (r.ports.length === 0) {
      this.say(`${r.name} listens on no TCP port`);
      return r;
    }
    const rows = r.ports.map((p) => [
      String(p.port),
      p.address,
      p.process ?? '',
      p.loopback_only
        ? '(guest only)'
        : (p.endpoint ?? (r.guest_ip ? `${r.guest_ip}:${p.port}` : '(via vm ssh)')),
    ]);
    for (const line of renderTable(['PORT', 'ADDRESS', 'PROCESS', 'ENDPOINT'], rows, ['right']))
      this.say(line);
    return r;
  }
}
