// Keeps the host end of a VM's guest-agent port connected while nobody is using it.
//
// Why: qemu-ga 7.2 in the guest reads its virtio-serial port; with no host client on the chardev
// the read returns EOF at once and the agent sleeps 100 ms and tries again (QGA_SLEEP_TIME), ten
// wakeups a second for the VM's whole life. Under TCG every guest wakeup costs the host real CPU:
// ≈1 % of a core per idle VM, half of what was left of its idle cost. With a host client
// connected, the read blocks in the kernel and the agent costs nothing.
//
// QEMU serves one client per chardev, so the hold steps aside for real users: QgaClient.connect()
// takes the held, already open connection (no reconnect, so the guest sees no hang-up) and gives
// it back by closing it, after which the hold connects again. Replies meant for an earlier client
// that reach the hold are dropped; a client syncs (guest-sync-delimited) before using the stream.
import { createConnection, type Socket } from 'node:net';
import { silentLogger, type EngineLogger } from './log.ts';

/** The live holds, by socket path: QgaClient.connect() looks here first. */
const holds = new Map<string, QgaHold>();

/** First retry after the held connection failed or dropped; doubled per failure up to the max. */
const RETRY_BASE_MS = 100;
const RETRY_MAX_MS = 5_000;
/** Failures in a row after which the hold gives up (the VMM is gone, or never listened). */
const MAX_FAILURES = 12;

export class QgaHold {
  readonly path: string;
  private readonly logger: EngineLogger;
  private socket: Socket | undefined;
  private connected = false;
  private lent = 0;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  private constructor(path: string, logger: EngineLogger) {
    this.path = path;
    this.logger = logger;
  }

  /** Start holding `path` (replacing any earlier hold of it). */
  static start(path: string, logger: EngineLogger = silentLogger): QgaHold {
    holds.get(path)?.stop();
    const hold = new QgaHold(path, logger);
    holds.set(path, hold);
    hold.open();
    return hold;
  }

  /** The live hold of `path`, if any. */
  static of(path: string): QgaHold | undefined {
    return holds.get(path);
  }

  /** Connected right now (for tests and logs). */
  get holding(): boolean {
    return this.connected;
  }

  /**
   * A client wants the port: stop holding until giveBack(). Returns the held connection when
   * there is an open one (the caller owns it from now on), else undefined (the caller connects).
   */
  take(): Socket | undefined {
    this.lent++;
    this.clearTimer();
    const s = this.socket;
    this.socket = undefined;
    if (!s) return undefined;
    s.removeAllListeners('data');
    s.removeAllListeners('close');
    s.removeAllListeners('connect');
    s.removeAllListeners('error');
    if (!this.connected || s.destroyed) {
      s.destroy();
      this.connected = false;
      return undefined;
    }
    this.connected = false;
    s.ref();
    return s;
  }

  /** The client that took the port is done with it (its connection is closed). */
  giveBack(): void {
    if (this.lent > 0) this.lent--;
    if (this.lent === 0) {
      this.failures = 0;
      this.open();
    }
  }

  /** The VMM is gone or the daemon lets go of it: close and forget. Idempotent. */
  stop(): void {
    this.stopped = true;
    this.clearTimer();
    this.socket?.destroy();
    this.socket = undefined;
    this.connected = false;
    if (holds.get(this.path) === this) holds.delete(this.path);
  }

  private open(): void {
    if (this.stopped || this.lent > 0 || this.socket) return;
    const s = createConnection({ path: this.path });
    this.socket = s;
    s.unref(); // never keeps the daemon alive on its own
    s.on('connect', () => {
      this.connected = true;
      this.failures = 0;
    });
    // Replies to an earlier client's commands: nobody wants them.
    s.on('data', () => undefined);
    s.on('error', (err) => this.logger.debug({ err, path: this.path }, 'qga hold: socket error'));
    s.on('close', () => {
      if (this.socket !== s) return;
      this.socket = undefined;
      this.connected = false;
      this.retry();
    });
  }

  private retry(): void {
    if (this.stopped || this.lent > 0) return;
    this.failures++;
    if (this.failures > MAX_FAILURES) {
      this.logger.debug({ path: this.path }, 'qga hold: giving up');
      this.stop();
      return;
    }
    const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (this.failures - 1));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.open();
    }, delay);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
