// Idle pause, the pure part: the duration text of `idle_pause_after` ("30m", "1h30m"; "" or "0"
// is off) and the decision the daemon's idle tracker (src/daemon/idle.ts) takes for one VM on
// each tick. No clock, no I/O: the tracker passes `now` in, so tests run on a fake clock.

/** The shortest idle_pause_after: below it a VM would be paused between two keystrokes' RPCs. */
export const MIN_IDLE_MS = 10_000;
/** The longest (30 days): beyond it the setting is a typo more likely than a wish. */
export const MAX_IDLE_MS = 30 * 24 * 3600_000;

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 } as const;

export class IdleDurationError extends Error {}

/**
 * `idle_pause_after` as milliseconds, 0 for off ("" or "0"). Accepts one or more
 * number+unit parts in the order d, h, m, s: "20s", "30m", "1h30m", "2d". Throws
 * IdleDurationError with what is accepted.
 */
export function parseIdleDuration(text: string): number {
  const t = text.trim();
  if (t === '' || t === '0') return 0;
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(t);
  if (!m || t === '' || m.slice(1).every((p) => p === undefined))
    throw new IdleDurationError(
      `"${text}" is not a duration: give a number with a unit (s, m, h, d), e.g. 30m, 1h30m or 20s; "0" or "" turns idle pause off`,
    );
  const [d, h, min, s] = m.slice(1).map((p) => Number(p ?? 0)) as [number, number, number, number];
  const ms = d * UNIT_MS.d + h * UNIT_MS.h + min * UNIT_MS.m + s * UNIT_MS.s;
  if (ms === 0) return 0;
  if (ms < MIN_IDLE_MS || ms > MAX_IDLE_MS)
    throw new IdleDurationError(`"${text}" is out of range: idle pause takes from 10s to 30d (or 0 for off)`);
  return ms;
}

/** Milliseconds as the shortest duration text parseIdleDuration reads back ("1h30m", "20s"). */
export function formatIdleDuration(ms: number): string {
  if (ms <= 0) return '0';
  let left = Math.round(ms / 1000) * 1000;
  let out = '';
  for (const [unit, size] of Object.entries(UNIT_MS)) {
    const n = Math.floor(left / size);
    if (n > 0) out += `${n}${unit}`;
    left -= n * size;
  }
  return out || '0';
}

/** What the tracker knows about one VM on a tick. */
export interface IdleFacts {
  /** The VM's state is `running` and its VMM handle is there. */
  running: boolean;
  /** The lifecycle lock's holder (creating, forking, exporting its workspace, …), if any. */
  busy: string | undefined;
  /** An SSH connection to the VM was seen from the host side on this tick. */
  session: boolean;
  /** This daemon is already pausing it. */
  pausing: boolean;
  /** The effective idle_pause_after in ms (0: off). */
  afterMs: number;
  /** The last use the tracker knows of (epoch ms). */
  lastUsedMs: number;
  now: number;
}

export type IdleDecision =
  | { action: 'off' }
  | { action: 'skip'; why: string }
  | { action: 'used' }
  | { action: 'wait'; dueInMs: number }
  | { action: 'pause'; idleMs: number };

/**
 * One VM, one tick. Only a running VM nobody holds is ever paused; a busy one or one with an
 * SSH session counts as used now (so the window starts again when the work or session ends).
 */
export function idleDecision(f: IdleFacts): IdleDecision {
  if (f.afterMs <= 0) return { action: 'off' };
  if (!f.running) return { action: 'skip', why: 'not running' };
  if (f.pausing) return { action: 'skip', why: 'being paused' };
  if (f.busy !== undefined || f.session) return { action: 'used' };
  const idleMs = f.now - f.lastUsedMs;
  if (idleMs >= f.afterMs) return { action: 'pause', idleMs };
  return { action: 'wait', dueInMs: f.afterMs - idleMs };
}

/** The last use of a VM known from its record: the newest of last use, last boot, creation. */
export function lastUseOf(vm: {
  lastUsedAt?: string | null;
  lastStartedAt: string | null;
  createdAt: string;
}): number {
  return Math.max(
    ...[vm.lastUsedAt, vm.lastStartedAt, vm.createdAt].map((t) => (t ? Date.parse(t) : 0) || 0),
  );
}
