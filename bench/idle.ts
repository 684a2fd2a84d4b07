// Part `idle`: what one idle VM costs its host, measured alone (no other VM of the run is up).
// A cold `banger vm create` through the real CLI, then `settleMs` of nothing after it returned
// (SSH answered), then `samples` windows of `windowMs`: the VMM's CPU time over each window
// (utime + stime from /proc/PID/stat) in % of one core, and its Rss and Pss after it
// (/proc/PID/smaps_rollup; Pss counts shared pages by share). Then a memory burst in the guest
// (dd with a `burstMib` buffer, freed when dd exits) and Rss again `settleMs` later: what free
// page reporting gives back to the host.
import { readFile } from 'node:fs/promises';
import { mean, round, summarize, type Summary } from './stats.ts';
import { banger, BIN, deleteVm, listVms, runCmd, sleep, type World } from './world.ts';

/** The target for an idle VMM, % of one core. */
export const IDLE_CPU_TARGET_PCT = 2;

export interface MemSample {
  rss_mib: number;
  pss_mib: number;
}

export interface IdleResult {
  vm: string;
  settle_s: number;
  window_s: number;
  /** CPU of the VMM per window, % of one core. */
  cpu_pct: Summary;
  cpu_pct_samples: number[];
  cpu_pct_mean: number;
  rss_mib: Summary;
  pss_mib: Summary;
  /** Memory after a burst in the guest (dd's buffer), sampled right after and `after_s` later. */
  burst?: { mib: number; rss_right_after_mib: number; after_s: number } & MemSample;
  target_cpu_pct: number;
  meets_target: boolean;
}

const KiB_PER_MiB = 1024;

/** utime + stime of a /proc/PID/stat line, in clock ticks (fields 14 and 15; the name may hold spaces). */
export function cpuTicks(stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error('unreadable /proc/PID/stat');
  return utime + stime;
}

/** Rss and Pss (MiB, one decimal) from /proc/PID/smaps_rollup. */
export function parseSmapsRollup(text: string): MemSample {
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!m) throw new Error(`smaps_rollup has no ${key} line`);
    return Number(m[1]);
  };
  return { rss_mib: round(kb('Rss') / KiB_PER_MiB, 1), pss_mib: round(kb('Pss') / KiB_PER_MiB, 1) };
}

/** CPU use over a window in % of one core; ticks are USER_HZ (100 a second on Linux). */
export function cpuPercent(ticksBefore: number, ticksAfter: number, seconds: number, hz = 100): number {
  return round((100 * (ticksAfter - ticksBefore)) / hz / seconds, 2);
}

async function readTicks(pid: number): Promise<number> {
  return cpuTicks(await readFile(`/proc/${pid}/stat`, 'utf8'));
}

async function readMem(pid: number): Promise<MemSample> {
  return parseSmapsRollup(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8'));
}

export async function runIdle(
  w: World,
  opts: { settleMs: number; windowMs: number; samples: number; burstMib: number; name?: string },
): Promise<IdleResult> {
  const name = opts.name ?? 'idle-0';
  const others = (await listVms(w)).filter((v) => v.state === 'running');
  if (others.length > 0)
    throw new Error(`idle is measured alone; running: ${others.map((v) => v.name).join(', ')}`);
  const created = await banger(w, ['vm', 'create', '--name', name, '--cold', '--json'], {
    timeoutMs: 900_000,
  });
  if (created.code !== 0) {
    throw new Error(
      `banger vm create ${name} exited ${created.code}: ${(created.stdout + created.stderr).trim().slice(-2000)}`,
    );
  }
  try {
    const vm = (await listVms(w)).find((v) => v.name === name);
    if (!vm?.pid) throw new Error(`${name} has no VMM pid after create`);
    const pid = vm.pid;
    w.say(
      `idle: ${name} (VMM ${pid}) settles ${opts.settleMs / 1000} s, then ${opts.samples} × ${opts.windowMs / 1000} s`,
    );
    await sleep(opts.settleMs);
    const cpu: number[] = [];
    const mem: MemSample[] = [];
    for (let i = 0; i < opts.samples; i++) {
      const t0 = performance.now();
      const before = await readTicks(pid);
      await sleep(opts.windowMs);
      const after = await readTicks(pid);
      cpu.push(cpuPercent(before, after, (performance.now() - t0) / 1000));
      mem.push(await readMem(pid));
      w.say(`idle: window ${i + 1}: ${cpu.at(-1)} % of a core, Rss ${mem.at(-1)!.rss_mib} MiB`);
    }
    const result: IdleResult = {
      vm: name,
      settle_s: opts.settleMs / 1000,
      window_s: opts.windowMs / 1000,
      cpu_pct: summarize(cpu),
      cpu_pct_samples: cpu,
      cpu_pct_mean: round(mean(cpu), 2),
      rss_mib: summarize(mem.map((m) => m.rss_mib)),
      pss_mib: summarize(mem.map((m) => m.pss_mib)),
      target_cpu_pct: IDLE_CPU_TARGET_PCT,
      meets_target: summarize(cpu).median <= IDLE_CPU_TARGET_PCT,
    };
    if (opts.burstMib > 0) {
      // `--socket` before `--`: everything after it is the guest's command line.
      const dd = ['dd', 'if=/dev/zero', 'of=/dev/null', `bs=${opts.burstMib}M`, 'count=1'];
      const r = await runCmd([BIN('banger'), 'vm', 'exec', name, '--socket', w.socket, '--', ...dd], {
        timeoutMs: 300_000,
      });
      if (r.code !== 0)
        throw new Error(`the memory burst failed (exit ${r.code}): ${r.stderr.trim().slice(-500)}`);
      const rightAfter = await readMem(pid);
      await sleep(opts.settleMs);
      result.burst = {
        mib: opts.burstMib,
        rss_right_after_mib: rightAfter.rss_mib,
        after_s: opts.settleMs / 1000,
        ...(await readMem(pid)),
      };
    }
    return result;
  } finally {
    await deleteVm(w, name).catch((err: unknown) => w.say(`idle: delete ${name}: ${String(err)}`));
  }
}

export function idleTable(r: IdleResult): string {
  const s = (x: Summary, unit: string): string => `${x.median} ${unit} (${x.min}–${x.max})`;
  const rows = [
    [`VMM CPU, % of one core (${r.cpu_pct.n} × ${r.window_s} s)`, s(r.cpu_pct, '%')],
    ['VMM Rss', s(r.rss_mib, 'MiB')],
    ['VMM Pss', s(r.pss_mib, 'MiB')],
  ];
  if (r.burst) {
    rows.push([
      `Rss after a ${r.burst.mib} MiB burst in the guest: right after, ${r.burst.after_s} s later`,
      `${r.burst.rss_right_after_mib} → ${r.burst.rss_mib} MiB`,
    ]);
  }
  const line = (c: string[]): string => `| ${c.join(' | ')} |`;
  return [
    line(['one idle VM, alone', 'median (min–max)']),
    line(['---', '---']),
    ...rows.map(line),
    '',
    `settled ${r.settle_s} s after create returned; target ≤ ${r.target_cpu_pct} % of a core: ${r.meets_target ? 'met' : 'not met'}`,
  ].join('\n');
}
