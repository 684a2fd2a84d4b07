// Smoke harness: real bangerd (and real QEMU guests) inside a network namespace the harness
// creates, driven through the real CLI. Shared by every scenario file; global-setup.ts starts the
// daemon once per run and tears everything down after.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = (name: string): string => join(ROOT, 'bin', name);
/** Where the harness keeps its per-run state (written by global-setup). */
export const SMOKE_ENV_FILE = '/tmp/banger-smoke-env.json';

export interface SmokeEnv {
  netns: string;
  socket: string;
  stateDir: string;
  logFile: string;
  configFile: string;
  daemonPid: number;
  /** bangerd-root, run as root inside the namespace (bridge, taps, NAT live there too). */
  helperSocket: string;
  helperLogFile: string;
  helperPid: number;
  /**
   * The unprivileged user bangerd (and so every VMM) runs as, as on a real install (global-setup
   * creates it; BANGER_SMOKE_DAEMON_USER names it, default banger-smoke). Absent only when
   * BANGER_SMOKE_DAEMON_USER=root.
   */
  daemonUser?: { name: string; uid: number; gid: number; tunNode: string };
}

export function smokeEnv(): SmokeEnv {
  return JSON.parse(readFileSync(SMOKE_ENV_FILE, 'utf8')) as SmokeEnv;
}

export interface CmdResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Set when the command ran out of its time and was killed (code is then null). */
  timedOut?: true;
  /** With timedOut: the command lines of the processes killed then (which one hung: its ssh?). */
  killed?: string[];
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '?';
  }
}

/** The pids below `pid` (its children, theirs, ...), read from /proc. */
export function descendants(pid: number): number[] {
  const parentOf = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${e}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    parentOf.set(ppid, [...(parentOf.get(ppid) ?? []), Number(e)]);
  }
  const out = [...(parentOf.get(pid) ?? [])];
  for (let i = 0; i < out.length; i++) out.push(...(parentOf.get(out[i]!) ?? []));
  return out;
}

/**
 * Run a command; after timeoutMs kill it and everything it started, and answer even if some
 * process still holds its output open. (Killing the command alone was not enough: `banger vm
 * exec` runs ssh with its stdio, and a hung ssh kept the pipes open, so the call never returned
 * and the test died of vitest's timeout with nothing said.)
 */
export function runCommand(
  file: string,
  argv: string[],
  opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<CmdResult> {
  return new Promise((resolve) => {
    const p = spawn(file, argv, { env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let killed: string[] = [];
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const finish = (code: number | null): void => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ...(timedOut ? { timedOut: true as const, killed } : {}) });
    };
    let exited = false;
    p.once('exit', () => (exited = true));
    const timer = setTimeout(() => {
      timedOut = true;
      // The whole tree, read before any kill: a child whose parent died is reparented, not found.
      // Once the command itself has exited its pid may belong to another process already (a VMM,
      // a restarted daemon): kill nothing then, only stop waiting for the pipes.
      const tree = exited ? [] : [p.pid!, ...descendants(p.pid!)];
      killed = tree.map((pid) => `${pid}: ${cmdline(pid)}`);
      for (const pid of tree) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      // A process outside the tree (one whose parent exited before) may still hold the pipes:
      // answer with what was read so far.
      setTimeout(() => {
        p.stdout.destroy();
        p.stderr.destroy();
        finish(p.exitCode);
      }, 2000).unref();
    }, opts.timeoutMs ?? 600_000);
    p.on('close', (code) => finish(code));
    if (opts.input !== undefined) p.stdin.end(opts.input);
    else p.stdin.end();
  });
}

