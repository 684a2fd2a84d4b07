// Part `density` (issue 14): what N idle VMs cost the host's memory when they are clones of one
// warm template, whose guest RAM file they map copy-on-write (share=off: pages nobody wrote are
// the file's, shared by every clone), against N idle VMs whose guest RAM is each their own (cold
// creates: every page the guest touched is private to its VMM). Same run, same spec, one side at
// a time (the clones deleted before the cold VMs start). For each side: create the N VMs one
// after the other, let them settle, then read every VMM's /proc/PID/smaps_rollup: Pss counts a
// page shared by k processes as 1/k, so the sum of the Pss is what the N VMMs hold together.
// The template's RAM file is on disk: its page cache is clean and reclaimable, counted by no
// process; its resident part (fincore) is reported beside the sums. Target: clones ≤ 0.5× cold.
import { spawnSync } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import type { VmCreateStatusResult } from '../generated/types.gen.ts';
import { ratio, round, summarize, type Summary } from './stats.ts';
import { buildTemplate, type TemplateBuild } from './warm.ts';
import { banger, deleteVm, listVms, sleep, type World } from './world.ts';

/** The target: N clones' total Pss at most this fraction of N full copies'. */
export const DENSITY_TARGET_RATIO = 0.5;

/** One VMM's memory, MiB (smaps_rollup). */
export interface VmmMem {
  vm: string;
  pid: number;
  rss: number;
  pss: number;
  pss_anon: number;
  pss_file: number;
  pss_shmem: number;
}

export interface DensitySide {
  kind: 'warm-clones' | 'cold';
  /** Each create, spawn → exit, ms. */
  create_ms: number[];
  vmms: VmmMem[];
  total_pss_mib: number;
  total_rss_mib: number;
  pss_mib: Summary;
}

export interface DensityResult {
  n: number;
  settle_s: number;
  template: TemplateBuild;
  /** The template's RAM file: apparent size, and how much of it is in the page cache afterwards. */
  ram_file?: { path: string; size_mib: number; resident_mib?: number };
  clones: DensitySide;
  cold: DensitySide;
  /** clones' total Pss / cold VMs' total Pss. */
  ratio_pss: number;
  target_ratio: number;
  target_met: boolean;
}

const KIB_PER_MIB = 1024;

/** Rss, Pss and Pss by kind (MiB, one decimal) from /proc/PID/smaps_rollup. Pure. */
export function parseRollup(text: string): Omit<VmmMem, 'vm' | 'pid'> {
  const kb = (key: string, optional = false): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!m) {
      if (optional) return 0;
      throw new Error(`smaps_rollup has no ${key} line`);
    }
    return round(Number(m[1]) / KIB_PER_MIB, 1);
  };
  return {
    rss: kb('Rss'),
    pss: kb('Pss'),
    pss_anon: kb('Pss_Anon', true),
    pss_file: kb('Pss_File', true),
    pss_shmem: kb('Pss_Shmem', true),
  };
}

/** The side's totals from its VMMs. Pure. */
export function densitySide(kind: DensitySide['kind'], createMs: number[], vmms: VmmMem[]): DensitySide {
  return {
    kind,
    create_ms: createMs.map((x) => Math.round(x)),
    vmms,
    total_pss_mib: round(
      vmms.reduce((a, v) => a + v.pss, 0),
      1,
    ),
    total_rss_mib: round(
      vmms.reduce((a, v) => a + v.rss, 0),
      1,
    ),
    pss_mib: summarize(vmms.map((v) => v.pss)),
  };
}

/** The template RAM file a clone's VMM maps (<image dir>/warm/<id>/ram), from /proc/PID/maps. */
async function mappedRamFile(pid: number): Promise<string | undefined> {
  const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
  return /\s(\/\S*\/warm\/[^/\s]+\/ram)$/m.exec(maps)?.[1];
}

/** `fincore` (util-linux) of a file: its resident bytes in MiB, or undefined when unavailable. */
function residentMiB(path: string): number | undefined {
  const r = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' });
  const n = Number(r.stdout.trim());
  return r.status === 0 && Number.isFinite(n) ? round(n / 2 ** 20, 1) : undefined;
}

async function createSide(
  w: World,
  kind: DensitySide['kind'],
  n: number,
  tag: string,
): Promise<{ names: string[]; ms: number[] }> {
  const names: string[] = [];
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const name = `${tag}-${kind === 'cold' ? 'cold' : 'clone'}-${i}`;
    const args = ['vm', 'create', '--name', name, '--json', ...(kind === 'cold' ? ['--cold'] : [])];
    const r = await banger(w, args, { timeoutMs: 900_000 });
    if (r.code !== 0)
      throw new Error(
        `banger ${args.join(' ')} exited ${r.code}: ${(r.stdout + r.stderr).trim().slice(-2000)}`,
      );
    names.push(name);
    ms.push(r.ms);
    const vm = (JSON.parse(r.stdout) as VmCreateStatusResult).vm;
    if ((vm?.warm_template !== undefined) !== (kind === 'warm-clones'))
      throw new Error(`${name} was ${vm?.warm_template ? 'restored warm' : 'booted cold'}, not as asked`);
  }
  return { names, ms };
}

