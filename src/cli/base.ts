// The base of every banger command: --socket/--json handling, the typed client, and one place
// that turns errors into a message (ending with the op id) and an exit code.
import { Command, Flags, type Interfaces } from '@oclif/core';
import { BangerClient } from '../../generated/client.gen.ts';
import { resolveDaemonSocket } from '../paths.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import { ConnectError, SocketTransport } from '../rpc/transport.ts';
import { EXIT_UNREACHABLE, exitCodeFor } from './exit-codes.ts';

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
    let exit: number;
    let payload: { code: string; message: string; op_id?: string };
    if (err instanceof ErrorResponse) {
      exit = exitCodeFor(err.code);
      payload = { code: err.code, message: err.bareMessage, ...(err.opId ? { op_id: err.opId } : {}) };
    } else if (err instanceof ConnectError) {
      exit = EXIT_UNREACHABLE;
      payload = {
        code: 'unreachable',
        message: `${err.message}; is bangerd running? (start it with bin/bangerd, or see banger system install)`,
      };
    } else if (isUsageError(err)) {
      // Flag and argument errors from oclif: same one-line shape as every other error.
      exit = 2;
      const lines = err.message
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !/^See more help/.test(l))
        .map((l) => l.replace(/:$/, ''));
      payload = { code: 'bad_request', message: `${lines.join(': ')} (see --help)` };
    } else {
      return super.catch(err);
    }
    process.exitCode = exit;
    if (this.jsonEnabled()) {
      this.logJson({ ok: false, exit_code: exit, error: payload });
    } else {
      const suffix = payload.op_id ? ` (${payload.op_id})` : '';
      process.stderr.write(`error: ${payload.message}${suffix}\n`);
      // On a terminal, say how to see everything that happened under that id.
      if (payload.op_id && process.stderr.isTTY)
        process.stderr.write(`run: ${this.config.bin} op trace ${payload.op_id}\n`);
    }
    return undefined;
  }
}

function isUsageError(err: Error & { oclif?: { exit?: number } }): boolean {
  return (
    err.oclif?.exit === 2 ||
    /^(Parsing --|Unexpected argument|Missing required|Nonexistent flag|Expected )/.test(err.message)
  );
}
