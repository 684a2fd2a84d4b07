// The generated client over SSH: one OpenSSH master connection per context (a control socket,
// ControlPersist so it closes itself when idle), which forwards a local unix socket to the remote
// daemon's socket (`ssh -O forward -L local:remote`). Every RPC then is what it is locally: one
// connection to a unix socket (rawCall), carried as one channel of the master. Chosen over a stdio
// bridge per call (a `ssh host banger …` process each time): no process is spawned per call, no
// banger is needed on the remote PATH for RPCs, and streaming calls (vm logs -f, op trace) just
// work; per-call cost is one channel open on a live connection (see docs/remote.md for figures).
//
// Host keys are checked against the user's known_hosts (nothing here relaxes it), BatchMode=yes
// makes a missing key or password fail instead of prompting, and the user's ~/.ssh/config applies
// because we call plain `ssh` with the context's destination. Every failure names the context and
// carries the op id the CLI minted for the call (the remote daemon adopts it as its own).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { answers } from './listen.ts';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ErrorResponse } from './client-errors.ts';
import { ConnectError, rawCall, requestEnvelope, type CallOptions } from './client-socket.ts';
import { mintOpId } from './context.ts';
import { INSTALL_TOML } from '../paths.ts';
import { singleQuote } from '../util/shell.ts';

export interface SshEndpoint {
  /** The context's name (said in every error). */
  name: string;
  /** ssh's destination: `host` or `user@host` (an ~/.ssh/config alias works). */
  destination: string;
  port?: number | undefined;
  /** The daemon's socket on the remote host; undefined: ask the remote for its install default. */
  remoteSocket?: string | undefined;
  /** How to say the host in messages (the context's URL). */
  label: string;
}

/** The context's host could not be reached, or went away during a call. */
export class RemoteError extends Error {
  readonly context: string;
  readonly opId: string | undefined;
  constructor(context: string, message: string, opId?: string) {
    super(message);
    this.name = 'RemoteError';
    this.context = context;
    this.opId = opId;
  }
}

/** Where control sockets and forwarded sockets live: short paths (unix sockets max ~107 bytes). */
export function sshControlDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_RUNTIME_DIR
    ? join(env.XDG_RUNTIME_DIR, 'banger')
    : join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'banger');
  return join(base, 'ssh');
}

/**
 * The shell line that prints the remote user's default daemon socket (as src/paths.ts decides);
 * `installToml` is the system install's marker file (a parameter so tests need not read this
 * machine's).
 */
export function remoteSocketProbe(installToml: string = INSTALL_TOML): string {
  return [
    'if [ -n "${BANGER_SOCKET:-}" ]; then echo "$BANGER_SOCKET";',
    `elif [ -e ${singleQuote(installToml)} ]; then echo /run/banger/bangerd.sock;`,
    'elif [ -n "${XDG_RUNTIME_DIR:-}" ]; then echo "$XDG_RUNTIME_DIR/banger/bangerd.sock";',
    'elif [ "$(id -u)" = 0 ]; then echo /run/banger/bangerd.sock;',
    'else echo "/tmp/banger-$(id -u)/bangerd.sock"; fi',
  ].join(' ');
}

export const REMOTE_SOCKET_PROBE = remoteSocketProbe();

export interface ExecResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** The last meaningful line of ssh's messages (e.g. `ssh: connect to host … Connection refused`). */
export function sshReason(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.replace(/\r$/, '').trim())
    .filter((l) => l !== '' && !/^@+$/.test(l) && !/^Warning: Permanently added/.test(l));
  // A changed host key: OpenSSH's banner is long; its verdict is the line worth showing.
  if (lines.some((l) => /REMOTE HOST IDENTIFICATION HAS CHANGED|^Host key for .* has changed/.test(l))) {
    const off = lines.find((l) => /^Offending .* key in /.test(l));
    return `the host key has changed (REMOTE HOST IDENTIFICATION HAS CHANGED${off ? `; ${off}` : ''}): refused; if the change is expected, remove the old key with ssh-keygen -R`;
  }
  if (lines.at(-1) === 'Host key verification failed.')
    return 'Host key verification failed: the host is not in known_hosts (connect once with ssh to check and accept its key) or its key does not match: refused';
  return lines.at(-1) ?? 'ssh failed without saying why';
}

/** One SSH master per context, with the remote daemon's socket forwarded to a local one. */
export class SshTunnel {
  readonly endpoint: SshEndpoint;
  readonly controlPath: string;
  readonly localSocket: string;
  private readonly logFile: string;
  private readonly lockFile: string;
  private readonly dir: string;
  private ready: Promise<string> | undefined;

