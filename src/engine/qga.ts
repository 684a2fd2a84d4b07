// A client for the QEMU guest agent (qemu-ga) over the host end of its virtio-serial port (a unix
// socket QEMU serves: chardev socket server=on,wait=off).
//
// The protocol is QMP without a greeting, events or capabilities, and, unlike QMP, the stream can
// hold stale data: replies to a previous client's commands, or half a request the agent read
// before the VM was saved. So a client must `guest-sync-delimited` upon connecting and after any
// timeout: the request is preceded by a 0xFF byte (the agent's parser resets on it), the agent
// writes 0xFF before its reply, and everything up to the reply carrying our random id is stale.
// Commands then go one at a time (the agent answers in order, and replies carry no id we rely on).
//
// QEMU serves one client per chardev: another connection is accepted by the kernel but nothing
// reaches it until the first closes, so whoever holds a client must close() it. While no client
// is open the VMM's handle keeps the port connected itself (QgaHold: an unconnected port makes
// the guest's qemu-ga poll); connect() takes that connection over and close() hands it back.
import { randomInt } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { EngineError, isEngineError } from './errors.ts';
import { QgaHold } from './qga-hold.ts';
import { silentLogger, type EngineLogger } from './log.ts';
import { sleep } from './process.ts';
import { isNotListening } from './qmp.ts';

export interface QgaConnectOptions {
  /** Keep trying to connect (the socket may appear late) for this long. */
  timeoutMs: number;
  signal?: AbortSignal;
  logger?: EngineLogger;
}

export interface QgaExecResult {
  /** null when the process was killed by a signal (see `signal`). */
  exitcode: number | null;
  stdout: string;
  stderr: string;
  signal?: number;
  /** The agent caps captured output (16 MiB); true when it cut some. */
  truncated?: boolean;
}

export interface QgaExecOptions {
  /** Written to the process's stdin, which is then closed. */
  inputData?: Buffer;
  /** For the whole run: start, wait for the exit, collect the output. */
  timeoutMs: number;
  /** How often to ask whether it exited (a function: asked before each wait). Default 50 ms. */
  pollMs?: number | (() => number);
  /** Told once the agent has started the process (its guest-exec reply), with the guest pid. */
  onSpawned?: (pid: number) => void;
}

interface ExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'out-data'?: string;
  'err-data'?: string;
  'out-truncated'?: boolean;
  'err-truncated'?: boolean;
}

/** What one wait on the stream is looking for. */
interface Waiter {
  /** Sees every JSON message; returns true once the wait is over. */
  onMessage: (msg: Record<string, unknown>) => boolean;
  reject: (err: Error) => void;
}

const SENTINEL = 0xff;
/** Resend guest-sync-delimited this often while nothing answers (a restored agent may lag). */
const SYNC_RESEND_MS = 200;
/** A reply bigger than this (16 MiB of output, base64) means something is wrong. */
const MAX_BUFFER = 64 * 1024 * 1024;
const CONNECT_RETRY_MS = 50;

export class QgaClient {
  readonly path: string;
  private readonly socket: Socket;
  private readonly logger: EngineLogger;
  private buffer: Buffer = Buffer.alloc(0);
  private waiter: Waiter | undefined;
  /** Serialises commands: the agent's replies carry nothing to match them by. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Until a sync succeeds (and again after any timeout) the stream may hold stale replies. */
  private inSync = false;
  private isClosed = false;
  /** The hold this client took the port from: given back once this client is closed. */
  private readonly hold: QgaHold | undefined;

