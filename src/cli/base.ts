// The base of every banger command: --socket/--json handling, the typed client, and one place
// that turns errors into a message (ending with the op id) and an exit code.
import { Command, Flags, type Interfaces } from '@oclif/core';
import { BangerClient } from '../../generated/client.gen.ts';
import { resolveDaemonSocket } from '../paths.ts';
import { SocketTransport } from '../rpc/transport.ts';
import { cliErrorReport, writeCliError } from './error-report.ts';

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
  };

  private clientInstance: BangerClient | undefined;
  protected socketPath = '';

  /** Parse this command's flags and args, and remember the socket to talk to. */
  protected async parseWith<T extends typeof Command>(
    cmd: T,
  ): Promise<Interfaces.ParserOutput<BaseFlags<T>, BaseFlags<T>, Interfaces.InferredArgs<T['args']>>> {
    const parsed = (await this.parse(
      cmd as unknown as Interfaces.Input<BaseFlags<T>, BaseFlags<T>, Interfaces.InferredArgs<T['args']>>,
    )) as Interfaces.ParserOutput<BaseFlags<T>, BaseFlags<T>, Interfaces.InferredArgs<T['args']>>;
    this.socketPath = resolveDaemonSocket((parsed.flags as { socket?: string }).socket);
    return parsed;
  }

  protected get client(): BangerClient {
    this.clientInstance ??= new BangerClient(new SocketTransport(this.socketPath));
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
