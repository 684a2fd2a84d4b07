// Egress denials as the kernel logs them: the egress chains end with `log prefix
// "banger-egress <tap> "` before their reject, and the helper (root) reads those lines from
// /dev/kmsg into a small ring the daemon polls with priv.egress_events. /dev/kmsg is opened
// non-blocking and drained on a timer, so no libuv thread sits in a blocking read.
//
// Pitfall: in a network namespace other than the initial one, netfilter logging is off unless
// sysctl net.netfilter.nf_log_all_netns=1 is set in the initial namespace (the smoke tests run
// the helper in a namespace; on a normal host the helper runs in the initial one).
import { constants, openSync, closeSync, readSync } from 'node:fs';
import { Ring } from '../util/ring.ts';
import { isBangerTap } from './names.ts';
import { EGRESS_LOG_PREFIX } from './egress.ts';

export interface EgressLogEvent {
  /** The ring's own sequence number (the cursor). */
  seq: number;
  time: string;
  tap: string;
  src: string;
  dst: string;
  proto: string;
  sport?: number;
  dport?: number;
}

/** Parse one /dev/kmsg record ("pri,seq,usec,flags;message\n KEY=v..."). Pure. */
export function parseKmsgRecord(rec: string): Omit<EgressLogEvent, 'seq' | 'time'> | undefined {
  const semi = rec.indexOf(';');
  if (semi < 0) return undefined;
  const msg = rec.slice(semi + 1).split('\n')[0] ?? '';
  const at = msg.indexOf(EGRESS_LOG_PREFIX);
  if (at < 0) return undefined;
  const rest = msg.slice(at + EGRESS_LOG_PREFIX.length);
  const tap = rest.split(' ')[0] ?? '';
  if (!isBangerTap(tap)) return undefined;
  const kv = new Map<string, string>();
  for (const tok of rest.split(' ')) {
    const eq = tok.indexOf('=');
    if (eq > 0) kv.set(tok.slice(0, eq), tok.slice(eq + 1));
  }
  const src = kv.get('SRC');
  const dst = kv.get('DST');
  if (!src || !dst) return undefined;
  const ev: Omit<EgressLogEvent, 'seq' | 'time'> = {
    tap,
    src,
    dst,
    proto: (kv.get('PROTO') ?? 'unknown').toLowerCase(),
  };
  const port = (k: string): number | undefined => {
    const v = Number(kv.get(k));
    return Number.isInteger(v) && v > 0 && v < 65536 ? v : undefined;
  };
  const sp = port('SPT');
  const dp = port('DPT');
  if (sp !== undefined) ev.sport = sp;
  if (dp !== undefined) ev.dport = dp;
  return ev;
}

export interface EgressLogSource {
  /** Events after cursor (all kept ones for 0), and the cursor to pass next time. */
  since(cursor: number, limit?: number): { events: EgressLogEvent[]; cursor: number; dropped: boolean };
  close(): void;
}

/** The ring: the last `size` events; `push` is how the reader (or a test) adds one. */
export class EgressLogRing implements EgressLogSource {
  private readonly ring: Ring<EgressLogEvent>;
  private seq = 0;

  constructor(size = 1000) {
    this.ring = new Ring(size);
  }

  push(ev: Omit<EgressLogEvent, 'seq' | 'time'>, time = new Date()): void {
    this.seq += 1;
    this.ring.push({ seq: this.seq, time: time.toISOString(), ...ev });
  }

  since(cursor: number, limit = 500): { events: EgressLogEvent[]; cursor: number; dropped: boolean } {
    const first = this.ring.first()?.seq ?? this.seq + 1;
    // A cursor from a previous helper run (larger than ours) starts over.
    const from = cursor > this.seq ? 0 : cursor;
    // Sequence numbers are consecutive: the events after `from` are the ring's last seq - from.
    const events = this.ring.last(Math.max(0, this.seq - from)).slice(0, limit);
    const last = events.at(-1)?.seq ?? Math.max(from, this.seq);
    return { events, cursor: last, dropped: from + 1 < first && this.ring.length > 0 };
  }

  close(): void {}
}

/**
 * Follows /dev/kmsg from now on (older records are skipped by their timestamp). Never throws:
 * when /dev/kmsg cannot be read, `error` says why and the ring stays empty.
 */
export class KmsgEgressLog extends EgressLogRing {
  private fd: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly startUs: number;
  readonly error: string | undefined;

  constructor(opts: { path?: string; intervalMs?: number; size?: number } = {}) {
    super(opts.size);
    this.startUs = uptimeUs();
    try {
      this.fd = openSync(opts.path ?? '/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (err) {
      this.error = (err as Error).message;
      return;
    }
    this.timer = setInterval(() => this.drain(), opts.intervalMs ?? 500);
    this.timer.unref();
  }

  /** Read every record available now. */
  drain(): void {
    if (this.fd === undefined) return;
    const buf = Buffer.alloc(8192);
    for (let i = 0; i < 10_000; i++) {
      let n: number;
      try {
        n = readSync(this.fd, buf, 0, buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // records were overwritten before we read them: go on
        return; // EAGAIN: nothing more now
      }
      if (n <= 0) return;
      const rec = buf.toString('utf8', 0, n);
      const usec = Number(rec.split(';')[0]?.split(',')[2]);
      if (Number.isFinite(usec) && usec < this.startUs) continue;
      const ev = parseKmsgRecord(rec);
      if (ev) this.push(ev);
    }
  }

  override since(
    cursor: number,
    limit?: number,
  ): { events: EgressLogEvent[]; cursor: number; dropped: boolean } {
    this.drain();
    return super.since(cursor, limit);
  }

  override close(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function uptimeUs(): number {
  // process.hrtime is CLOCK_MONOTONIC, the clock /dev/kmsg stamps records with.
  return Number(process.hrtime.bigint() / 1000n);
}
