// The results file's shape and the short Markdown summary printed on stdout. Pure.
import type { GuestProfile } from './bare.ts';
import type { BootPair, BootSummary, GuestAbResult } from './boot.ts';
import type { CliResult } from './cli.ts';
import type { CowResult } from './cow.ts';
import { densityTable, type DensityResult } from './density.ts';
import type { ConcurrencyResult, FootprintResult } from './fleet.ts';
import { idleTable, type IdleResult } from './idle.ts';
import type { MachineInfo } from './machine.ts';
import type { PullResult } from './pull.ts';
import { egressTable, type EgressResult } from './egress.ts';
import { forkTable, type ForkResult } from './fork.ts';
import { resumeTable, type ResumeResult } from './resume.ts';
import type { RpcResult } from './rpc.ts';
import type { Summary } from './stats.ts';
import { STEP_ORDER, type WarmResult } from './warm.ts';

export interface BenchResults {
  format: 1;
  name: string;
  mode: 'full' | 'quick';
  started_at: string;
  duration_s: number;
  machine: MachineInfo;
  config: {
    vcpus: number;
    memory_mib: number;
    disk_size: string;
    network: 'user';
    accel_config: 'auto';
    ready_poll_ms: number;
    guest_cmdline: string;
    image_recipe_hash?: string;
    kernel_version?: string;
  };
  notes: string[];
  /** Parts that failed (the run went on without them). */
  errors: { part: string; error: string }[];
  boot?: { summary: BootSummary; pairs: BootPair[]; bare_argv: string[]; guest_profile?: GuestProfile };
  rpc?: RpcResult;
  cow?: CowResult;
  idle?: IdleResult;
  footprint?: FootprintResult;
  concurrency?: ConcurrencyResult;
  guest_ab?: GuestAbResult;
  warm?: WarmResult;
  resume?: ResumeResult;
  fork?: ForkResult;
  egress?: EgressResult;
  density?: DensityResult;
  cli?: CliResult;
  pull?: PullResult;
}

const sec = (ms: number | undefined): string =>
  ms === undefined || !Number.isFinite(ms) ? '–' : (ms / 1000).toFixed(2);
const med = (s: Summary | undefined): number | undefined => s?.median;

