// Routing the `.vm` domain to banger's DNS server through systemd-resolved, when it runs:
// `resolvectl dns <bridge> 127.0.0.1:<port>` plus the routing-only domain `~vm` on the bridge
// link. Without resolved nothing is changed and the caller is told why (docs/networking.md shows
// how to point other resolvers at the server).
import { existsSync } from 'node:fs';
import { DEFAULT_TOOLS, execRunner, HostnetError, type Runner } from './exec.ts';
import { DNS_DOMAIN, isBangerBridge } from './names.ts';

export interface ResolverPresence {
  present: boolean;
  detail: string;
}

export interface Resolver {
  present(): Promise<ResolverPresence>;
  /** Route `~vm` on link to dns ("127.0.0.1:PORT"). */
  sync(link: string, dns: string): Promise<void>;
  /** Undo sync on link. */
  clear(link: string): Promise<void>;
}

/** The directory resolved creates when it runs. */
const RESOLVED_RUNTIME = '/run/systemd/resolve';

export class ResolvedResolver implements Resolver {
  private readonly run: Runner;
  private readonly resolvectl: string;
  private readonly runtimeDir: string;

  constructor(opts: { runner?: Runner; resolvectlPath?: string; runtimeDir?: string } = {}) {
    this.run = opts.runner ?? execRunner;
    this.resolvectl = opts.resolvectlPath ?? DEFAULT_TOOLS.resolvectl;
    this.runtimeDir = opts.runtimeDir ?? RESOLVED_RUNTIME;
  }

  async present(): Promise<ResolverPresence> {
    if (!existsSync(this.resolvectl))
      return { present: false, detail: `systemd-resolved is not installed (no ${this.resolvectl})` };
    if (!existsSync(this.runtimeDir))
      return { present: false, detail: `systemd-resolved is not running (no ${this.runtimeDir})` };
    return { present: true, detail: 'systemd-resolved is running' };
  }

  private async rc(op: string, args: string[]): Promise<void> {
    try {
      await this.run(this.resolvectl, args);
    } catch (err) {
      throw new HostnetError(op, err instanceof Error ? err.message : String(err), { cause: err });
    }
  }

  async sync(link: string, dns: string): Promise<void> {
    const op = 'sync_resolver_routing';
    if (!isBangerBridge(link)) throw new HostnetError(op, `refusing link ${link}`);
    if (!/^127\.0\.0\.1:[0-9]{1,5}$/.test(dns)) throw new HostnetError(op, `refusing DNS server ${dns}`);
    await this.rc(op, ['dns', link, dns]);
    await this.rc(op, ['domain', link, `~${DNS_DOMAIN}`]);
    await this.rc(op, ['default-route', link, 'false']);
  }

  async clear(link: string): Promise<void> {
    const op = 'clear_resolver_routing';
    if (!isBangerBridge(link)) throw new HostnetError(op, `refusing link ${link}`);
    await this.rc(op, ['revert', link]);
  }
}
