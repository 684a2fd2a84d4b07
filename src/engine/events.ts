// VMM events as typed values: QMP events decoded into VmmEvent, a listener set that survives a
// throwing listener, and the words for why a VMM process ended (from the wait status, QEMU's
// stderr log or the last SHUTDOWN event). Shared by the QEMU, Firecracker and fake drivers.
import { constants } from 'node:os';
import type { ExitInfo, VmmEvent, VmmEventListener } from './driver.ts';
import type { EngineLogger } from './log.ts';
import type { QmpEvent } from './qmp.ts';

/** QMP's event timestamp (seconds + microseconds since the epoch) as ISO, else now. */
export function eventTime(ts: QmpEvent['timestamp'], now: () => Date = () => new Date()): string {
  if (ts && Number.isFinite(ts.seconds) && ts.seconds > 0) {
    return new Date(ts.seconds * 1000 + Math.floor((ts.microseconds ?? 0) / 1000)).toISOString();
  }
  return now().toISOString();
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** One QMP event -> VmmEvent, or null for events banger does not act on. */
export function decodeQmpEvent(ev: QmpEvent, now?: () => Date): VmmEvent | null {
  const at = eventTime(ev.timestamp, now);
  const d = ev.data ?? {};
  switch (ev.event) {
    case 'STOP':
      return { kind: 'stop', at };
    case 'RESUME':
      return { kind: 'resume', at };
    case 'SHUTDOWN': {
      const reason = str(d.reason);
      return { kind: 'shutdown', at, guest: d.guest === true, ...(reason !== undefined ? { reason } : {}) };
    }
    case 'BLOCK_IO_ERROR': {
      const action =
        d.action === 'stop' || d.action === 'report' || d.action === 'ignore' ? d.action : 'report';
      const nodeName = str(d['node-name']);
      const reason = str(d.reason);
      return {
        kind: 'block_io_error',
        at,
        device: str(d.device) ?? '',
        ...(nodeName !== undefined ? { nodeName } : {}),
        operation: d.operation === 'read' ? 'read' : 'write',
        action,
        // QEMU sets nospace only for ENOSPC; older ones omit it, but the reason text says so.
        nospace: d.nospace === true || (reason !== undefined && /no space left/i.test(reason)),
        ...(reason !== undefined ? { reason } : {}),
      };
    }
    default:
      return null;
  }
}

/**
 * The index into VmLaunchSpec.disks of a block_io_error's `device`: the QEMU driver names the
 * drives disk0, disk1, ... in spec order. Null for any other name.
 */
export function diskIndexOf(device: string): number | null {
  const m = /^disk(\d+)$/.exec(device);
  return m ? Number(m[1]) : null;
}

/** A set of event listeners; one that throws is logged and the rest still run. */
export class EventHub {
  private readonly listeners = new Set<VmmEventListener>();
  private readonly logger: EngineLogger;

  constructor(logger: EngineLogger) {
    this.logger = logger;
  }

  get size(): number {
    return this.listeners.size;
  }

  add(fn: VmmEventListener): () => void {
    // A wrapper per subscription: the same function subscribed twice is unsubscribed separately.
    const entry: VmmEventListener = (e) => fn(e);
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  emit(event: VmmEvent): void {
    for (const fn of [...this.listeners]) {
      try {
        fn(event);
      } catch (err) {
        this.logger.warn({ err, event: event.kind }, 'VMM event listener threw');
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }
}

function signalName(n: number): NodeJS.Signals | null {
  for (const [name, num] of Object.entries(constants.signals)) if (num === n) return name as NodeJS.Signals;
  return null;
}

/**
 * QEMU's "terminating on signal 15 from pid 812 (/usr/bin/kill)" (the last one in `log`): QEMU
 * catches SIGTERM/SIGINT/SIGHUP, logs this and exits 0, so the wait status alone hides it.
 */
export function terminatingSignal(log: string): { signal: NodeJS.Signals | null; reason: string } | null {
  const all = [...log.matchAll(/terminating on signal (\d+)(?: from pid (\d+)(?: \(([^)\n]*)\))?)?/g)];
  const m = all.at(-1);
  if (!m) return null;
  const num = Number(m[1]);
  const signal = signalName(num);
  let reason = `terminated by signal ${num}${signal ? ` (${signal})` : ''}`;
  if (m[2] !== undefined) reason += ` from pid ${m[2]}${m[3] ? ` (${m[3]})` : ''}`;
  return { signal, reason };
}

const SHUTDOWN_WORDS: Record<string, string> = {
  'guest-shutdown': 'the guest powered off',
  'guest-reset': 'the guest rebooted (the VMM exits on reboot)',
  'guest-panic': 'the guest kernel panicked',
  'host-qmp-quit': 'quit through QMP',
  'host-signal': 'terminated by a signal',
};

export interface ExitContext {
  /** The VMM's stderr written during this handle's life (QEMU's error_report lines). */
  stderr?: string;
  /** The last SHUTDOWN event seen before the exit. */
  shutdown?: { guest: boolean; reason?: string };
}

/** The wait status (or nothing, for a reattached VMM) plus what the logs say -> ExitInfo with reason. */
export function describeExit(raw: ExitInfo, ctx: ExitContext = {}): ExitInfo {
  const { code } = raw;
  if (raw.signal) return { code, signal: raw.signal, reason: `killed by signal ${raw.signal}` };
  const term = ctx.stderr ? terminatingSignal(ctx.stderr) : null;
  if (term) return { code, signal: code === null ? term.signal : null, reason: term.reason };
  if (ctx.shutdown) {
    const r = ctx.shutdown.reason;
    const words = (r && SHUTDOWN_WORDS[r]) ?? `${ctx.shutdown.guest ? 'the guest' : 'the host'} shut it down`;
    return { code, signal: null, reason: r && !SHUTDOWN_WORDS[r] ? `${words} (${r})` : words };
  }
  if (code !== null) {
    const last = (ctx.stderr ?? '')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0)
      .at(-1);
    return {
      code,
      signal: null,
      reason: `exited with code ${code}${code !== 0 && last ? `: ${last}` : ''}`,
    };
  }
  return { code, signal: null, reason: 'unknown' };
}

/**
 * Check `isAlive` every `intervalMs` on an unref'd timer (it never keeps the process alive) and
 * call `onDead` once when it turns false. Returns the stop function.
 */
export function pollLiveness(isAlive: () => boolean, onDead: () => void, intervalMs = 500): () => void {
  let stopped = false;
  const timer = setInterval(() => {
    if (stopped || isAlive()) return;
    stop();
    onDead();
  }, intervalMs);
  timer.unref();
  const stop = (): void => {
    stopped = true;
    clearInterval(timer);
  };
  return stop;
}