  constructor(endpoint: SshEndpoint, dir: string = sshControlDir()) {
    this.endpoint = endpoint;
    this.dir = dir;
    // Named by the context and where it points: a context re-added elsewhere gets a new master.
    const id = createHash('sha256')
      .update(
        `${endpoint.name}\0${endpoint.destination}\0${endpoint.port ?? ''}\0${endpoint.remoteSocket ?? ''}`,
      )
      .digest('hex')
      .slice(0, 16);
    this.controlPath = join(dir, `${id}.ctl`);
    this.localSocket = join(dir, `${id}.sock`);
    this.logFile = join(dir, `${id}.log`);
    this.lockFile = join(dir, `${id}.lock`);
  }

  /** Options every ssh of this context gets (before the destination). */
  baseArgs(): string[] {
    const a = ['-S', this.controlPath, '-o', 'BatchMode=yes'];
    if (this.endpoint.port !== undefined) a.push('-p', String(this.endpoint.port));
    return a;
  }

  /** The local socket that reaches the remote daemon; starts the master when it is not up. */
  socket(): Promise<string> {
    this.ready ??= this.establish().catch((e: unknown) => {
      this.ready = undefined;
      throw e;
    });
    return this.ready;
  }

  /** Forget the cached socket (after a call found it dead). */
  reset(): void {
    this.ready = undefined;
  }

  private async establish(): Promise<string> {
    if (await answers(this.localSocket)) return this.localSocket;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // Two banger processes starting the same master at once would leave a stray connection: one
    // starts it, the other waits for its socket.
    const lock = await this.lock();
    try {
      if (await answers(this.localSocket)) return this.localSocket;
      await this.startMaster();
      const remote = this.endpoint.remoteSocket ?? (await this.probeSocket());
      const fwd = await runSsh([
        ...this.baseArgs(),
        '-O',
        'forward',
        '-L',
        `${this.localSocket}:${remote}`,
        '--',
        this.endpoint.destination,
      ]);
      if (fwd.code !== 0)
        throw new RemoteError(
          this.endpoint.name,
          `${this.endpoint.label}: cannot forward ${remote}: ${sshReason(fwd.stderr)}`,
        );
      return this.localSocket;
    } finally {
      lock();
    }
  }

  private async startMaster(): Promise<void> {
    // A master left from before (its forward gone, or stale files): end it, start afresh.
    if (existsSync(this.controlPath)) {
      await runSsh([...this.baseArgs(), '-O', 'exit', '--', this.endpoint.destination]);
      rmSync(this.controlPath, { force: true });
    }
    rmSync(this.logFile, { force: true });
    const r = await runSsh([
      ...this.baseArgs(),
      '-M',
      '-f',
      '-N',
      '-o',
      'ControlPersist=300',
      // An unreachable host fails in seconds, not after the kernel's TCP timeout.
      '-o',
      'ConnectTimeout=15',
      '-o',
      'ServerAliveInterval=15',
      '-o',
      'ServerAliveCountMax=3',
      '-o',
      'ExitOnForwardFailure=yes',
      '-o',
      'StreamLocalBindUnlink=yes',
      // The master's later messages (the connection dropping) go here, read when a call fails.
      '-E',
      this.logFile,
      '--',
      this.endpoint.destination,
    ]);
    if (r.code !== 0)
      throw new RemoteError(
        this.endpoint.name,
        `${this.endpoint.label}: ${sshReason(this.lastLog() || r.stderr)}`,
      );
  }

  private async probeSocket(): Promise<string> {
    const r = await this.exec(`sh -c ${singleQuote(REMOTE_SOCKET_PROBE)}`);
    const path = r.stdout.toString('utf8').trim().split('\n').at(-1) ?? '';
    if (r.code !== 0 || !path.startsWith('/'))
      throw new RemoteError(
        this.endpoint.name,
        `${this.endpoint.label}: cannot tell where its bangerd socket is (${r.code !== 0 ? sshReason(r.stderr) : 'no answer'}); give it: banger context rm ${this.endpoint.name} && banger context add ${this.endpoint.name} URL --socket PATH`,
      );
    return path;
  }

  /** Run a remote shell line through the master; stdin from `input` when given. */
  exec(line: string, input?: NodeJS.ReadableStream): Promise<ExecResult> {
    return runSsh([...this.baseArgs(), '--', this.endpoint.destination, line], input);
  }

  /** ProxyCommand value that reaches host:port from the remote host, through the master. */
  proxyCommand(): string {
    return [
      'ssh',
      ...this.baseArgs().map(singleQuote),
      '-W',
      '%h:%p',
      '--',
      singleQuote(this.endpoint.destination),
    ].join(' ');
  }

