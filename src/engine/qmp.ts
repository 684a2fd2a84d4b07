// A QMP client over QEMU's unix socket: greeting, capability negotiation, commands matched to
// replies by id, asynchronous events, per-command timeouts and an idempotent close.
//
// QEMU serves one client per monitor at a time: a second connection is accepted by the kernel
// but gets no greeting until the first one closes. So the greeting has its own timeout, and
// whoever holds a client must close() it before another party (a restarted daemon) can talk.
import { createConnection, type Socket } from 'node:net';
import { EngineError, errnoCode } from './errors.ts';
import { silentLogger, type EngineLogger } from './log.ts';

export interface QmpGreeting {
  QMP: {
    version: { qemu: { major: number; minor: number; micro: number }; package: string };
    capabilities: string[];
  };
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** The subset of QEMU's RunState reported by query-status. */
export interface QmpStatusInfo {
  status: string;
  running: boolean;
  singlestep?: boolean;
}

export interface QmpConnectOptions {
  /** Connect + greeting + capabilities must finish in this time. Default 5 s. */
  timeoutMs?: number;
  /** Default per-command timeout. Default 10 s. */
  commandTimeoutMs?: number;
  logger?: EngineLogger;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type EventListener = (ev: QmpEvent) => void;

export class QmpClient {
  readonly path: string;
  readonly greeting: QmpGreeting;
  private readonly socket: Socket;
  private readonly logger: EngineLogger;
  private readonly commandTimeoutMs: number;
  private readonly pending = new Map<string, Pending>();
  private readonly eventListeners = new Set<{ name: string | undefined; fn: EventListener }>();
  private readonly closeListeners = new Set<() => void>();
  private nextId = 1;
  private buffer = '';
  private isClosed = false;

  private constructor(
    path: string,
    socket: Socket,
    greeting: QmpGreeting,
    buffered: string,
    opts: QmpConnectOptions,
  ) {
    this.path = path;
    this.socket = socket;
    this.greeting = greeting;
    this.logger = opts.logger ?? silentLogger;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 10_000;
    this.buffer = buffered;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () =>
      this.shutdown(new EngineError('control_closed', `QMP connection ${path} closed`)),
    );
    socket.on('error', (err) => this.logger.debug({ err, path }, 'qmp socket error'));
    this.drain();
  }

