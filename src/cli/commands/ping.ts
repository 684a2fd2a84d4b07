import type { PingResult } from '../../../generated/types.gen.ts';
import { BangerCommand } from '../base.ts';

export default class Ping extends BangerCommand {
  static override summary = 'Check that bangerd answers.';
  static override description = 'Sends one ping over the daemon socket and reports the round trip.';
  static override examples = [
    '<%= config.bin %> ping',
    '<%= config.bin %> ping --socket /tmp/x/d.sock --json',
  ];

  async run(): Promise<PingResult & { rtt_ms: number }> {
    await this.parseWith(Ping);
    const t0 = performance.now();
    const r = await this.client.ping();
    const rtt_ms = Math.round((performance.now() - t0) * 100) / 100;
    this.say(`pong from bangerd ${r.version} (protocol ${r.protocol_version}) in ${rtt_ms} ms`);
    return { ...r, rtt_ms };
  }
}