  private constructor(path: string, socket: Socket, logger: EngineLogger, hold?: QgaHold) {
    this.path = path;
    this.socket = socket;
    this.logger = logger;
    this.hold = hold;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () =>
      this.shutdown(new EngineError('control_closed', `guest agent connection ${path} closed`)),
    );
    socket.on('error', (err) => this.logger.debug({ err, path }, 'qga socket error'));
  }

  /** Connect, retrying while the socket is missing or refuses (QEMU still starting). */
  static async connect(path: string, opts: QgaConnectOptions): Promise<QgaClient> {
    const logger = opts.logger ?? silentLogger;
    const hold = QgaHold.of(path);
    const held = hold?.take();
    if (held) return new QgaClient(path, held, logger, hold);
    try {
      return await QgaClient.open(path, opts, logger, hold);
    } catch (err) {
      hold?.giveBack();
      throw err;
    }
  }

  private static async open(
    path: string,
    opts: QgaConnectOptions,
    logger: EngineLogger,
    hold: QgaHold | undefined,
  ): Promise<QgaClient> {
    const deadline = Date.now() + opts.timeoutMs;
    let lastErr: unknown;
    for (;;) {
      opts.signal?.throwIfAborted();
      try {
        const socket = await openSocket(path, Math.max(1, deadline - Date.now()));
        return new QgaClient(path, socket, logger, hold);
      } catch (err) {
        if (!isNotListening(err)) throw err;
        lastErr = err;
      }
      if (Date.now() + CONNECT_RETRY_MS > deadline) {
        throw new EngineError(
          'timeout',
          `guest agent socket ${path} not listening after ${opts.timeoutMs} ms`,
          {
            details: { path },
            cause: lastErr,
          },
        );
      }
      await sleep(CONNECT_RETRY_MS);
    }
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Flush the stream: send 0xFF + guest-sync-delimited with a random id (again, with a new id,
   * every second while nothing answers) and drop everything until the reply to the last one.
   * The agent answers in order, so once the last id comes back no older reply is still due.
   */
  sync(timeoutMs: number): Promise<void> {
    return this.serialised(() => this.doSync(timeoutMs));
  }

  /**
   * Run one agent command; resolves with its `return` value, rejects with
   * EngineError('guest_agent') when the agent answers with an error.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts: { timeoutMs: number } = { timeoutMs: 10_000 },
  ): Promise<T> {
    const argsJson = args === undefined ? undefined : JSON.stringify(args);
    return this.serialised(() => this.command<T>(command, argsJson, opts.timeoutMs));
  }

  /**
   * Several commands in one write, one round trip: the agent runs them in order and answers in
   * order, so the n-th reply is the n-th command's. Each settles on its own: an error reply does
   * not stop the later commands (the agent runs them anyway). Only for commands that do not
   * depend on an earlier one's result.
   */
  batch(
    commands: { command: string; args?: Record<string, unknown> }[],
    opts: { timeoutMs: number },
  ): Promise<PromiseSettledResult<unknown>[]> {
    return this.serialised(() => this.doBatch(commands, opts.timeoutMs));
  }

  ping(timeoutMs = 5_000): Promise<void> {
    return this.execute<unknown>('guest-ping', undefined, { timeoutMs }).then(() => undefined);
  }

  /**
   * Run `path args...` in the guest (guest-exec, output captured), wait for it to exit
   * (guest-exec-status every pollMs) and return its exit status and output (decoded as UTF-8).
   */
  async exec(path: string, args: string[], opts: QgaExecOptions): Promise<QgaExecResult> {
    const deadline = Date.now() + opts.timeoutMs;
    const pid = await this.spawn(path, args, {
      timeoutMs: opts.timeoutMs,
      ...(opts.inputData !== undefined ? { inputData: opts.inputData } : {}),
    });
    opts.onSpawned?.(pid);
    return this.waitExec(pid, {
      timeoutMs: Math.max(1, deadline - Date.now()),
      name: path,
      ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
    });
  }

  /** Start `path args...` in the guest (guest-exec, output captured); its guest pid. */
  async spawn(
    path: string,
    args: string[],
    opts: { timeoutMs: number; inputData?: Buffer },
  ): Promise<number> {
    const execArgs: Record<string, unknown> = { path, arg: args, 'capture-output': true };
    if (opts.inputData !== undefined) execArgs['input-data'] = opts.inputData.toString('base64');
    const { pid } = await this.execute<{ pid: number }>('guest-exec', execArgs, opts);
    return pid;
  }

  /**
   * Wait for a process the agent started (guest-exec, this connection's or an earlier one's:
   * the agent keeps its table, even across a saved and restored VM) to exit: guest-exec-status
   * every pollMs (default 50 ms). Its exit status and output.
   */
  async waitExec(
    pid: number,
    opts: { timeoutMs: number; pollMs?: number | (() => number); name?: string },
  ): Promise<QgaExecResult> {
    const deadline = Date.now() + opts.timeoutMs;
    const left = (): number => Math.max(1, deadline - Date.now());
    const path = opts.name ?? `pid ${pid}`;
    const stillRunning = (cause?: unknown): EngineError =>
      new EngineError(
        'timeout',
        `guest process ${path} (pid ${pid}) still running after ${opts.timeoutMs} ms`,
        {
          details: { path, pid },
          ...(cause !== undefined ? { cause } : {}),
        },
      );
    for (;;) {
      // A status call cut short by the overall deadline is the process still running.
      const st = await this.execute<ExecStatus>('guest-exec-status', { pid }, { timeoutMs: left() }).catch(
        (err: unknown) => {
          throw isEngineError(err, 'timeout') && Date.now() >= deadline ? stillRunning(err) : err;
        },
      );
      if (st.exited) return execResult(st);
      if (Date.now() >= deadline) throw stillRunning();
      const pollMs = typeof opts.pollMs === 'function' ? opts.pollMs() : (opts.pollMs ?? 50);
      await sleep(Math.min(pollMs, left()));
    }
  }

  /**
   * One guest-exec-status of a process the agent started: its exit status and output once it
   * exited (the agent then forgets it), undefined while it runs. A pid the agent does not know
   * rejects with EngineError('guest_agent').
   */
  async execStatus(pid: number, opts: { timeoutMs: number }): Promise<QgaExecResult | undefined> {
    const st = await this.execute<ExecStatus>('guest-exec-status', { pid }, opts);
    return st.exited ? execResult(st) : undefined;
  }

  /**
   * Write `data` to a file in the guest: guest-file-open (mode `w`), then guest-file-write and
   * guest-file-close (also after a failed write) together: two round trips. The agent makes the
   * descriptor non-blocking, so a pipe or FIFO must have room for all of it: fewer bytes written
   * is an error. An open the agent refuses is EngineError('guest_agent') with details.opened false.
   */
  async writeFile(path: string, data: Buffer, opts: { timeoutMs: number }): Promise<void> {
    const deadline = Date.now() + opts.timeoutMs;
    const left = (): { timeoutMs: number } => ({ timeoutMs: Math.max(1, deadline - Date.now()) });
    const handle = await this.execute<number>('guest-file-open', { path, mode: 'w' }, left()).catch(
      (err: unknown) => {
        // Refused before a byte went anywhere (details.opened false): a caller may go another way.
        if (!isEngineError(err, 'guest_agent')) throw err;
        throw new EngineError('guest_agent', err.message, {
          details: { ...err.details, path, opened: false },
          cause: err,
        });
      },
    );
    // The write and the close in one round trip: the agent runs the close after a failed write
    // too, so the handle goes either way; the write's error is the one worth reporting.
    const [w, c] = await this.batch(
      [
        { command: 'guest-file-write', args: { handle, 'buf-b64': data.toString('base64') } },
        { command: 'guest-file-close', args: { handle } },
      ],
      left(),
    );
    if (w?.status !== 'fulfilled') throw w?.reason ?? new EngineError('guest_agent', 'no reply');
    const count = (w.value as { count: number }).count;
    if (count !== data.length) {
      throw new EngineError('guest_agent', `guest agent wrote ${count} of ${data.length} bytes to ${path}`, {
        details: { path, count, length: data.length },
      });
    }
    if (c?.status === 'rejected') throw c.reason;
  }

  /** Idempotent. A pending command or sync rejects with EngineError('control_closed'). */
  close(): void {
    this.shutdown(new EngineError('control_closed', `guest agent connection ${this.path} was closed`));
    this.socket.destroy();
  }

  private serialised<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async doSync(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let id = 0;
    let done = false;
    let resend: NodeJS.Timeout | undefined;
    const send = (): void => {
      if (done) return;
      id = randomInt(1, 2 ** 47);
      const request = requestLine('guest-sync-delimited', `{"id":${id}}`);
      this.write(Buffer.concat([Buffer.of(SENTINEL), Buffer.from(request)]));
      if (Date.now() + SYNC_RESEND_MS < deadline) resend = setTimeout(send, SYNC_RESEND_MS);
    };
    try {
      await this.wait(
        timeoutMs,
        () => `guest agent on ${this.path} did not answer guest-sync-delimited in ${timeoutMs} ms`,
        (msg) => msg.return === id,
        send,
      );
      this.inSync = true;
    } finally {
      done = true;
      clearTimeout(resend);
    }
  }

  private async command<T>(command: string, argsJson: string | undefined, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    if (!this.inSync) await this.doSync(timeoutMs);
    let reply: Record<string, unknown> = {};
    await this.wait(
      Math.max(1, deadline - Date.now()),
      (ms) => `guest agent command ${command} got no reply in ${ms} ms`,
      (msg) => {
        if (!('return' in msg) && !('error' in msg)) return false;
        reply = msg;
        return true;
      },
      () => this.write(Buffer.from(requestLine(command, argsJson))),
      { command },
    );
    if ('error' in reply) throw agentError(command, reply);
    return reply.return as T;
  }

  private async doBatch(
    commands: { command: string; args?: Record<string, unknown> }[],
    timeoutMs: number,
  ): Promise<PromiseSettledResult<unknown>[]> {
    const deadline = Date.now() + timeoutMs;
    if (!this.inSync) await this.doSync(timeoutMs);
    const replies: Record<string, unknown>[] = [];
    const names = commands.map((c) => c.command).join(', ');
    await this.wait(
      Math.max(1, deadline - Date.now()),
      (ms) => `guest agent commands ${names} got ${replies.length} of ${commands.length} replies in ${ms} ms`,
      (msg) => {
        if (!('return' in msg) && !('error' in msg)) return false;
        replies.push(msg);
        return replies.length === commands.length;
      },
      () =>
        this.write(
          Buffer.from(
            commands
              .map((c) => requestLine(c.command, c.args === undefined ? undefined : JSON.stringify(c.args)))
              .join(''),
          ),
        ),
      { command: names },
    );
    return replies.map((reply, i) =>
      'error' in reply
        ? { status: 'rejected', reason: agentError(commands[i]!.command, reply) }
        : { status: 'fulfilled', value: reply.return },
    );
  }

  /** Install a waiter, run `start`, and settle on a match, the timeout or close. */
  private wait(
    timeoutMs: number,
    timeoutMessage: (ms: number) => string,
    match: (msg: Record<string, unknown>) => boolean,
    start: () => void,
    details: Record<string, unknown> = {},
  ): Promise<void> {
    if (this.isClosed) {
      return Promise.reject(
        new EngineError('control_closed', `guest agent connection ${this.path} is closed`),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        // A reply may still come: it would be taken for the next command's.
        this.inSync = false;
        reject(
          new EngineError('timeout', timeoutMessage(timeoutMs), { details: { path: this.path, ...details } }),
        );
      }, timeoutMs);
      this.waiter = {
        onMessage: (msg) => {
          if (!match(msg)) return false;
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
          return true;
        },
        reject: (err) => {
          clearTimeout(timer);
          this.waiter = undefined;
          reject(err);
        },
      };
      start();
    });
  }

  private write(data: Buffer): void {
    if (!this.isClosed) this.socket.write(data);
  }

  private shutdown(err: EngineError): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.waiter?.reject(err);
    // Hand the port back once QEMU has seen this connection go (its next client waits for that).
    if (this.hold) {
      const hold = this.hold;
      if (this.socket.closed) hold.giveBack();
      else this.socket.once('close', () => hold.giveBack());
    }
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const nl = this.buffer.indexOf(0x0a);
      const ff = this.buffer.indexOf(SENTINEL);
      if (ff >= 0 && (nl < 0 || ff < nl)) {
        // The agent's sync marker: whatever came before it is stale (maybe half a line).
        this.buffer = this.buffer.subarray(ff + 1);
        continue;
      }
      if (nl < 0) break;
      const line = this.buffer.subarray(0, nl).toString('utf8').trim();
      this.buffer = this.buffer.subarray(nl + 1);
      if (line) this.handleLine(line);
    }
    if (this.buffer.length > MAX_BUFFER) {
      this.logger.warn({ path: this.path, bytes: this.buffer.length }, 'qga: oversized reply');
      this.close();
    }
  }

  private handleLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.logger.debug({ line: line.slice(0, 200) }, 'qga: unparsable line');
      return;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return;
    if (!this.waiter?.onMessage(msg as Record<string, unknown>)) {
      this.logger.debug({ line: line.slice(0, 200) }, 'qga: stale or unexpected reply dropped');
    }
  }
}

