// Acting on a devcontainer.json in `vm run`: the image it names (found by reference, else pulled),
// the user it runs as (created when missing), its lifecycle commands (streamed with a prefix, a
// failure fails the run) and its forwarded ports (ssh -L from 127.0.0.1 on the host, since the
// daemon forwards only SSH into a user-mode guest). Command construction is src/cli/guest-command.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import { createConnection, createServer } from 'node:net';
import type { Image, VmSshResult } from '../../generated/types.gen.ts';
import { defaultImageName } from '../image/names.ts';
import { formatReference, parseReference } from '../image/oci/reference.ts';
import type { Devcontainer, LifecycleCommand, LifecycleStep, PortForward } from './devcontainer.ts';
import {
  envFromOci,
  guestCommandLine,
  isRootUser,
  mergeEnv,
  resolveGuestVars,
  type EnvEntry,
  type ImageRunConfig,
} from './guest-command.ts';
import { lineSshArgv } from './guest-run.ts';
import { shellQuote } from '../util/shell.ts';
import { buildSshArgv } from './ssh-exec.ts';

/** The canonical form of a reference, or undefined when it does not parse. */
export function canonicalReference(ref: string): string | undefined {
  try {
    return formatReference(parseReference(ref));
  } catch {
    return undefined;
  }
}

/** A local image pulled from `ref` (same canonical reference), if any. */
export function findImageByReference(images: readonly Image[], ref: string): Image | undefined {
  const want = canonicalReference(ref) ?? ref;
  return images.find(
    (i) => i.reference !== undefined && (canonicalReference(i.reference) ?? i.reference) === want,
  );
}

/**
 * The name `image pull` gives a reference by default (the daemon's own rule, src/image/names.ts),
 * for --dry-run's words; a real pull reports the name the daemon chose. A reference that does not
 * parse is returned as it is (the pull would fail on it).
 */
export function defaultPulledName(ref: string): string {
  try {
    return defaultImageName({ kind: 'registry', reference: ref });
  } catch {
    return ref;
  }
}

/** How the commands of a run are run: the image's config, overridden by the devcontainer's. */
export interface RunDefaults {
  env: EnvEntry[];
  user?: string;
  /** The image's WorkingDir (a workspace's directory wins over it). */
  workingDir?: string;
}

export function runDefaults(cfg: ImageRunConfig | undefined, dc: Devcontainer | undefined): RunDefaults {
  const imageEnv = envFromOci(cfg?.env ?? []);
  const containerEnv = mergeEnv(imageEnv, dc?.containerEnv ?? []);
  const env = dc ? mergeEnv(containerEnv, resolveGuestVars(dc.remoteEnv, containerEnv)) : containerEnv;
  const out: RunDefaults = { env };
  const user = dc?.remoteUser ?? dc?.containerUser ?? cfg?.user;
  if (user !== undefined && user !== '') out.user = user;
  if (cfg?.working_dir !== undefined && cfg.working_dir !== '') out.workingDir = cfg.working_dir;
  return out;
}

/**
 * The root script that makes the devcontainer's users exist (useradd -m, as devcontainers expect
 * a home) and hands the work tree to the command user; undefined when there is nothing to do.
 */
export function setupScript(
  users: readonly (string | undefined)[],
  chownTo: string | undefined,
  dir: string | undefined,
): string | undefined {
  const lines: string[] = [];
  for (const spec of new Set(users.filter((u): u is string => u !== undefined && !isRootUser(u)))) {
    const [user = '', group] = spec.split(':', 2);
    if (group !== undefined && group !== '' && !/^\d+$/.test(group)) {
      const g = shellQuote([group]);
      lines.push(`getent group ${g} >/dev/null 2>&1 || groupadd ${g}`);
    }
    // A bare uid cannot be created by name: it must exist in the image.
    if (/^\d+$/.test(user)) continue;
    const u = shellQuote([user]);
    lines.push(
      `if ! id -u ${u} >/dev/null 2>&1; then`,
      `  command -v useradd >/dev/null 2>&1 || { echo "banger: useradd is not in the guest, cannot create user ${user.replaceAll('"', '')}" >&2; exit 127; }`,
      `  s=/bin/sh; [ -x /bin/bash ] && s=/bin/bash`,
      `  useradd -m -s "$s" ${u}`,
      `  echo "banger: created user ${user.replaceAll('"', '')}" >&2`,
      'fi',
    );
  }
  if (chownTo !== undefined && !isRootUser(chownTo) && dir !== undefined) {
    const [u = '', g] = chownTo.split(':', 2);
    // `uid:` needs a passwd entry for the login group; a bare uid changes the owner alone.
    const owner = g !== undefined && g !== '' ? `${u}:${g}` : /^\d+$/.test(u) ? u : `${u}:`;
    lines.push(`chown -R ${shellQuote([owner])} ${shellQuote([dir])}`);
  }
  return lines.length > 0 ? ['set -e', ...lines].join('\n') : undefined;
}

