// `banger vm ssh`: turn the daemon's connection details into an ssh argv, and run the system ssh
// with the terminal handed over (no shell in between).
import { spawn } from 'node:child_process';
import type { VmSshResult } from '../../generated/types.gen.ts';
import { shellQuote, signalExitCode } from '../util/shell.ts';

export interface SshArgvOptions {
  /** The remote command's argv (after `--`); empty for an interactive login. */
  command: readonly string[];
  /** Allocate a terminal (`-t`): interactive login on a TTY. */
  tty: boolean;
}

/** The ssh argv (without `ssh` itself) for a VM's connection details. */
export function buildSshArgv(c: VmSshResult, opts: SshArgvOptions): string[] {
  const argv = [
    '-i',
    c.identity_file,
    '-p',
    String(c.port),
    '-o',
    `UserKnownHostsFile=${c.known_hosts_file}`,
    '-o',
    'IdentitiesOnly=yes',
  ];
  // A command must never stop to ask for a password or a host key confirmation.
  if (opts.command.length > 0) argv.push('-o', 'BatchMode=yes');
  argv.push('-o', 'LogLevel=ERROR');
  for (const o of c.ssh_options) argv.push('-o', o);
  if (opts.tty) argv.push('-t');
  // `--` ends ssh's option parsing: OpenSSH also reads options after the destination, so a
  // remote command starting with `-` would otherwise be taken for one.
  argv.push('--', `${c.user}@${c.host}`);
  if (opts.command.length > 0) argv.push(shellQuote(opts.command));
  return argv;
}

export interface SshOutcome {
  /** The exit code banger should exit with: ssh's own, or 128+N when it died of signal N. */
  code: number;
  signal?: NodeJS.Signals;
}

/** Thrown when the ssh binary cannot be run at all. */
export class SshSpawnError extends Error {
  readonly errno: string | undefined;
  constructor(bin: string, cause: NodeJS.ErrnoException) {
    super(
      cause.code === 'ENOENT'
        ? `${bin} not found on PATH; install an OpenSSH client (e.g. apt install openssh-client)`
        : `cannot run ${bin}: ${cause.message}`,
      { cause },
    );
    this.name = 'SshSpawnError';
    this.errno = cause.code;
  }
}

/**
 * Run ssh with the terminal inherited and wait for it. While it runs, Ctrl-C and Ctrl-\ belong to
 * ssh (the terminal sends them to the whole foreground group), so banger ignores SIGINT and SIGQUIT
 * here and just reports how ssh ended.
 */
export function runSsh(argv: readonly string[], bin = 'ssh'): Promise<SshOutcome> {
  return new Promise((resolve, reject) => {
    const ignore = (): void => undefined;
    process.on('SIGINT', ignore);
    process.on('SIGQUIT', ignore);
    const done = (): void => {
      process.off('SIGINT', ignore);
      process.off('SIGQUIT', ignore);
    };
    const child = spawn(bin, [...argv], { stdio: 'inherit' });
    child.on('error', (err: NodeJS.ErrnoException) => {
      done();
      reject(new SshSpawnError(bin, err));
    });
    child.on('exit', (code, signal) => {
      done();
      if (signal) resolve({ code: signalExitCode(signal), signal });
      else resolve({ code: code ?? 1 });
    });
  });
}