  /** Why the master is gone, from its log; '' when it said nothing. */
  lastLog(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /**
   * After a call's connection closed: whether the master lives on (the daemon closed the channel)
   * or is going down with the connection (it may still answer for a moment, so ask a few times).
   */
  async stillAlive(): Promise<boolean> {
    for (let i = 0; i < 5; i++) {
      if (!(await this.alive())) return false;
      await new Promise((r) => setTimeout(r, 200));
    }
    return true;
  }

  /** Whether the master still answers (`ssh -O check`). */
  async alive(): Promise<boolean> {
    if (!existsSync(this.controlPath)) return false;
    return (await runSsh([...this.baseArgs(), '-O', 'check', '--', this.endpoint.destination])).code === 0;
  }

  /** End the master (ssh -O exit), if one is up; remove the files it left. */
  async close(): Promise<void> {
    if (existsSync(this.controlPath))
      await runSsh([...this.baseArgs(), '-O', 'exit', '--', this.endpoint.destination]);
    for (const f of [this.controlPath, this.localSocket, this.logFile]) rmSync(f, { force: true });
  }

  private async lock(): Promise<() => void> {
    const end = Date.now() + 30_000;
    for (;;) {
      try {
        closeSync(openSync(this.lockFile, 'wx', 0o600));
        return () => rmSync(this.lockFile, { force: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      // A lock older than a connect could take is left by a process that died: take it over.
      try {
        if (Date.now() - statSync(this.lockFile).mtimeMs > 60_000) rmSync(this.lockFile, { force: true });
      } catch {
        // gone meanwhile
      }
      if (Date.now() > end)
        throw new RemoteError(
          this.endpoint.name,
          `${this.endpoint.label}: another banger is still connecting (${this.lockFile})`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Run ssh with argv; collect stdout and stderr. */
export function runSsh(argv: readonly string[], input?: NodeJS.ReadableStream): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn('ssh', [...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 64 * 1024) err += d.toString('utf8');
    });
    child.stdin.on('error', () => undefined);
    if (input) input.pipe(child.stdin);
    else child.stdin.end();
    child.on('error', (e: NodeJS.ErrnoException) =>
      resolve({
        code: 127,
        stdout: Buffer.alloc(0),
        stderr: e.code === 'ENOENT' ? 'ssh: not found on PATH; install an OpenSSH client' : e.message,
      }),
    );
    child.on('close', (code) => resolve({ code: code ?? 255, stdout: Buffer.concat(out), stderr: err }));
  });
}

/** How one RPC method is carried to a remote daemon (vm.ssh and workspace copies need more). */
export type RemoteAdapter = (
  params: unknown,
  call: (params: unknown) => Promise<unknown>,
  tunnel: SshTunnel,
) => Promise<unknown>;

/** The generated client's transport for a context. */
export class SshTransport {
  readonly tunnel: SshTunnel;
  private readonly defaults: CallOptions;
  private readonly adapters: Readonly<Record<string, RemoteAdapter>>;

  constructor(tunnel: SshTunnel, defaults: CallOptions = {}, adapters: Record<string, RemoteAdapter> = {}) {
    this.tunnel = tunnel;
    this.defaults = defaults;
    this.adapters = adapters;
  }

  call(method: string, params?: unknown, options: CallOptions = {}): Promise<unknown> {
    const adapter = this.adapters[method];
    const send = (p: unknown): Promise<unknown> => this.send(method, p, options);
    return adapter ? adapter(params, send, this.tunnel) : send(params);
  }

  private async send(method: string, params: unknown, options: CallOptions): Promise<unknown> {
    const opts = { ...this.defaults, ...options };
    // Minted here, so a call that never reaches the host still has an id, and the remote daemon
    // records it under this one (it adopts a well-formed op id).
    const opId = opts.opId ?? mintOpId();
    const req = requestEnvelope(method, params, opId);
    const label = this.tunnel.endpoint.label;
    const name = this.tunnel.endpoint.name;
    for (let attempt = 0; ; attempt++) {
      let sock: string;
      try {
        sock = await this.tunnel.socket();
      } catch (e) {
        if (e instanceof RemoteError) throw new RemoteError(name, e.message, opId);
        throw e;
      }
      try {
        return await rawCall(sock, req, { ...opts, opId });
      } catch (e) {
        // The local end of the forward is gone (master ended when idle): start it again, once.
        if (e instanceof ConnectError && attempt === 0) {
          this.tunnel.reset();
          continue;
        }
        if (e instanceof ConnectError)
          throw new RemoteError(name, `${label}: cannot reach bangerd through ssh (${e.message})`, opId);
        // A connection that closed without an answer: if the master died, the host went away.
        if (
          e instanceof ErrorResponse &&
          e.code === 'operation_failed' &&
          /connection (closed|error)/.test(e.bareMessage)
        ) {
          if (!(await this.tunnel.stillAlive())) {
            const why = sshReason(this.tunnel.lastLog() || 'the ssh connection ended');
            throw new RemoteError(name, `${label} went away during ${method}: ${why}`, opId);
          }
          // The master lives: the channel to the daemon's socket closed (sshd could not connect
          // to it: no daemon there, or not this user's). The master's log says which.
          const open = this.tunnel
            .lastLog()
            .split('\n')
            .filter((l) => /open failed/.test(l))
            .at(-1)
            ?.trim();
          throw new RemoteError(
            name,
            `${label}: bangerd did not answer ${method}${open ? ` (${open})` : ''}; is it running there, as the ssh user?`,
            opId,
          );
        }
        throw e;
      }
    }
  }
}