/** The argv of one lifecycle command: a string through `/bin/sh -c`, an array as it is. */
export function lifecycleArgv(c: LifecycleCommand): string[] {
  return 'shell' in c ? ['/bin/sh', '-c', c.shell] : c.argv;
}

/** The prefix of a lifecycle command's output lines. */
export function lifecyclePrefix(key: string, name: string | undefined): string {
  return `[${name !== undefined ? `${key}:${name}` : key}] `;
}

export interface RunInGuest {
  /** Run a remote line non-interactively; each output line goes to `line` (stderr marked). */
  (remoteLine: string, line: (text: string) => void): Promise<number>;
}

/**
 * Run a remote line over ssh with stdout and stderr piped, line by line; `signal` ends the ssh (a
 * SIGTERM to banger while a lifecycle command runs).
 */
export function sshLineRunner(
  details: VmSshResult,
  o: { bin?: string; signal?: AbortSignal } = {},
): RunInGuest {
  return (remoteLine, line) =>
    new Promise((resolve, reject) => {
      const child = spawn(o.bin ?? 'ssh', lineSshArgv(details, remoteLine, false), {
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(o.signal ? { signal: o.signal } : {}),
      });
      const pump = (s: NodeJS.ReadableStream): void => {
        let buf = '';
        s.setEncoding('utf8');
        s.on('data', (d: string) => {
          buf += d;
          let nl: number;
          while ((nl = buf.indexOf('\n')) !== -1) {
            line(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
          }
        });
        s.on('end', () => {
          if (buf !== '') line(buf);
        });
      };
      if (child.stdout) pump(child.stdout);
      if (child.stderr) pump(child.stderr);
      child.on('error', reject);
      child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
    });
}

export class LifecycleError extends Error {
  readonly key: string;
  readonly commandName: string | undefined;
  readonly exitCode: number;
  constructor(key: string, commandName: string | undefined, exitCode: number) {
    super(
      `${key}${commandName !== undefined ? ` (${commandName})` : ''} failed with exit code ${exitCode}; its output is above`,
    );
    this.name = 'LifecycleError';
    this.key = key;
    this.commandName = commandName;
    this.exitCode = exitCode;
  }
}

/**
 * Run the lifecycle steps in order; the named commands of one step run in parallel, and the step
 * waits for all of them. The first failure (in step order, then name order) is thrown.
 */
export async function runLifecycle(
  steps: readonly LifecycleStep[],
  o: {
    run: RunInGuest;
    out: (text: string) => void;
    cwd?: string | undefined;
    env: readonly EnvEntry[];
    user?: string | undefined;
  },
): Promise<void> {
  for (const step of steps) {
    const codes = await Promise.all(
      step.commands.map(async (c) => {
        const prefix = lifecyclePrefix(step.key, c.name);
        const argv = lifecycleArgv(c.command);
        o.out(`${prefix}$ ${'shell' in c.command ? c.command.shell : shellQuote(argv)}`);
        const line = guestCommandLine({ command: argv, cwd: o.cwd, env: o.env, user: o.user }) ?? '';
        return { name: c.name, code: await o.run(line, (t) => o.out(`${prefix}${t}`)) };
      }),
    );
    const failed = codes.find((c) => c.code !== 0);
    if (failed) throw new LifecycleError(step.key, failed.name, failed.code);
  }
}

/** A host port for a forward: the guest's own number when free on 127.0.0.1, else any free one. */
export function pickHostPort(want: number, host = '127.0.0.1'): Promise<number> {
  const tryListen = (port: number): Promise<number | undefined> =>
    new Promise((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(undefined));
      srv.listen({ port, host, exclusive: true }, () => {
        const addr = srv.address();
        const got = typeof addr === 'object' && addr ? addr.port : undefined;
        srv.close(() => resolve(got));
      });
    });
  return tryListen(want).then(
    async (p) => p ?? (await tryListen(0)) ?? Promise.reject(new Error('no free port on 127.0.0.1')),
  );
}