async function measureSide(
  w: World,
  kind: DensitySide['kind'],
  n: number,
  settleMs: number,
  tag: string,
): Promise<DensitySide & { ramFile?: NonNullable<DensityResult['ram_file']> }> {
  w.say(`  ${n} ${kind === 'cold' ? 'cold VMs' : 'clones of the template'}, one after the other`);
  const { names, ms } = await createSide(w, kind, n, tag).catch(async (err: unknown) => {
    for (const v of await listVms(w))
      if (v.name.startsWith(`${tag}-`)) await deleteVm(w, v.name).catch(() => 0);
    throw err;
  });
  try {
    w.say(`  settling ${settleMs / 1000} s`);
    await sleep(settleMs);
    const vms = await listVms(w);
    const vmms: VmmMem[] = [];
    for (const name of names) {
      const pid = vms.find((v) => v.name === name)?.pid;
      if (pid === undefined) throw new Error(`${name} has no VMM`);
      vmms.push({ vm: name, pid, ...parseRollup(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8')) });
    }
    const side = densitySide(kind, ms, vmms);
    w.say(`  ${kind}: total Pss ${side.total_pss_mib} MiB, Rss ${side.total_rss_mib} MiB`);
    // While the clones run: how much of the template's RAM they keep in the page cache.
    const ramPath = kind === 'warm-clones' ? await mappedRamFile(vmms[0]!.pid) : undefined;
    if (!ramPath) return side;
    const ramFile: NonNullable<DensityResult['ram_file']> = {
      path: ramPath,
      size_mib: round((await stat(ramPath)).size / 2 ** 20, 1),
    };
    const resident = residentMiB(ramPath);
    if (resident !== undefined) ramFile.resident_mib = resident;
    return { ...side, ramFile };
  } finally {
    for (const name of names) await deleteVm(w, name).catch(() => undefined);
  }
}

/** The whole part: the template (built, or found from the warm part), N clones, then N cold VMs. */
export async function runDensity(
  w: World,
  opts: { n: number; settleMs: number; tag: string },
): Promise<DensityResult> {
  const others = (await listVms(w)).filter((v) => v.state === 'running');
  if (others.length > 0)
    throw new Error(`density is measured alone; running: ${others.map((v) => v.name).join(', ')}`);
  w.say('  the warm template (banger image warm; found if the warm part made it)');
  const template = await buildTemplate(w);
  const { ramFile, ...clones } = await measureSide(w, 'warm-clones', opts.n, opts.settleMs, opts.tag);
  const cold = await measureSide(w, 'cold', opts.n, opts.settleMs, opts.tag);
  const r = ratio(clones.total_pss_mib, cold.total_pss_mib);
  const result: DensityResult = {
    n: opts.n,
    settle_s: opts.settleMs / 1000,
    template,
    clones,
    cold,
    ratio_pss: r,
    target_ratio: DENSITY_TARGET_RATIO,
    target_met: Number.isFinite(r) && r <= DENSITY_TARGET_RATIO,
  };
  if (ramFile) result.ram_file = ramFile;
  return result;
}

export function densityTable(d: DensityResult): string {
  const line = (c: string[]): string => `| ${c.join(' | ')} |`;
  const row = (s: DensitySide, label: string): string =>
    line([
      label,
      String(s.total_pss_mib),
      String(s.total_rss_mib),
      `${s.pss_mib.median} (${s.pss_mib.min}–${s.pss_mib.max})`,
      s.vmms.map((v) => `${v.pss_anon}/${v.pss_file}/${v.pss_shmem}`).join(', '),
    ]);
  const ram = d.ram_file
    ? `; the template's RAM file ${d.ram_file.size_mib} MiB` +
      (d.ram_file.resident_mib !== undefined ? ` (${d.ram_file.resident_mib} MiB in the page cache)` : '')
    : '';
  return [
    line(['side', 'total Pss MiB', 'total Rss MiB', 'Pss per VMM, median (min–max)', 'Pss anon/file/shmem']),
    line(['---', '---', '---', '---', '---']),
    row(d.clones, `${d.n} clones of one template`),
    row(d.cold, `${d.n} cold VMs`),
    '',
    `settled ${d.settle_s} s; clones / cold total Pss **${d.ratio_pss}**; target ≤ ${d.target_ratio}: ` +
      `**${d.target_met ? 'met' : 'not met'}**${ram}`,
  ].join('\n');
}
