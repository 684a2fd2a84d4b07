// Part `fork` (issue 14): `banger vm fork` of a running VM → every child answers SSH, for N = 1
// and N = 4 children, against a cold create in the same run. One source VM is created cold and
// kept; each repetition forks it (CLI spawn → exit: the command returns once every child's `ssh
// true` succeeded as itself), reads the operation's steps and the source's pause
// (`source_pause_ms`), then `banger vm exec CHILD -- true` (a fresh login), and deletes the
// children. The baseline, alternating with it: `banger vm create --cold` → SSH ready (CLI).
// Target: fork (N = 1) → child SSH ≤ 0.2× cold create.
import type { VmForkStatusResult } from '../generated/types.gen.ts';
import { ratio, summarize, type Summary } from './stats.ts';
import { timedCreate, type CreateSample } from './warm.ts';
import { banger, BIN, deleteVm, runCmd, type World } from './world.ts';

/** The target: fork → child SSH in at most this fraction of a cold create. */
export const FORK_TARGET_RATIO = 0.2;

export interface ForkRep {
  index: number;
  children: number;
  order: 'cold-first' | 'fork-first';
  cold: CreateSample;
  /** `banger vm fork` spawned → exited (every child answered SSH). */
  fork_ms: number;
  /** How long the source's guest was stopped (the daemon's figure). */
  source_pause_ms: number;
  /** Step → ms, from the fork operation. */
  steps: Record<string, number>;
  /** `banger vm exec CHILD -- true` right after, for the first child. */
  exec_true_ms: number;
  /**
   * Which way the source was saved (its pause_source step says): `ram-file` (device state
   * alone and a copy of its RAM file) or `full-save` (whole migration, then the loader).
   */
  path?: string;
}

export interface ForkSummary {
  reps: number;
  cold_ms: Summary;
  /** Per number of children. */
  by_n: Record<string, { fork_ms: Summary; source_pause_ms: Summary; ratio_vs_cold: number }>;
  target_ratio: number;
  /** N = 1: median(fork) / median(cold) ≤ target. */
  target_met: boolean;
}

export interface ForkResult {
  vm: string;
  summary: ForkSummary;
  reps: ForkRep[];
}

/** Medians and ratios against the target. Pure. */
export function summarizeFork(reps: ForkRep[], target = FORK_TARGET_RATIO): ForkSummary {
  const cold = summarize(reps.map((r) => r.cold.cli));
  const by_n: ForkSummary['by_n'] = {};
  for (const n of [...new Set(reps.map((r) => r.children))].sort()) {
    const mine = reps.filter((r) => r.children === n);
    const fork = summarize(mine.map((r) => r.fork_ms));
    by_n[String(n)] = {
      fork_ms: fork,
      source_pause_ms: summarize(mine.map((r) => r.source_pause_ms)),
      ratio_vs_cold: ratio(fork.median, cold.median),
    };
  }
  const one = by_n['1']?.ratio_vs_cold;
  return {
    reps: reps.length,
    cold_ms: cold,
    by_n,
    target_ratio: target,
    target_met: one !== undefined && Number.isFinite(one) && one <= target,
  };
}

async function forkOnce(
  w: World,
  source: string,
  names: string[],
): Promise<Pick<ForkRep, 'fork_ms' | 'source_pause_ms' | 'steps' | 'exec_true_ms' | 'path'>> {
  const r = await banger(w, ['vm', 'fork', source, ...names.flatMap((n) => ['--name', n]), '--json'], {
    timeoutMs: 900_000,
  });
  if (r.code !== 0)
    throw new Error(
      `banger vm fork ${source} exited ${r.code}: ${(r.stdout + r.stderr).trim().slice(-2000)}`,
    );
  const res = JSON.parse(r.stdout) as VmForkStatusResult;
  const steps: Record<string, number> = {};
  for (const s of res.operation.steps) if (s.duration_ms !== undefined) steps[s.name] = s.duration_ms;
  const t0 = performance.now();
  const ex = await runCmd([BIN('banger'), 'vm', 'exec', names[0]!, '--socket', w.socket, '--', 'true'], {
    timeoutMs: 120_000,
  });
  if (ex.code !== 0)
    throw new Error(`vm exec ${names[0]} -- true after the fork exited ${ex.code}: ${ex.stderr}`);
  const path = /^path ([a-z-]+):/.exec(
    res.operation.steps.find((s) => s.name === 'pause_source')?.detail ?? '',
  )?.[1];
  return {
    fork_ms: Math.round(r.ms),
    source_pause_ms: res.source_pause_ms ?? -1,
    steps,
    exec_true_ms: Math.round(performance.now() - t0),
    ...(path ? { path } : {}),
  };
}

