// Part `resume` (issue 14): a VM paused to disk and resumed, against a cold create in the same
// run. One VM is created cold, paused and kept; each repetition resumes it (`banger vm resume`:
// the same VMM configuration restores the save, the guest clock is corrected, and the command
// returns once the daemon's `ssh true` succeeded), runs `banger vm exec NAME -- true` (a fresh
// login, as a user's next command sees it) and pauses it again (`banger vm pause`: device state
// and RAM saved in its directory, the VMM exits), each timed from the CLI's spawn to its exit.
// The baseline, alternating with it (even repetitions cold first) while the kept VM is paused:
// `banger vm create --cold` → SSH ready (CLI), the VM deleted after. Target: resume ≤ 0.15× cold.
import { median, ratio, round, summarize, type Summary } from './stats.ts';
import { timedCreate, type CreateSample } from './warm.ts';
import { banger, BIN, deleteVm, listVms, runCmd, type World } from './world.ts';

/** The target: resume → SSH ready in at most this fraction of a cold create. */
export const RESUME_TARGET_RATIO = 0.15;

export interface ResumeRep {
  index: number;
  order: 'cold-first' | 'resume-first';
  cold: CreateSample;
  /** `banger vm pause` spawned → exited (saved, VMM gone). */
  pause_ms: number;
  /** The save's size on disk (`saved_bytes` of the paused VM). */
  saved_bytes: number;
  /** `banger vm resume` spawned → exited (the daemon's `ssh true` succeeded). */
  resume_ms: number;
  /** `banger vm exec NAME -- true` right after: a new SSH login through the CLI. */
  exec_true_ms: number;
}

export interface ResumeSummary {
  reps: number;
  cold_ms: Summary;
  pause_ms: Summary;
  resume_ms: Summary;
  exec_true_ms: Summary;
  saved_mib: Summary;
  /** median(resume) / median(cold create). */
  ratio_resume_vs_cold: number;
  /** Median over repetitions of resume / cold of the same repetition. */
  ratio_resume_vs_cold_per_rep: number;
  /** The repetition with the highest resume / cold. */
  ratio_worst_rep: number;
  target_ratio: number;
  target_met: boolean;
}

export interface ResumeResult {
  vm: string;
  summary: ResumeSummary;
  reps: ResumeRep[];
}

/** Medians and ratios against the target. Pure. */
export function summarizeResume(reps: ResumeRep[], target = RESUME_TARGET_RATIO): ResumeSummary {
  const perRep = reps.map((r) => ratio(r.resume_ms, r.cold.cli));
  const cold = summarize(reps.map((r) => r.cold.cli));
  const resume = summarize(reps.map((r) => r.resume_ms));
  const r = ratio(resume.median, cold.median);
  return {
    reps: reps.length,
    cold_ms: cold,
    pause_ms: summarize(reps.map((x) => x.pause_ms)),
    resume_ms: resume,
    exec_true_ms: summarize(reps.map((x) => x.exec_true_ms)),
    saved_mib: summarize(reps.map((x) => x.saved_bytes / 2 ** 20)),
    ratio_resume_vs_cold: r,
    ratio_resume_vs_cold_per_rep: round(median(perRep), 3),
    ratio_worst_rep: round(Math.max(...perRep), 3),
    target_ratio: target,
    target_met: Number.isFinite(r) && r <= target,
  };
}

async function timed(w: World, args: string[], what: string): Promise<number> {
  const r = await banger(w, args, { timeoutMs: 600_000 });
  if (r.code !== 0)
    throw new Error(`banger ${what} exited ${r.code}: ${(r.stdout + r.stderr).trim().slice(-2000)}`);
  return Math.round(r.ms);
}

async function pause(w: World, name: string): Promise<Pick<ResumeRep, 'pause_ms' | 'saved_bytes'>> {
  const pause_ms = await timed(w, ['vm', 'pause', name], `vm pause ${name}`);
  const vm = (await listVms(w)).find((v) => v.name === name);
  if (vm?.state !== 'paused' || vm.saved_bytes === undefined)
    throw new Error(`${name} is ${vm?.state ?? 'missing'} after vm pause, with no saved state`);
  if (vm.pid !== undefined) throw new Error(`${name} still has a VMM (pid ${vm.pid}) after vm pause`);
  return { pause_ms, saved_bytes: vm.saved_bytes };
}