export interface Forward {
  spec: PortForward;
  hostPort: number;
  child: ChildProcess;
}

/** The ssh argv (without `ssh`) that holds `-L 127.0.0.1:HOST:GUESTHOST:PORT` open and runs nothing. */
export function forwardArgv(details: VmSshResult, f: PortForward, hostPort: number): string[] {
  const argv = buildSshArgv(details, { command: [], tty: false });
  const at = argv.indexOf('--');
  argv.splice(
    at,
    0,
    '-N',
    '-o',
    'BatchMode=yes',
    '-o',
    'ExitOnForwardFailure=yes',
    '-o',
    'ServerAliveInterval=15',
    '-o',
    'ServerAliveCountMax=3',
    '-L',
    `127.0.0.1:${hostPort}:${f.guestHost}:${f.guestPort}`,
  );
  return argv;
}

/** Wait until 127.0.0.1:port accepts a connection, or the ssh holding it exits. */
function waitListening(port: number, child: ChildProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    let exited = child.exitCode !== null;
    child.once('exit', () => {
      exited = true;
    });
    const attempt = (): void => {
      if (exited) return resolve(false);
      const sock = createConnection({ port, host: '127.0.0.1' });
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > deadline) resolve(false);
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/**
 * Start one ssh per forwarded port. `detached`: the ssh outlives banger (vm run -d) and ends when
 * the VM goes away (keepalives); otherwise the caller stops them when the command ends.
 */
export async function startForwards(
  details: VmSshResult,
  ports: readonly PortForward[],
  o: { detached: boolean; bin?: string },
): Promise<Forward[]> {
  const out: Forward[] = [];
  for (const spec of ports) {
    const hostPort = await pickHostPort(spec.guestPort);
    const child = spawn(o.bin ?? 'ssh', forwardArgv(details, spec, hostPort), {
      stdio: ['ignore', 'ignore', o.detached ? 'ignore' : 'inherit'],
      detached: o.detached,
    });
    child.on('error', () => undefined);
    if (!(await waitListening(hostPort, child, 10_000))) {
      child.kill('SIGTERM');
      stopForwards(out);
      throw new Error(`could not forward port ${spec.label} to 127.0.0.1:${hostPort} (ssh -L failed)`);
    }
    if (o.detached) child.unref();
    // Not detached: the forward must not outlive banger, whatever path it exits by.
    else process.once('exit', () => child.exitCode === null && child.kill('SIGTERM'));
    out.push({ spec, hostPort, child });
  }
  return out;
}

export function stopForwards(fs: readonly Forward[]): void {
  for (const f of fs) if (f.child.exitCode === null) f.child.kill('SIGTERM');
}

/** `forwarding 127.0.0.1:8000 → guest localhost:8000`. */
export function forwardLine(f: { spec: PortForward; hostPort: number }): string {
  return `forwarding 127.0.0.1:${f.hostPort} → guest ${f.spec.guestHost}:${f.spec.guestPort}${f.hostPort !== f.spec.guestPort ? ` (${f.spec.guestPort} was taken on the host)` : ''}`;
}

/** What the devcontainer adds to `vm run` after the copy, in words (--dry-run). */
export function devcontainerSteps(dc: Devcontainer): string[] {
  const steps: string[] = [];
  const users = [
    ...new Set(
      [dc.containerUser, dc.remoteUser].filter((u): u is string => u !== undefined && !isRootUser(u)),
    ),
  ];
  if (users.length > 0)
    steps.push(`create user ${users.join(' and ')} if missing, and give it ${dc.workspaceFolder}`);
  for (const s of dc.lifecycle) {
    const what = s.commands
      .map(
        (c) =>
          `${c.name !== undefined ? `${c.name}: ` : ''}${'shell' in c.command ? c.command.shell : shellQuote(c.command.argv)}`,
      )
      .join(s.commands.length > 1 ? ' | ' : '');
    steps.push(`run ${s.key}${s.commands.length > 1 ? ` (${s.commands.length} in parallel)` : ''}: ${what}`);
  }
  if (dc.forwardPorts.length > 0)
    steps.push(
      `forward ${dc.forwardPorts.map((p) => p.label).join(', ')} to 127.0.0.1 on the host (the same port when free)`,
    );
  return steps;
}