function table(head: string[], rows: string[][]): string {
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

export function bootTable(s: BootSummary): string {
  const b = s.banger;
  const r = s.bare;
  const rows: [string, Summary | undefined, Summary | undefined][] = [
    ['create accepted by the daemon', b.accepted, undefined],
    ['disk ready (qcow2 overlay)', b.disk, r.disk],
    ['seed ready (host key, seed disk)', b.seed, r.seed],
    ['network', undefined, undefined],
    ['VMM started', b.vmmStarted, r.vmmSpawned],
    ['kernel booted (banner on the console)', b.kernelBooted, r.kernelBooted],
    ['userspace up (agent line)', b.userspace, r.userspace],
    ['sshd up (agent line)', b.sshd, r.sshd],
    ['SSH ready (`ssh true` succeeded)', b.sshReady, r.sshReady],
    ['`banger vm create` returned', b.cli, undefined],
    ['VMM start → SSH ready', b.vmmToSsh, r.vmmToSsh],
  ];
  const t = table(
    ['stage (s since create began, median)', 'banger', 'bare QEMU'],
    rows.map(([name, x, y]) => [
      name,
      name === 'network' ? 'n/a (user mode)' : sec(med(x)),
      name === 'network' ? 'n/a (user mode)' : sec(med(y)),
    ]),
  );
  return (
    `${t}\n\n` +
    `banger/bare over ${s.pairs} alternating pairs (median of per-pair ratios): ` +
    `CLI ${s.ratio_cli_vs_bare}, daemon ${s.ratio_daemon_vs_bare}, VMM start → SSH ${s.ratio_boot_vs_bare}`
  );
}

export function rpcTable(r: RpcResult): string {
  return table(
    ['clients', 'bangerd rps', 'floor rps', 'rps ratio', 'bangerd p50 / p99 ms', 'floor p50 / p99 ms'],
    r.daemon.map((d, i) => {
      const f = r.floor[i]!;
      return [
        String(d.clients),
        String(d.rps),
        String(f.rps),
        String(r.ratios[i]!.rps),
        `${d.p50_ms} / ${d.p99_ms}`,
        `${f.p50_ms} / ${f.p99_ms}`,
      ];
    }),
  );
}

export function cowTable(c: CowResult): string {
  return (
    table(
      ['base image', 'median ms', 'p90 ms'],
      c.bases.map((b) => [b.name, String(b.ms.median), String(b.ms.p90)]),
    ) + `\n\n10 GiB / 200 MiB: ${c.ratio_10g_vs_200m} (${c.reps} overlays each)`
  );
}

export function fleetTable(f: FootprintResult | undefined, c: ConcurrencyResult | undefined): string {
  const rows: string[][] = [];
  if (f) {
    rows.push(['bangerd RSS, idle', `${f.bangerd_idle_rss_mib} MiB`]);
    rows.push([`bangerd RSS, ${f.vms} running VMs`, `${f.bangerd_rss_with_vms_mib} MiB`]);
    rows.push(['VMM RSS per idle VM (median)', `${f.vmm_rss_mib.median} MiB`]);
    rows.push(['VMM CPU per idle VM (median)', `${f.vmm_idle_cpu_pct.median} % of a core`]);
  }
  if (c) {
    rows.push([`${c.n} creates in sequence`, `${sec(c.sequential_ms)} s`]);
    rows.push([`${c.n} creates in parallel`, `${sec(c.parallel_ms)} s`]);
    rows.push(['parallel / sequential', String(c.ratio_parallel_vs_sequential)]);
  }
  return table(['measure', 'value'], rows);
}

export function guestAbTable(g: GuestAbResult): string {
  const rows: [string, string][] = [
    ['kernelBooted', 'kernel booted (banner on the console)'],
    ['userspace', 'userspace up (agent line)'],
    ['sshd', 'sshd up (agent line)'],
    ['sshReady', 'SSH ready (`ssh true` succeeded)'],
  ];
  const first = g.variants[0]!.label;
  const head = ['stage (s since the bare run began, median)', ...g.variants.map((v) => v.label)];
  const body = rows.map(([k, label]) => [label, ...g.variants.map((v) => sec(med(v.stages[k])))]);
  for (const v of g.variants.slice(1)) {
    head.push(`${v.label} / ${first}`);
    body.forEach((row, i) => row.push(String(g.ratios[v.label]?.[rows[i]![0]] ?? '–')));
  }
  const legend = g.variants.map(
    (v) =>
      `- ${v.label}: ${v.image}; cmdline \`${v.cmdline}\`` +
      (v.qemu_args.length ? `; QEMU args \`${v.qemu_args.join(' ')}\`` : ''),
  );
  return `${table(head, body)}\n\n${g.rounds} rounds, bare QEMU, order rotated each round\n\n${legend.join('\n')}`;
}

const range = (s: Summary | undefined): string =>
  s === undefined ? '–' : `${sec(s.median)} (${sec(s.min)}–${sec(s.max)})`;

export function warmTable(w: WarmResult): string {
  const s = w.summary;
  const rows: string[][] = [
    ['`banger vm create` returned', range(s.cold.cli), range(s.warm.cli)],
    ['SSH ready (`ssh true` succeeded, the daemon)', range(s.cold.sshReady), range(s.warm.sshReady)],
  ];
  const names = new Set<string>([...STEP_ORDER, ...Object.keys(s.cold.steps), ...Object.keys(s.warm.steps)]);
  for (const name of names) {
    const c = s.cold.steps[name];
    const x = s.warm.steps[name];
    if (c || x) rows.push([`step \`${name}\``, range(c), range(x)]);
  }
  const t = w.template;
  const out = [
    table(['create → SSH ready, s: median (min–max)', 'cold (`--cold`)', 'warm'], rows),
    '',
    `warm / cold over ${s.pairs} alternating pairs: median of the pairs **${s.ratio_warm_vs_cold_per_pair}** ` +
      `(the CLI's create → ready; ratio of the two medians ${s.ratio_warm_vs_cold}; the daemon's SSH ready ` +
      `${s.ratio_warm_vs_cold_daemon}); worst pair (#${s.worst_pair.index + 1}) ` +
      `**${s.worst_pair.ratio}**; targets ≤ ${s.target_ratio}× cold, worst pair ≤ ` +
      `${s.target_worst_ratio}: **${s.target_met ? 'met' : 'not met'}**`,
    '',
    `Template ${t.id}: \`banger image warm\` took ${sec(t.build_ms)} s (its boot ${sec(t.boot_ms)} s, ` +
      `save ${sec(t.save_ms)} s, state ${Math.round(t.state_bytes / 2 ** 20)} MiB; steps ` +
      `${Object.entries(t.steps)
        .map(([k, v]) => `${k} ${sec(v)}`)
        .join(', ')})`,
  ];
  const c = w.concurrency;
  if (c) {
    const each = (v: number[]): string => v.map((x) => sec(x)).join(', ');
    out.push(
      '',
      `${c.n} creates at once, each create → ready (wall): cold ${each(c.cold_each_ms)} s ` +
        `(${sec(c.cold_wall_ms)} s), warm ${each(c.warm_each_ms)} s (${sec(c.warm_wall_ms)} s); ` +
        `warm / cold ${c.ratio_warm_vs_cold}`,
    );
  }
  return out.join('\n');
}

export function cliTable(c: CliResult): string {
  const base = c.commands[0]!.label;
  return (
    table(
      ['command (wall from spawn to exit)', 'median ms', 'min–max ms', `/ \`${base}\``],
      c.commands.map(({ label }) => {
        const s = c.ms[label]!;
        return [
          `\`${label}\``,
          String(s.median),
          `${s.min}–${s.max}`,
          label === base ? '1' : String(c.ratios[label]),
        ];
      }),
    ) + `\n\n${c.rounds} rounds, order rotated each round; Node ${c.node}; target ≤ 1.5× \`${base}\``
  );
}

export function pullTable(p: PullResult): string {
  const range = (x: Summary): string => `${sec(x.median)} (${sec(x.min)}–${sec(x.max)})`;
  const mb = (b: number): string => (b / 1e6).toFixed(0);
  const rows = [
    ['banger: pull + flatten + ext4 (first image, fresh cache)', range(p.banger.total)],
    ['… download + verify', range(p.banger.download)],
    ['… flatten (decompress, tar, spill)', range(p.banger.flatten)],
    ['… ext4 (staging, mkfs.ext4 -d, debugfs)', range(p.banger.ext4)],
    ['floor: skopeo copy + tar -xzf', range(p.floor.total)],
    ['… skopeo copy', range(p.floor.copy)],
    ['… tar -xzf of every layer', range(p.floor.untar)],
    ['second image: download (first’s layers cached)', range(p.second.download)],
    ['second image: pull + flatten + ext4', range(p.second.total)],
  ];
  return [
    '| measure | median s (min–max) |',
    '| --- | --- |',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    `${p.reps} repetitions, alternating; first image ${mb(p.images.first.compressed)} MB compressed, ` +
      `${mb(p.images.first.uncompressed)} MB uncompressed, ${p.images.first.entries} entries; ` +
      `uid ${p.uid}. banger / floor **${p.ratio_vs_floor}** (target ≤ ${p.targets.vs_floor}); ` +
      `second / first download **${p.ratio_second_download}** (target ≤ ${p.targets.second}), ` +
      `pull + convert ${p.ratio_second_total}`,
  ].join('\n');
}

export function markdownSummary(r: BenchResults): string {
  const m = r.machine;
  const out = [
    `## banger bench: ${r.name} (${r.mode})`,
    '',
    `${m.cpu_model}, ${m.cores} cores, ${m.memory_gib} GiB, Linux ${m.kernel.split(' ')[0]}, ` +
      `${m.qemu_version.replace(/ Copyright.*/, '')}, accel ${m.accel ?? 'not probed (no boots)'}; ` +
      `load ${m.load_average_start.join(' ')} → ${(m.load_average_end ?? []).join(' ')}`,
  ];
  if (r.boot) out.push('', '### Create → SSH ready', '', bootTable(r.boot.summary));
  const prof = r.boot?.guest_profile;
  if (prof) {
    out.push(
      '',
      'The guest’s own view (last bare boot):',
      '',
      '```',
      prof.systemd_analyze,
      prof.critical_chain,
      '```',
    );
  }
  if (r.guest_ab) out.push('', '### Guest A/B (bare boots)', '', guestAbTable(r.guest_ab));
  if (r.cli) out.push('', '### CLI start-up', '', cliTable(r.cli));
  if (r.pull) out.push('', '### OCI pull + convert against skopeo copy + tar -x', '', pullTable(r.pull));
  if (r.rpc) out.push('', '### RPC (`ping`, one connection per call)', '', rpcTable(r.rpc));
  if (r.cow) out.push('', '### Copy-on-write disk preparation', '', cowTable(r.cow));
  if (r.idle) out.push('', '### One idle VM', '', idleTable(r.idle));
  if (r.footprint || r.concurrency)
    out.push('', '### Footprint and concurrency', '', fleetTable(r.footprint, r.concurrency));
  if (r.warm) out.push('', '### Warm start: cold against warm creates', '', warmTable(r.warm));
  if (r.resume)
    out.push('', '### Pause to disk and resume, against a cold create', '', resumeTable(r.resume));
  if (r.fork) out.push('', '### Fork of a running VM, against a cold create', '', forkTable(r.fork));
  if (r.egress)
    out.push('', '### Egress policy: a download under allow= against all', '', egressTable(r.egress));
  if (r.density)
    out.push('', '### Density: idle clones of one template against cold VMs', '', densityTable(r.density));
  if (r.errors.length > 0) {
    out.push('', '### Failed parts', '', ...r.errors.map((e) => `- ${e.part}: ${e.error}`));
  }
  return out.join('\n') + '\n';
}
