// Timestamps from outside the guest: the first time a pattern appears in a growing file (the
// serial console log), and the first time a new VM directory appears under the state dir.
// Polling every few ms is cheap (a stat and a read of the new bytes) and needs no daemon support.
import { open, readdir } from 'node:fs/promises';

export interface FileWatch {
  /** performance.now() when `pattern` first appeared, or undefined. */
  readonly seenAt: Map<string, number>;
  stop(): void;
}

/**
 * Watch `path` (which may not exist yet) for each pattern; records when each was first seen.
 * Only bytes appended after `fromOffset` count (banger appends to a VM's log across boots).
 */
export function watchFile(
  path: () => string | undefined,
  patterns: Record<string, RegExp>,
  opts: { intervalMs?: number; fromOffset?: number } = {},
): FileWatch {
  const seenAt = new Map<string, number>();
  let offset = opts.fromOffset ?? 0;
  let carry = '';
  let stopped = false;
  const tick = async (): Promise<void> => {
    const p = path();
    if (!p) return;
    const fh = await open(p, 'r').catch(() => undefined);
    if (!fh) return;
    try {
      const buf = Buffer.alloc(64 * 1024);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
        if (bytesRead === 0) break;
        offset += bytesRead;
        // Keep the tail of the last chunk so a line split across reads still matches.
        const text = carry + buf.subarray(0, bytesRead).toString('latin1');
        const now = performance.now();
        for (const [name, re] of Object.entries(patterns)) {
          if (!seenAt.has(name) && re.test(text)) seenAt.set(name, now);
        }
        carry = text.slice(-256);
      }
    } finally {
      await fh.close();
    }
  };
  const intervalMs = opts.intervalMs ?? 10;
  const loop = async (): Promise<void> => {
    while (!stopped) {
      await tick().catch(() => undefined);
      if (Object.keys(patterns).every((k) => seenAt.has(k))) return;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  };
  void loop();
  return {
    seenAt,
    stop: () => {
      stopped = true;
    },
  };
}

/** Resolves with the first directory entry of `dir` not in `before` (polling), or undefined at stop. */
export function watchNewEntry(
  dir: string,
  before: Set<string>,
  opts: { intervalMs?: number; signal?: AbortSignal } = {},
): Promise<string | undefined> {
  return (async () => {
    while (!opts.signal?.aborted) {
      const names = await readdir(dir).catch(() => [] as string[]);
      const fresh = names.find((n) => !before.has(n));
      if (fresh) return fresh;
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 10));
    }
    return undefined;
  })();
}
