// Child processes for the image pipeline: always argv (never a shell), each in its own process
// group so an abort kills the whole tree (mmdebstrap forks apt, dpkg and maintainer scripts),
// with stderr kept so a failure says why.
import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { singleQuote } from '../util/shell.ts';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  /** Written to the child's stdin, which is then closed. */
  input?: string | Buffer;
  /** Send stdout to this file (truncated) instead of buffering it. */
  stdoutFile?: string;
  /** Called with each complete stderr line as it arrives (progress parsing). */
  onStderrLine?: (line: string) => void;
  /** Keep at most this many bytes of stdout in memory (default 16 MiB). */
  maxStdout?: number;
  /** Milliseconds between SIGTERM and SIGKILL on abort (default 3000). */
  killGraceMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** A child process that failed: the message carries the command and the tail of its stderr. */
export class CommandError extends Error {
  readonly argv: readonly string[];
  readonly exitCode: number | null;
  readonly exitSignal: NodeJS.Signals | null;
  readonly stderr: string;

  constructor(
    argv: readonly string[],
    exitCode: number | null,
    exitSignal: NodeJS.Signals | null,
    stderr: string,
  ) {
    const how = exitSignal ? `killed by ${exitSignal}` : `exited with status ${String(exitCode)}`;
    const tail = tailLines(stderr, 25);
    super(`${formatArgv(argv)} ${how}${tail ? `:\n${tail}` : ''}`);
    this.name = 'CommandError';
    this.argv = argv;
    this.exitCode = exitCode;
    this.exitSignal = exitSignal;
    this.stderr = stderr;
  }
}

export class AbortedError extends Error {
  constructor(what: string) {
    super(`${what}: aborted`);
    this.name = 'AbortError';
  }
}

export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : singleQuote(a))).join(' ');
}

function tailLines(text: string, n: number): string {
  const lines = text.trimEnd().split('\n');
  return lines.slice(-n).join('\n');
}

export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new AbortedError(what);
}

/** Run argv[0] with argv[1..]; resolve on exit status 0, reject with CommandError otherwise. */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) return Promise.reject(new Error('run: empty argv'));
  throwIfAborted(opts.signal, cmd);
  const started = performance.now();
  const maxStdout = opts.maxStdout ?? 16 * 1024 * 1024;
  const outFd = opts.stdoutFile !== undefined ? openSync(opts.stdoutFile, 'w', 0o644) : undefined;

  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? toolEnv(),
      stdio: [opts.input !== undefined ? 'pipe' : 'ignore', outFd ?? 'pipe', 'pipe'],
      detached: true,
    });
    if (outFd !== undefined) closeSync(outFd);
    const out: Buffer[] = [];
    let outLen = 0;
    const err: Buffer[] = [];
    let errPartial = '';
    let aborted = false;
    let killTimer: NodeJS.Timeout | undefined;

    const killGroup = (sig: NodeJS.Signals): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        // already gone
      }
    };
    const onAbort = (): void => {
      aborted = true;
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), opts.killGraceMs ?? 3000);
      killTimer.unref();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout?.on('data', (b: Buffer) => {
      if (outLen < maxStdout) {
        out.push(b);
        outLen += b.length;
      }
    });
    child.stderr?.on('data', (b: Buffer) => {
      err.push(b);
      if (opts.onStderrLine) {
        errPartial += b.toString('utf8');
        const lines = errPartial.split('\n');
        errPartial = lines.pop() ?? '';
        for (const l of lines) opts.onStderrLine(l);
      }
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined); // EPIPE when the child exits early: its status says why
      child.stdin.end(opts.input);
    }
    child.on('error', (e) => {
      opts.signal?.removeEventListener('abort', onAbort);
      reject(new Error(`${formatArgv(argv)}: ${e.message}`));
    });
    child.on('close', (code, sig) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      // Make sure nothing of the group lingers (a daemonised grandchild, say).
      if (code !== 0) killGroup('SIGKILL');
      const stderr = Buffer.concat(err).toString('utf8');
      if (opts.onStderrLine && errPartial) opts.onStderrLine(errPartial);
      if (aborted) {
        reject(new AbortedError(formatArgv(argv.slice(0, 2))));
        return;
      }
      if (code !== 0) {
        reject(new CommandError(argv, code, sig, stderr));
        return;
      }
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr,
        durationMs: performance.now() - started,
      });
    });
  });
}

/**
 * The environment for tools: the caller's, plus the sbin directories (a non-root user's PATH on
 * Debian lacks them, and mkfs.ext4, depmod and debugfs live there) and a C locale so output
 * parses the same everywhere.
 */
export function toolEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const path = (process.env.PATH ?? '/usr/bin:/bin').split(':');
  for (const d of ['/usr/local/sbin', '/usr/sbin', '/sbin']) if (!path.includes(d)) path.push(d);
  return { ...process.env, PATH: path.join(':'), LC_ALL: 'C.UTF-8', ...extra };
}

/** True when `name` resolves to an executable on PATH (or is an executable path). */
export async function haveCommand(name: string): Promise<boolean> {
  const dirs = name.includes('/') ? [''] : (toolEnv().PATH ?? '').split(delimiter);
  for (const d of dirs) {
    try {
      await access(d ? join(d, name) : name, constants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

/** Whether a process with this pid exists (EPERM: it does, another user's). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