function execResult(st: ExecStatus): QgaExecResult {
  const r: QgaExecResult = {
    exitcode: typeof st.exitcode === 'number' ? st.exitcode : null,
    stdout: Buffer.from(st['out-data'] ?? '', 'base64').toString('utf8'),
    stderr: Buffer.from(st['err-data'] ?? '', 'base64').toString('utf8'),
  };
  if (typeof st.signal === 'number') r.signal = st.signal;
  if (st['out-truncated'] === true || st['err-truncated'] === true) r.truncated = true;
  return r;
}

function requestLine(command: string, argsJson: string | undefined): string {
  const args = argsJson === undefined ? '' : `,"arguments":${argsJson}`;
  return `{"execute":${JSON.stringify(command)}${args}}\n`;
}

function openSocket(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new EngineError('timeout', `connecting to ${path} took longer than ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
  });
}

/** The agent's error reply to `command` as an EngineError('guest_agent'). */
function agentError(command: string, reply: Record<string, unknown>): EngineError {
  const e = (reply.error ?? {}) as { class?: unknown; desc?: unknown };
  const cls = typeof e.class === 'string' ? e.class : 'GenericError';
  const desc = typeof e.desc === 'string' ? e.desc : 'unknown error';
  return new EngineError('guest_agent', `guest agent ${command} failed: ${desc}`, {
    details: { command, class: cls, desc },
  });
}
