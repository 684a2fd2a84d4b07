// Running something in a VM from the CLI (`vm run`, `vm exec`): the remote command line (in the
// workspace directory when there is one), the ssh argv, and an ssh run that a signal can end.
import { spawn } from 'node:child_process';
import type { VmSshResult } from '../../generated/types.gen.ts';
import { guestCommandLine, type EnvEntry } from './guest-command.ts';
import { signalExitCode } from '../util/shell.ts';
import { buildSshArgv, SshSpawnError, type SshOutcome } from './ssh-exec.ts';

/**
 * The remote shell line: the command's words quoted so each arrives intact, run from `cwd` when
 * given; with no command, a login shell in `cwd` (undefined: ssh's plain login).
 */
export function remoteLine(command: readonly string[], cwd: string | undefined): string | undefined {
  return guestCommandLine({ command, cwd });
}

/**
 * The ssh argv (without `ssh`) that runs `command` in `cwd`, or opens a shell there; with `env`
 * and `user` (an image's config, a devcontainer.json) it sets them first.
 */
export function guestSshArgv(
  details: VmSshResult,
  opts: {
    command: readonly string[];
    cwd?: string | undefined;
    env?: readonly EnvEntry[];
    user?: string | undefined;
    tty: boolean;
  },
): string[] {
  const line = guestCommandLine(opts);
  if (line === undefined) return buildSshArgv(details, { command: [], tty: opts.tty });
  return lineSshArgv(details, line, opts.tty);
}

/** The ssh argv (without `ssh`) that runs `line`, a remote shell line already quoted. */
export function lineSshArgv(details: VmSshResult, line: string, tty: boolean): string[] {
  // buildSshArgv quotes words; the line is quoted already, so put it in place of a placeholder.
  const argv = buildSshArgv(details, { command: ['true'], tty });
  argv[argv.length - 1] = line;
  return argv;
}

export interface GuestOutcome extends SshOutcome {
  /** A signal banger itself received while ssh ran (SIGINT, SIGTERM, SIGHUP). */
  interruptedBy?: NodeJS.Signals;
}

const FORWARDED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Run ssh with the terminal inherited. While it runs, banger does not die of SIGINT/SIGTERM/SIGHUP:
 * with `endOnSignal` it ends ssh and reports the signal (so `vm run --rm` can delete the VM first);
 * without, SIGTERM and SIGHUP are passed on to ssh and Ctrl-C is left to ssh (the terminal sends
 * it to both).
 */
export function runGuestSsh(
  argv: readonly string[],
  opts: { endOnSignal: boolean; bin?: string },
): Promise<GuestOutcome> {
  const bin = opts.bin ?? 'ssh';
  return new Promise((resolve, reject) => {
    let interruptedBy: NodeJS.Signals | undefined;
    const child = spawn(bin, [...argv], { stdio: 'inherit' });
    const handlers = new Map<NodeJS.Signals, () => void>();
    for (const sig of FORWARDED) {
      const h = (): void => {
        interruptedBy ??= sig;
        if (opts.endOnSignal) child.kill('SIGTERM');
        else if (sig !== 'SIGINT') child.kill(sig);
      };
      handlers.set(sig, h);
      process.on(sig, h);
    }
    const done = (): void => {
      for (const [sig, h] of handlers) process.off(sig, h);
    };
    child.on('error', (err: NodeJS.ErrnoException) => {
      done();
      reject(new SshSpawnError(bin, err));
    });
    child.on('exit', (code, signal) => {
      done();
      const out: GuestOutcome = signal ? { code: signalExitCode(signal), signal } : { code: code ?? 1 };
      if (interruptedBy) out.interruptedBy = interruptedBy;
      resolve(out);
    });
  });
}