/** The whole part: one kept VM forked into 1 and 4 children, alternating with cold creates. */
export async function runFork(
  w: World,
  opts: { reps: number; tag: string; sizes?: number[] },
): Promise<ForkResult> {
  const name = `${opts.tag}-src`;
  const sizes = opts.sizes ?? [1, 4];
  w.say(
    `  ${name}: a cold create (kept; forked ${opts.reps} times into each of ${sizes.join(', ')} children)`,
  );
  const c = await banger(w, ['vm', 'create', '--name', name, '--cold', '--json'], { timeoutMs: 600_000 });
  if (c.code !== 0) throw new Error(`vm create ${name} exited ${c.code}: ${c.stderr}`);
  try {
    const reps: ForkRep[] = [];
    let i = 0;
    for (const n of sizes) {
      for (let k = 0; k < opts.reps; k++, i++) {
        const order = i % 2 === 0 ? 'cold-first' : 'fork-first';
        const kids = Array.from({ length: n }, (_, j) => `${opts.tag}-${i}-${j}`);
        let cold: CreateSample | undefined;
        if (order === 'cold-first') cold = await timedCreate(w, 'cold', `${opts.tag}-cold-${i}`);
        const f = await forkOnce(w, name, kids);
        for (const kid of kids)
          await deleteVm(w, kid).catch((err: unknown) => w.say(`fork: delete ${kid}: ${String(err)}`));
        cold ??= await timedCreate(w, 'cold', `${opts.tag}-cold-${i}`);
        const rep: ForkRep = { index: i, children: n, order, cold, ...f };
        reps.push(rep);
        w.say(
          `  rep ${i + 1} (N=${n}, ${order}): cold create ${(cold.cli / 1000).toFixed(2)} s; fork → ${n} child(ren) ` +
            `answering SSH ${(f.fork_ms / 1000).toFixed(2)} s (path ${f.path ?? '?'}, source paused ${f.source_pause_ms} ms), then exec true ` +
            `${(f.exec_true_ms / 1000).toFixed(2)} s`,
        );
      }
    }
    return { vm: name, summary: summarizeFork(reps), reps };
  } finally {
    await deleteVm(w, name).catch((err: unknown) => w.say(`fork: delete ${name}: ${String(err)}`));
  }
}

export function forkTable(r: ForkResult): string {
  const s = r.summary;
  const sec = (x: Summary): string =>
    `${(x.median / 1000).toFixed(2)} (${(x.min / 1000).toFixed(2)}–${(x.max / 1000).toFixed(2)})`;
  const line = (c: string[]): string => `| ${c.join(' | ')} |`;
  const rows = [
    line(['measure (CLI spawn → exit)', 'median s (min–max)', 'source paused, median ms', '/ cold']),
    line(['---', '---', '---', '---']),
    line(['`banger vm create --cold` → SSH ready', sec(s.cold_ms), '', '']),
  ];
  for (const [n, b] of Object.entries(s.by_n))
    rows.push(
      line([
        `\`banger vm fork\` → ${n} child(ren) answer SSH`,
        sec(b.fork_ms),
        String(b.source_pause_ms.median),
        String(b.ratio_vs_cold),
      ]),
    );
  rows.push(
    '',
    `${s.reps} repetitions; target (N = 1) ≤ ${s.target_ratio}× cold: ${s.target_met ? 'met' : 'not met'}`,
  );
  return rows.join('\n');
}
