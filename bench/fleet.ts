// Parts 4 and 5: footprint (bangerd RSS idle and with N running VMs, VMM RSS and CPU per idle VM)
// and concurrency (N creates in parallel against N in sequence, all through the real CLI).
import type { VmCreateStatusResult } from '../generated/types.gen.ts';
import { procUsage } from '../src/vm/procstat.ts';
import { mean, ratio, round, summarize, type Summary } from './stats.ts';
import { banger, deleteVm, listVms, sleep, type World } from './world.ts';

const MiB = 1024 * 1024;

export async function rssMiB(pid: number): Promise<number> {
  const u = await procUsage(pid);
  if (!u) throw new Error(`process ${pid} is gone`);
  return round(u.rssBytes / MiB, 1);
}

/** Median of a few samples, `gapMs` apart (RSS moves a little with GC). */
export async function sampleRssMiB(pid: number, samples = 5, gapMs = 200): Promise<number> {
  const v: number[] = [];
  for (let i = 0; i < samples; i++) {
    v.push(await rssMiB(pid));
    if (i < samples - 1) await sleep(gapMs);
  }
  return summarize(v).median;
}

/** What a create is asked and checked for: extra CLI arguments (`--cold`), and whether the VM must
 * have been restored from a warm template (true) or booted cold (false); unchecked when absent. */
export interface CreateOptions {
  args?: string[];
  expectWarm?: boolean;
}

async function createOne(w: World, name: string, opts: CreateOptions = {}): Promise<number> {
  const r = await banger(w, ['vm', 'create', '--name', name, '--json', ...(opts.args ?? [])], {
    timeoutMs: 900_000,
  });
  if (r.code !== 0) {
    throw new Error(
      `banger vm create ${name} exited ${r.code}: ${(r.stdout + r.stderr).trim().slice(-2000)}`,
    );
  }
  const out = JSON.parse(r.stdout) as VmCreateStatusResult;
  if (out.vm?.state !== 'running') throw new Error(`${name} is ${out.vm?.state ?? 'missing'} after create`);
  if (opts.expectWarm !== undefined && (out.vm.warm_template !== undefined) !== opts.expectWarm) {
    const why = out.operation.steps.find((s) => s.name === 'warm_fallback' || s.name === 'warm')?.detail;
    throw new Error(
      `${name} ${opts.expectWarm ? 'was not restored from a warm template' : 'was restored warm'} (${out.operation.id}${why ? `: ${why}` : ''})`,
    );
  }
  return r.ms;
}

export interface ConcurrencyResult {
  n: number;
  sequential_ms: number;
  parallel_ms: number;
  /** parallel wall / sequential wall: 1 means no gain, 1/n is perfect. */
  ratio_parallel_vs_sequential: number;
  sequential_each_ms: number[];
  parallel_each_ms: number[];
  all_succeeded: true;
}

/** n creates one after the other; the VMs are left running (footprint uses them). */
export async function sequentialCreates(
  w: World,
  n: number,
  tag: string,
): Promise<{ wall: number; each: number[] }> {
  const t0 = performance.now();
  const each: number[] = [];
  for (let i = 0; i < n; i++) each.push(await createOne(w, `${tag}-${i}`));
  return { wall: performance.now() - t0, each };
}

/** n creates at once; they must all succeed. The VMs are deleted afterwards. */
export async function parallelCreates(
  w: World,
  n: number,
  tag: string,
  opts: CreateOptions = {},
): Promise<{ wall: number; each: number[] }> {
  const t0 = performance.now();
  const names = Array.from({ length: n }, (_, i) => `${tag}-${i}`);
  const results = await Promise.allSettled(names.map((name) => createOne(w, name, opts)));
  const wall = performance.now() - t0;
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  for (const name of names) await deleteVm(w, name).catch(() => undefined);
  if (failed.length > 0) {
    throw new Error(`${failed.length} of ${n} parallel creates failed: ${String(failed[0]!.reason)}`);
  }
  return { wall, each: results.map((r) => (r as PromiseFulfilledResult<number>).value) };
}

export interface FootprintResult {
  bangerd_idle_rss_mib: number;
  vms: number;
  bangerd_rss_with_vms_mib: number;
  vmm_rss_mib: Summary;
  vmm_rss_mean_mib: number;
  /** CPU use of each idle VMM over the window, in % of one core. */
  vmm_idle_cpu_pct: Summary;
  settle_s: number;
}

/** Measure with the VMs that run now (after `settleMs` of idling). */
export async function measureFootprint(
  w: World,
  idleRss: number,
  opts: { settleMs: number; cpuWindowMs: number },
): Promise<FootprintResult> {
  await sleep(opts.settleMs);
  const vms = (await listVms(w)).filter((v) => v.state === 'running' && v.pid !== undefined);
  const pids = vms.map((v) => v.pid!);
  const before = await Promise.all(pids.map((p) => procUsage(p)));
  const t0 = performance.now();
  await sleep(opts.cpuWindowMs);
  const after = await Promise.all(pids.map((p) => procUsage(p)));
  const secs = (performance.now() - t0) / 1000;
  const cpu = pids.map((_, i) =>
    round((100 * ((after[i]?.cpuSeconds ?? 0) - (before[i]?.cpuSeconds ?? 0))) / secs, 1),
  );
  const rss = await Promise.all(pids.map((p) => rssMiB(p)));
  return {
    bangerd_idle_rss_mib: idleRss,
    vms: vms.length,
    bangerd_rss_with_vms_mib: await sampleRssMiB(w.daemonPid),
    vmm_rss_mib: summarize(rss),
    vmm_rss_mean_mib: round(mean(rss), 1),
    vmm_idle_cpu_pct: summarize(cpu),
    settle_s: opts.settleMs / 1000,
  };
}

export function concurrencyResult(
  n: number,
  seq: { wall: number; each: number[] },
  par: { wall: number; each: number[] },
): ConcurrencyResult {
  return {
    n,
    sequential_ms: Math.round(seq.wall),
    parallel_ms: Math.round(par.wall),
    ratio_parallel_vs_sequential: ratio(par.wall, seq.wall),
    sequential_each_ms: seq.each.map((x) => Math.round(x)),
    parallel_each_ms: par.each.map((x) => Math.round(x)),
    all_succeeded: true,
  };
}