/** Run a command inside the smoke network namespace. */
export function inNetns(
  netns: string,
  argv: string[],
  opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<CmdResult> {
  return runCommand('ip', ['netns', 'exec', netns, ...argv], opts);
}

/** Run `banger ARGS --socket S` inside the namespace. */
export function banger(
  args: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<CmdResult> {
  const env = smokeEnv();
  const dd = args.indexOf('--');
  const withSocket =
    dd === -1
      ? [...args, '--socket', env.socket]
      : [...args.slice(0, dd), '--socket', env.socket, ...args.slice(dd)];
  return inNetns(env.netns, [BIN('banger'), ...withSocket], opts);
}

/** `banger ... --json`, parsed; fails the test with the CLI's stderr when it did not succeed. */
export async function bangerJson<T>(args: string[], opts: { timeoutMs?: number } = {}): Promise<T> {
  const dd = args.indexOf('--');
  const a = dd === -1 ? [...args, '--json'] : [...args.slice(0, dd), '--json', ...args.slice(dd)];
  const r = await banger(a, opts);
  if (r.code !== 0) throw new Error(`banger ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** A running `banger ARGS` (inside the namespace) that a test can watch and signal. */
export interface BangerProcess {
  /** The CLI's own pid (`ip netns exec` and bin/banger both exec, so it is node's). */
  pid: number;
  kill(signal: NodeJS.Signals): void;
  /** Resolves once stdout or stderr (so far) matches. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  /** What it printed so far. */
  output(): { stdout: string; stderr: string };
  done: Promise<CmdResult>;
}

export function bangerSpawn(args: string[]): BangerProcess {
  const env = smokeEnv();
  const dd = args.indexOf('--');
  const withSocket =
    dd === -1
      ? [...args, '--socket', env.socket]
      : [...args.slice(0, dd), '--socket', env.socket, ...args.slice(dd)];
  const p = spawn('ip', ['netns', 'exec', env.netns, BIN('banger'), ...withSocket], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters: (() => void)[] = [];
  const poke = (): void => waiters.forEach((w) => w());
  p.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    poke();
  });
  p.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    poke();
  });
  const done = new Promise<CmdResult>((resolve) =>
    p.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  return {
    pid: p.pid!,
    kill: (sig) => p.kill(sig),
    output: () => ({ stdout, stderr }),
    done,
    waitFor: (re, timeoutMs = 600_000) =>
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (re.test(stdout) || re.test(stderr)) resolve();
        };
        const t = setTimeout(
          () => reject(new Error(`timed out waiting for ${re} (stdout: ${stdout}; stderr: ${stderr})`)),
          timeoutMs,
        );
        waiters.push(check);
        void done.then(() => {
          clearTimeout(t);
          if (!(re.test(stdout) || re.test(stderr)))
            reject(new Error(`banger exited before ${re} (stdout: ${stdout}; stderr: ${stderr})`));
        });
        check();
      }),
  };
}

/** The VM directories that exist in the smoke daemon's state (one per VM). */
export function vmDirs(): string[] {
  const dir = join(smokeEnv().stateDir, 'vms');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/** The aliases pinned in the smoke daemon's known_hosts. */
export function pinnedHosts(): string[] {
  const f = join(smokeEnv().stateDir, 'ssh', 'known_hosts');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.split(/\s+/)[0]!);
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${Math.random().toString(16).slice(2, 8)}`;
}

/**
 * The JSON records of a log file. What follows the last newline is left out: a line the writer
 * has not finished yet (JSON.parse of it threw, failing a test that only polled the log).
 */
export function jsonLines(f: string): Record<string, unknown>[] {
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .split('\n')
    .slice(0, -1)
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

export function daemonLogRecords(): Record<string, unknown>[] {
  return jsonLines(smokeEnv().logFile);
}

export function haveCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

async function waitFor(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Start bangerd inside the namespace; returns its pid once its socket answers. */
export async function startSmokeDaemon(env: SmokeEnv, extraEnv: NodeJS.ProcessEnv = {}): Promise<number> {
  rmSync(env.socket, { force: true });
  const out = openSync(join(env.stateDir, '..', 'bangerd.stderr'), 'a');
  const daemon = spawn(
    'ip',
    [
      'netns',
      'exec',
      env.netns,
      ...(env.daemonUser
        ? [
            // This machine's /dev/net/tun is root-only (udev would make it 0666): in the daemon's
            // own mount namespace (ip netns exec makes one), bind a tun node the user may open.
            'sh',
            '-c',
            'mount --bind "$0" /dev/net/tun && exec "$@"',
            env.daemonUser.tunNode,
            'setpriv',
            `--reuid=${env.daemonUser.uid}`,
            `--regid=${env.daemonUser.gid}`,
            '--clear-groups',
          ]
        : []),
      BIN('bangerd'),
      '--socket',
      env.socket,
      '--state-dir',
      env.stateDir,
      '--log-file',
      env.logFile,
      '--config',
      env.configFile,
      '--helper-socket',
      env.helperSocket,
    ],
    {
      stdio: ['ignore', out, out],
      detached: true,
      // The scenarios' git work trees are made by root; the unprivileged daemon's git would call
      // them "dubious ownership". On a real install the daemon's user owns its user's trees.
      env: {
        ...process.env,
        // (A global config file, not GIT_CONFIG_COUNT: git clears that for the upload-pack of a
        // local fetch, which is how a workspace leaves the host tree.)
        ...(env.daemonUser ? { GIT_CONFIG_GLOBAL: join(env.stateDir, '..', 'daemon.gitconfig') } : {}),
        ...extraEnv,
      },
    },
  );
  daemon.unref();
  await waitFor(() => existsSync(env.socket), 30_000, 'bangerd socket');
  return daemon.pid!;
}

/** Start bangerd-root inside the namespace; returns its pid once its socket exists. */
export async function startSmokeHelper(
  env: SmokeEnv,
  ownerUid = env.daemonUser?.uid ?? 0,
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<number> {
  rmSync(env.helperSocket, { force: true });
  const out = openSync(join(env.stateDir, '..', 'bangerd-root.stderr'), 'a');
  const helper = spawn(
    'ip',
    [
      'netns',
      'exec',
      env.netns,
      BIN('bangerd-root'),
      '--socket',
      env.helperSocket,
      '--owner-uid',
      String(ownerUid),
      '--log-file',
      env.helperLogFile,
    ],
    { stdio: ['ignore', out, out], detached: true, env: { ...process.env, ...extraEnv } },
  );
  helper.unref();
  await waitFor(() => existsSync(env.helperSocket), 30_000, 'bangerd-root socket');
  return helper.pid!;
}

/** SIGTERM a process (gone already is fine) and wait up to 15 s for it to exit. */
async function stopProcess(pid: number, what: string): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // already gone
  }
  await waitFor(
    () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    },
    15_000,
    `${what} to exit`,
  );
}

/** Stop bangerd-root and start it again (e.g. with BANGER_TEST_FAIL_VERB); VMs are untouched. */
export async function restartSmokeHelper(extraEnv: NodeJS.ProcessEnv = {}): Promise<SmokeEnv> {
  const env = smokeEnv();
  await stopProcess(env.helperPid, 'bangerd-root');
  env.helperPid = await startSmokeHelper(env, undefined, extraEnv);
  writeFileSync(SMOKE_ENV_FILE, JSON.stringify(env));
  return env;
}

export function helperLogRecords(): Record<string, unknown>[] {
  return jsonLines(smokeEnv().helperLogFile);
}

/**
 * Stop the smoke daemon (VMs keep running) and start a new one (e.g. with BANGER_TEST_FAIL_STEP).
 * `whileStopped` runs in between (e.g. a test's own QMP connection: the daemon holds the only one).
 */
export async function restartSmokeDaemon(
  extraEnv: NodeJS.ProcessEnv = {},
  whileStopped?: () => Promise<void>,
): Promise<SmokeEnv> {
  const env = smokeEnv();
  await stopProcess(env.daemonPid, 'bangerd');
  try {
    await whileStopped?.();
  } finally {
    env.daemonPid = await startSmokeDaemon(env, extraEnv);
    writeFileSync(SMOKE_ENV_FILE, JSON.stringify(env));
  }
  return env;
}