  /** Connect, read the greeting and negotiate capabilities. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5_000;
    const deadline = Date.now() + timeoutMs;
    const { socket, greeting, rest } = await openAndGreet(path, timeoutMs);
    const client = new QmpClient(path, socket, greeting, rest, opts);
    try {
      await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(1, deadline - Date.now()) });
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /**
   * Let the process exit while only this connection is open (a daemon's long-lived event
   * connection). A pending command still holds the process through its timeout timer.
   */
  unref(): this {
    this.socket.unref();
    return this;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get qemuVersion(): string {
    const v = this.greeting.QMP.version.qemu;
    return `${v.major}.${v.minor}.${v.micro}`;
  }

  /** Run a command; resolves with its `return` value, rejects with EngineError('qmp_error'). */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.isClosed) {
      return Promise.reject(new EngineError('control_closed', `QMP connection ${this.path} is closed`));
    }
    const id = `banger-${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new EngineError('timeout', `QMP command ${command} got no reply in ${timeoutMs} ms`, {
            details: { command },
          }),
        );
      }, timeoutMs);
      this.pending.set(id, {
        command,
        resolve: (v) => resolve(v as T),
        reject,
        timer,
      });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.socket.write(JSON.stringify(msg) + '\n');
    });
  }

  queryStatus(): Promise<QmpStatusInfo> {
    return this.execute<QmpStatusInfo>('query-status');
  }

  /** Listen to events (all, or only `name`). Returns an unsubscribe function. */
  onEvent(fn: EventListener, name?: string): () => void {
    const entry = { name, fn };
    this.eventListeners.add(entry);
    return () => this.eventListeners.delete(entry);
  }

  /** Resolves with the next event `name` (matching `predicate`), or rejects on timeout/close. */
  waitForEvent(name: string, timeoutMs: number, predicate?: (ev: QmpEvent) => boolean): Promise<QmpEvent> {
    return new Promise<QmpEvent>((resolve, reject) => {
      const finish = (fn: () => void): void => {
        clearTimeout(timer);
        off();
        offClose();
        fn();
      };
      const timer = setTimeout(
        () => finish(() => reject(new EngineError('timeout', `no QMP event ${name} in ${timeoutMs} ms`))),
        timeoutMs,
      );
      const off = this.onEvent((ev) => {
        if (!predicate || predicate(ev)) finish(() => resolve(ev));
      }, name);
      const offClose = this.onClose(() =>
        finish(() => reject(new EngineError('control_closed', `QMP closed while waiting for ${name}`))),
      );
    });
  }

  onClose(fn: () => void): () => void {
    if (this.isClosed) {
      queueMicrotask(fn);
      return () => {};
    }
    this.closeListeners.add(fn);
    return () => this.closeListeners.delete(fn);
  }

  /** Idempotent. Pending commands reject with EngineError('control_closed'). */
  close(): void {
    this.shutdown(new EngineError('control_closed', `QMP connection ${this.path} was closed`));
    this.socket.destroy();
  }

  private shutdown(err: EngineError): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new EngineError(err.code, `${err.message} (pending: ${p.command})`));
    }
    for (const fn of this.closeListeners) {
      try {
        fn();
      } catch (e) {
        this.logger.warn({ err: e }, 'qmp close listener threw');
      }
    }
    this.closeListeners.clear();
  }

  private onData(chunk: Buffer): void {
    this.buffer += chunk.toString('utf8');
    this.drain();
  }

  private drain(): void {
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.handleLine(line);
    }
  }

  private handleLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.logger.warn({ line: line.slice(0, 200) }, 'qmp: unparsable line');
      return;
    }
    if (typeof msg !== 'object' || msg === null) return;
    const m = msg as Record<string, unknown>;
    if (typeof m.event === 'string') {
      const ev = m as unknown as QmpEvent;
      for (const l of this.eventListeners) {
        if (l.name !== undefined && l.name !== ev.event) continue;
        try {
          l.fn(ev);
        } catch (err) {
          this.logger.warn({ err, event: ev.event }, 'qmp event listener threw');
        }
      }
      return;
    }
    const id = typeof m.id === 'string' ? m.id : undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) {
      // A reply to a command that already timed out, or not ours.
      this.logger.debug({ id }, 'qmp: unmatched reply');
      return;
    }
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in m) {
      const e = (m.error ?? {}) as { class?: unknown; desc?: unknown };
      const cls = typeof e.class === 'string' ? e.class : 'GenericError';
      const desc = typeof e.desc === 'string' ? e.desc : 'unknown error';
      p.reject(
        new EngineError('qmp_error', `QMP ${p.command} failed: ${desc}`, {
          details: { command: p.command, class: cls, desc },
        }),
      );
    } else {
      p.resolve(m.return);
    }
  }
}

function openAndGreet(
  path: string,
  timeoutMs: number,
): Promise<{ socket: Socket; greeting: QmpGreeting; rest: string }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    let buf = '';
    let done = false;
    const fail = (err: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () =>
        fail(
          new EngineError(
            'timeout',
            `no QMP greeting on ${path} in ${timeoutMs} ms (is another client connected?)`,
            {
              details: { path },
            },
          ),
        ),
      timeoutMs,
    );
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let greeting: unknown;
      try {
        greeting = JSON.parse(buf.slice(0, nl));
      } catch {
        fail(new EngineError('start_failed', `bad QMP greeting on ${path}`));
        return;
      }
      if (typeof greeting !== 'object' || greeting === null || !('QMP' in greeting)) {
        fail(new EngineError('start_failed', `not a QMP greeting on ${path}`));
        return;
      }
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      resolve({ socket, greeting: greeting as QmpGreeting, rest: buf.slice(nl + 1) });
    };
    const onError = (err: Error): void => fail(err);
    const onClose = (): void =>
      fail(new EngineError('control_closed', `QMP socket ${path} closed before greeting`));
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}

/** True for connect errors that mean "not listening yet" (worth retrying while a VMM starts). */
export function isNotListening(err: unknown): boolean {
  const c = errnoCode(err);
  return c === 'ENOENT' || c === 'ECONNREFUSED';
}
