// The base of every banger command: --socket/--json handling, the typed client, and one place
// that turns errors into a message (ending with the op id) and an exit code.
import { Command, Flags, type Interfaces } from '@oclif/core';
import { BangerClient } from '../../generated/client.gen.ts';
import { RemoteError } from '../rpc/ssh-transport.ts';
import { SocketTransport } from '../rpc/transport.ts';
import { remoteClient } from './context-client.ts';
import { acrossContexts, capacityOf, pickContext, type Capacity } from './context-fanout.ts';
import {
  ContextError,
  DEFAULT_CONTEXT,
  getContext,
  readContexts,
  resolveTarget,
  type RemoteContext,
  type Target,
} from './contexts.ts';
import { formatMiB } from './format.ts';
import { cliErrorReport, writeCliError } from './error-report.ts';
import { usageError } from './vm-ref.ts';
import { resolveDaemonSocket } from '../paths.ts';

/** The local daemon's socket when --context auto considers it (BANGER_SOCKET, else the default). */
function resolveDaemonSocketForAuto(): string {
  return resolveDaemonSocket(undefined);
}

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof BangerCommand)['baseFlags'] & T['flags']
>;

export abstract class BangerCommand extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    socket: Flags.string({
      summary: 'Path of the bangerd socket.',
      description: 'Defaults to $BANGER_SOCKET, then the install default.',
      helpGroup: 'GLOBAL',
    }),
    context: Flags.string({
      summary: 'The context (daemon) to talk to: a name from banger context list, or default.',
      description:
        'Defaults to $BANGER_CONTEXT, then the current context (banger context use), then the local daemon. vm create and vm run also take auto: the context with the most free memory, then vCPUs.',
      helpGroup: 'GLOBAL',
    }),
  };

  /** Commands that accept `--context auto` (they pick the context themselves). */
  static allowAutoContext = false;

  private clientInstance: BangerClient | undefined;
  protected socketPath = '';
  /** Where this command's daemon is (resolved by parseWith). */
  protected target: Target = { kind: 'local', context: 'default', socket: '', source: 'default' };

  /** Parse this command's flags and args, and remember the socket to talk to. */
  protected async parseWith<T extends typeof Command>(
    cmd: T,
  ): Promise<Interfaces.ParserOutput<BaseFlags<T>, BaseFlags<T>, Interfaces.InferredArgs<T['args']>>> {
    const parsed = (await this.parse(
      cmd as unknown as Interfaces.Input<BaseFlags<T>, BaseFlags<T>, Interfaces.InferredArgs<T['args']>>,
    )) as Interfaces.ParserOutput<BaseFlags<T>, BaseFlags<T>, Interfaces.InferredArgs<T['args']>>;
    const f = parsed.flags as { socket?: string; context?: string };
    try {
      this.target = resolveTarget({ context: f.context, socket: f.socket });
    } catch (e) {
      if (e instanceof ContextError) throw usageError(e.message);
      throw e;
    }
    if (this.target.kind === 'auto' && !(this.constructor as typeof BangerCommand).allowAutoContext)
      throw usageError(`--context auto picks a context for a new VM: only vm create and vm run take it`);
    this.socketPath = this.target.kind === 'local' ? this.target.socket : '';
    return parsed;
  }

  /** Talk to a remote context from now on (`--context auto` once it has picked one). */
  protected useRemote(ctx: RemoteContext, source: string): void {
    this.target = { kind: 'remote', context: ctx, source };
    this.clientInstance = undefined;
  }

  /**
   * `--context auto`: ask every context's daemon.status, take the one with the most free memory
   * (then vCPUs), and say which and why on stderr. Other targets are left as they are.
   */
  protected async resolveAutoContext(): Promise<void> {
    if (this.target.kind !== 'auto') return;
    const results = await acrossContexts(resolveDaemonSocketForAuto(), (c) => c.daemon.status());
    const caps: Capacity[] = [];
    const notes: string[] = [];
    for (const r of results) {
      if ('error' in r) {
        notes.push(`${r.context}: ${r.error}`);
        continue;
      }
      const cap = capacityOf(r.context, r.value);
      if (cap) caps.push(cap);
      else notes.push(`${r.context}: its bangerd does not report capacity (older version)`);
    }
    const best = pickContext(caps);
    if (!best)
      throw new RemoteError(
        'auto',
        `--context auto: no context could be asked for its capacity (${notes.join('; ')})`,
      );
    const say = (c: Capacity): string =>
      `${formatMiB(Math.max(0, c.freeMemoryMib))} memory and ${c.freeVcpus} vCPUs free`;
    const others = [...caps.filter((c) => c !== best).map((c) => `${c.context}: ${say(c)}`), ...notes];
    process.stderr.write(
      `context auto: picked ${best.context} (${best.hostname}): most free: ${say(best)}${others.length ? `; ${others.join('; ')}` : ''}\n`,
    );
    if (best.context === DEFAULT_CONTEXT) {
      this.target = {
        kind: 'local',
        context: DEFAULT_CONTEXT,
        socket: resolveDaemonSocketForAuto(),
        source: 'auto',
      };
      this.socketPath = this.target.socket;
      this.clientInstance = undefined;
    } else this.useRemote(getContext(best.context, readContexts()), 'auto');
  }

  protected get client(): BangerClient {
    if (!this.clientInstance) {
      const t = this.target;
      if (t.kind === 'auto') throw new Error('--context auto: no context picked yet');
      this.clientInstance =
        t.kind === 'remote'
          ? remoteClient(t.context)
          : new BangerClient(new SocketTransport(this.socketPath));
    }
    return this.clientInstance;
  }

  /** Print a human line unless --json is on (then the return value is the output). */
  protected say(line: string): void {
    if (!this.jsonEnabled()) this.log(line);
  }

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    const report = cliErrorReport(err);
    if (!report) return super.catch(err);
    writeCliError(report, {
      json: this.jsonEnabled(),
      bin: this.config.bin,
      logJson: (j) => this.logJson(j),
    });
    return undefined;
  }
}