async function resumeExec(w: World, name: string): Promise<Pick<ResumeRep, 'resume_ms' | 'exec_true_ms'>> {
  const resume_ms = await timed(w, ['vm', 'resume', name], `vm resume ${name}`);
  // `--socket` before `--`: everything after it is the guest's command line.
  const t0 = performance.now();
  const ex = await runCmd([BIN('banger'), 'vm', 'exec', name, '--socket', w.socket, '--', 'true'], {
    timeoutMs: 120_000,
  });
  if (ex.code !== 0) throw new Error(`vm exec ${name} -- true after resume exited ${ex.code}: ${ex.stderr}`);
  return { resume_ms, exec_true_ms: Math.round(performance.now() - t0) };
}

/** The whole part: one kept VM paused and resumed `reps` times, alternating with cold creates. */
export async function runResume(w: World, opts: { reps: number; tag: string }): Promise<ResumeResult> {
  const name = `${opts.tag}-vm`;
  w.say(`  ${name}: a cold create (kept; paused and resumed ${opts.reps} times)`);
  await timed(w, ['vm', 'create', '--name', name, '--cold', '--json'], `vm create ${name}`);
  try {
    // The kept VM is paused (no VMM) whenever a baseline cold create runs: a running guest beside
    // it took CPU from the cold boot (a freshly resumed guest catches up on its timers) and made
    // the baseline slower, flattering the ratio.
    await pause(w, name);
    const reps: ResumeRep[] = [];
    for (let i = 0; i < opts.reps; i++) {
      const order = i % 2 === 0 ? 'cold-first' : 'resume-first';
      let cold: CreateSample | undefined;
      if (order === 'cold-first') cold = await timedCreate(w, 'cold', `${opts.tag}-cold-${i}`);
      const re = await resumeExec(w, name);
      const pa = await pause(w, name);
      cold ??= await timedCreate(w, 'cold', `${opts.tag}-cold-${i}`);
      const rep: ResumeRep = { index: i, order, cold, ...pa, ...re };
      reps.push(rep);
      w.say(
        `  rep ${i + 1}/${opts.reps} (${order}): cold create ${(cold.cli / 1000).toFixed(2)} s; ` +
          `pause ${(rep.pause_ms / 1000).toFixed(2)} s (${Math.round(rep.saved_bytes / 2 ** 20)} MiB), ` +
          `resume ${(rep.resume_ms / 1000).toFixed(2)} s, then exec true ${(rep.exec_true_ms / 1000).toFixed(2)} s`,
      );
    }
    return { vm: name, summary: summarizeResume(reps), reps };
  } finally {
    await deleteVm(w, name).catch((err: unknown) => w.say(`resume: delete ${name}: ${String(err)}`));
  }
}

export function resumeTable(r: ResumeResult): string {
  const s = r.summary;
  const sec = (x: Summary): string =>
    `${(x.median / 1000).toFixed(2)} (${(x.min / 1000).toFixed(2)}–${(x.max / 1000).toFixed(2)})`;
  const line = (c: string[]): string => `| ${c.join(' | ')} |`;
  return [
    line(['measure (CLI spawn → exit)', 'median s (min–max)']),
    line(['---', '---']),
    line(['`banger vm create --cold` → SSH ready', sec(s.cold_ms)]),
    line(['`banger vm pause`', sec(s.pause_ms)]),
    line(['`banger vm resume` → SSH ready', sec(s.resume_ms)]),
    line(['then `banger vm exec NAME -- true`', sec(s.exec_true_ms)]),
    '',
    `${s.reps} alternating repetitions; save ${s.saved_mib.median} MiB; resume / cold ` +
      `**${s.ratio_resume_vs_cold}** (per repetition ${s.ratio_resume_vs_cold_per_rep}, worst ` +
      `${s.ratio_worst_rep}); target ≤ ${s.target_ratio}: **${s.target_met ? 'met' : 'not met'}**`,
  ].join('\n');
}
