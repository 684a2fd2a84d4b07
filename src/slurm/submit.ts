// Runs a sandbox's Slurm job in the foreground (srun) and hands back its exit code. A signal to
// banger (Ctrl-C, SIGTERM, SIGHUP) cancels the job with scancel, which is Slurm's SIGTERM to the
// node's vm run: that one deletes its VM before KillWait runs out. srun itself never gets the
// signal: srun answers SIGTERM by killing the step at once, which would leave the VM behind.
import { spawn } from 'node:child_process';
import { signalExitCode } from '../util/shell.ts';
import { jobName, srunArgv, type SlurmJobSpec } from './job.ts';

const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export class SlurmSpawnError extends Error {
  constructor(bin: string, cause: NodeJS.ErrnoException) {
    super(
      cause.code === 'ENOENT'
        ? `${bin} not found: banger slurm run needs Slurm's client tools (Debian: slurm-client) on this host`
        : `could not run ${bin}: ${cause.message}`,
    );
    this.name = 'SlurmSpawnError';
  }
}

export interface SubmitOptions {
  /** Environment of srun and scancel (the job's, as srun exports ALL of it). */
  env?: NodeJS.ProcessEnv;
  /** stdin is a terminal that srun must not read from the background (then it reads nothing). */
  stdinIsTty?: boolean;
  /** Told once per signal, before scancel runs. */
  onSignal?: (sig: NodeJS.Signals, scancel: string[]) => void;
}

export interface SubmitOutcome {
  /** srun's exit code (the task's), or 128 + the signal banger received. */
  code: number;
  /** The signal that canceled the job, if one did. */
  signal?: NodeJS.Signals;
}

/** The scancel that ends this job the way Slurm's own time limit would (SIGTERM, KillWait, SIGKILL). */
export function scancelArgv(opId: string): string[] {
  return ['scancel', `--name=${jobName(opId)}`];
}

export function submitJob(spec: SlurmJobSpec, opts: SubmitOptions = {}): Promise<SubmitOutcome> {
  const argv = srunArgv(spec);
  const env = opts.env ?? process.env;
  return new Promise((resolve, reject) => {
    // With --pty srun owns the terminal (raw mode: Ctrl-C is a byte for the guest), so it stays
    // in the foreground. Otherwise it gets a process group of its own, so that a terminal's
    // Ctrl-C reaches only banger, which cancels the job properly.
    const child = spawn(argv[0]!, argv.slice(1), {
      env,
      stdio: [spec.pty || !opts.stdinIsTty ? 'inherit' : 'ignore', 'inherit', 'inherit'],
      detached: !spec.pty,
    });
    let received: NodeJS.Signals | undefined;
    const onSig = (sig: NodeJS.Signals): void => {
      received ??= sig;
      const cancel = scancelArgv(spec.opId);
      opts.onSignal?.(sig, cancel);
      const c = spawn(cancel[0]!, cancel.slice(1), { env, stdio: ['ignore', 'inherit', 'inherit'] });
      c.on('error', (e: NodeJS.ErrnoException) =>
        process.stderr.write(`banger: ${new SlurmSpawnError(cancel[0]!, e).message}\n`),
      );
    };
    const handlers = SIGNALS.map((sig) => [sig, () => onSig(sig)] as const);
    for (const [sig, h] of handlers) process.on(sig, h);
    const done = (): void => {
      for (const [sig, h] of handlers) process.off(sig, h);
    };
    child.on('error', (e: NodeJS.ErrnoException) => {
      done();
      reject(new SlurmSpawnError(argv[0]!, e));
    });
    child.on('exit', (code, signal) => {
      done();
      if (received) resolve({ code: signalExitCode(received), signal: received });
      else if (signal) resolve({ code: signalExitCode(signal) });
      else resolve({ code: code ?? 1 });
    });
  });
}
