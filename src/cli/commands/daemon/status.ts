import type { DaemonStatusResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatDuration, formatMiB } from '../../format.ts';

export default class DaemonStatus extends BangerCommand {
  static override summary = "Show the daemon's health: version, uptime, root helper, engine.";
  static override description = `Asks bangerd for its status. The daemon also pings the root helper (bangerd-root) with
the same op id, so a failure here can be followed through both logs.`;
  static override examples = ['<%= config.bin %> daemon status', '<%= config.bin %> daemon status --json'];

  async run(): Promise<DaemonStatusResult> {
    await this.parseWith(DaemonStatus);
    const s = await this.client.daemon.status();
    const h = s.helper;
    const helper = !h.configured
      ? 'not configured (rootless: user networking only)'
      : h.reachable
        ? `ok (${h.socket}, bangerd-root ${h.version ?? '?'})`
        : `UNREACHABLE (${h.socket}): ${h.error ?? 'unknown error'}`;
    this.say(
      `bangerd   ${s.version} (protocol ${s.protocol_version}), pid ${s.pid}, up ${formatDuration(s.uptime_ms)}`,
    );
    this.say(`socket    ${s.socket}`);
    this.say(`state     ${s.state_dir}`);
    this.say(`helper    ${helper}`);
    if (s.host) {
      const h = s.host;
      this.say(
        `host      ${h.hostname}: ${h.cpus} CPUs, ${formatMiB(h.memory_total_mib)} memory (${formatMiB(h.memory_available_mib)} available); VMs hold ${h.committed_vcpus} vCPUs, ${formatMiB(h.committed_memory_mib)}`,
      );
    }
    if (s.engine) {
      // `probing` is said as such; an absent accel (no VM started yet) still says why.
      const e = s.engine;
      const why = e.accel_reason ? ` (${e.accel_reason})` : '';
      const accel = e.accel
        ? `, accel ${e.accel}${why}`
        : e.accel_reason
          ? `, accel not chosen yet${why}`
          : '';
      this.say(
        `engine    ${s.engine.driver}${s.engine.qemu_version ? ` ${s.engine.qemu_version}` : ''}${accel}`,
      );
    }
    return s;
  }
}
