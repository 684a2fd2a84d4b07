// Process plumbing shared by the drivers: spawn a VMM detached (its own session, stdio to files,
// unref'd) so it outlives the daemon, and watch a pid for exit whether or not it is our child.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { ExitInfo } from './driver.ts';
import { EngineError } from './errors.ts';
import { hostProcFs, isSameLiveProcess, type ProcFs } from './proc.ts';

export interface SpawnedVmm {
  child: ChildProcess;
  pid: number;
  /** Resolves when the child exits (only observable while this process lives). */
  exited: Promise<ExitInfo>;
  /** Byte offset of the stderr log before this spawn: read from here for this run's output. */
  stderrOffset: number;
}

/**
 * Spawn `binary argv` by argv (no shell) in its own session. stdout goes to `stdoutPath`
 * (default: the stderr log), stderr to `stderrPath`, both appended.
 */
export function spawnDetached(
  binary: string,
  argv: string[],
  opts: { cwd: string; stderrPath: string; stdoutPath?: string },
): Promise<SpawnedVmm> {
  let stderrOffset = 0;
  try {
    stderrOffset = statSync(opts.stderrPath).size;
  } catch {
    stderrOffset = 0;
  }
  const errFd = openSync(opts.stderrPath, 'a', 0o600);
  const outFd = opts.stdoutPath !== undefined ? openSync(opts.stdoutPath, 'a', 0o600) : errFd;
  let child: ChildProcess;
  try {
    child = spawn(binary, argv, { cwd: opts.cwd, detached: true, stdio: ['ignore', outFd, errFd] });
  } finally {
    closeSync(errFd);
    if (outFd !== errFd) closeSync(outFd);
  }
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return new Promise((resolve, reject) => {
    child.once('error', (err) => {
      reject(
        new EngineError('start_failed', `cannot run ${binary}: ${err.message}`, {
          cause: err,
          details: { binary },
        }),
      );
    });
    child.once('spawn', () => {
      child.unref();
      resolve({ child, pid: child.pid as number, exited, stderrOffset });
    });
  });
}

/** Up to `maxBytes` of the tail of `path` from `offset`, as text. */
export async function readLogFrom(path: string, offset: number, maxBytes = 8192): Promise<string> {
  try {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const start = Math.max(offset, size - maxBytes);
      const len = Math.max(0, size - start);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, start);
      return buf.toString('utf8');
    } finally {
      await fh.close();
    }
  } catch {
    return '';
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Watches one process identified by pid + start time. `exited` is memoized: the child's exit
 * event when we spawned it (gives code and signal), /proc polling otherwise.
 */
export class ProcessWatch {
  readonly pid: number;
  readonly startTime: number;
  private readonly procfs: ProcFs;
  /** The child's exit (code and signal), when we spawned the process; undefined after reattach. */
  readonly childExit: Promise<ExitInfo> | undefined;
  private exitPromise: Promise<ExitInfo> | undefined;
  private generation = 0;

  constructor(pid: number, startTime: number, opts: { procfs?: ProcFs; childExit?: Promise<ExitInfo> } = {}) {
    this.pid = pid;
    this.startTime = startTime;
    this.procfs = opts.procfs ?? hostProcFs;
    this.childExit = opts.childExit;
  }

  isAlive(): boolean {
    return isSameLiveProcess(this.procfs, this.pid, this.startTime);
  }

  waitExit(pollMs = 100): Promise<ExitInfo> {
    this.exitPromise ??= new Promise<ExitInfo>((resolve) => {
      const gen = this.generation;
      let settled = false;
      const done = (info: ExitInfo): void => {
        if (settled) return;
        settled = true;
        resolve(info);
      };
      this.childExit?.then(done, () => {});
      const poll = (): void => {
        if (settled || gen !== this.generation) return;
        if (!this.isAlive()) {
          // Let a pending child 'exit' event win so the code and signal are reported: it comes
          // with the reap (SIGCHLD), which a loaded host may deliver well after /proc shows a
          // zombie; the fallback only matters if that event never comes.
          if (this.childExit) setTimeout(() => done({ code: null, signal: null }), 1_000);
          else done({ code: null, signal: null });
          return;
        }
        setTimeout(poll, pollMs);
      };
      poll();
    });
    return this.exitPromise;
  }

  /** Resolves true if the process exited within `timeoutMs`. */
  async waitExitFor(timeoutMs: number): Promise<boolean> {
    if (!this.isAlive()) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((r) => {
      timer = setTimeout(() => r(false), timeoutMs);
    });
    try {
      return await Promise.race([this.waitExit().then(() => true as const), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Send `signal` if the pid is still our process. Returns false if it was already gone;
   * throws on EPERM so the caller can fall back to its control socket.
   */
  signal(signal: NodeJS.Signals): boolean {
    if (!this.isAlive()) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ESRCH') return false;
      throw err;
    }
  }

  /**
   * Stop the poll loop (release): nothing keeps the event loop alive for this process any more.
   * A pending waitExit() then only settles through the child's exit event; a later call polls anew.
   */
  stop(): void {
    this.generation++;
    this.exitPromise = undefined;
  }
}
