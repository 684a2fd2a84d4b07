// Part 1: create → SSH-ready, by stage, banger against the bare engine, in alternating pairs.
import { dirname, join } from 'node:path';
import type { Operation, Vm, VmCreateStatusResult } from '../generated/types.gen.ts';
import { parseSize } from '../src/vm/sizes.ts';
import { guestCmdline, parseReadyTimes } from '../src/vm/machine.ts';
import { bareBoot, type BareTimes, type GuestProfile } from './bare.ts';
import { median, ratio, round, summarize, type Summary } from './stats.ts';
import { watchFile, watchNewEntry } from './watch.ts';
import { banger, deleteVm, VM_DEFAULTS, vmDirs, type World } from './world.ts';

/** Milliseconds from `banger vm create` being spawned to each stage. */
export interface BangerTimes {
  /** The daemon began the create operation. */
  accepted: number;
  disk: number;
  seed: number;
  vmmStarted: number;
  kernelBooted?: number;
  userspace?: number;
  sshd?: number;
  /** The daemon's `ssh true` succeeded (end of wait_ready). */
  sshReady: number;
  /** The CLI exited (it polls the operation every 250 ms). */
  cli: number;
  /** Each step's own duration. */
  steps: Record<string, number>;
}

export interface BootPair {
  index: number;
  order: 'banger-first' | 'bare-first';
  banger: BangerTimes;
  bare: BareTimes;
}

/** Offsets of an operation's steps (ISO start + duration) from a wall-clock origin. */
export function stepEnds(op: Operation, originWallMs: number): Map<string, { start: number; end: number }> {
  const out = new Map<string, { start: number; end: number }>();
  for (const s of op.steps) {
    if (!s.started_at || s.duration_ms === undefined) continue;
    const start = Date.parse(s.started_at) - originWallMs;
    out.set(s.name, { start, end: start + s.duration_ms });
  }
  return out;
}

/** BangerTimes from a finished create operation, the CLI's own timing and the serial watch. */
export function bangerTimes(
  op: Operation,
  originWallMs: number,
  cliMs: number,
  kernelBooted: number | undefined,
): BangerTimes {
  const ends = stepEnds(op, originWallMs);
  const need = (name: string): { start: number; end: number } => {
    const s = ends.get(name);
    if (!s) throw new Error(`create operation ${op.id} has no finished step ${name}`);
    return s;
  };
  const wait = need('wait_ready');
  const ready = parseReadyTimes(op.steps.find((s) => s.name === 'wait_ready')?.detail);
  const t: BangerTimes = {
    accepted: Math.round(Date.parse(op.started_at) - originWallMs),
    disk: need('prepare_disk').end,
    seed: need('seed').end,
    vmmStarted: need('boot').end,
    sshReady: wait.end,
    cli: Math.round(cliMs),
    steps: Object.fromEntries(op.steps.map((s) => [s.name, s.duration_ms ?? 0])),
  };
  if (kernelBooted !== undefined) t.kernelBooted = Math.round(kernelBooted);
  if (ready?.userspaceMs !== undefined) t.userspace = wait.start + ready.userspaceMs;
  if (ready?.sshdMs !== undefined) t.sshd = wait.start + ready.sshdMs;
  return t;
}

/** One `banger vm create` through the real CLI; the VM is deleted afterwards unless `keep`. */
export async function bangerCreate(
  w: World,
  name: string,
  opts: { keep?: boolean } = {},
): Promise<{ times: BangerTimes; vm: Vm }> {
  const vmsDir = join(w.stateDir, 'vms');
  const before = await vmDirs(w);
  const stopWatch = new AbortController();
  let id: string | undefined;
  const found = watchNewEntry(vmsDir, before, { signal: stopWatch.signal }).then((n) => (id = n));
  const serial = watchFile(() => (id ? join(vmsDir, id, 'serial.log') : undefined), {
    kernel: /Linux version/,
  });
  const originWall = Date.now();
  const t0 = performance.now();
  const r = await banger(w, ['vm', 'create', '--name', name, '--json'], { timeoutMs: 600_000 });
  stopWatch.abort();
  serial.stop();
  await found;
  if (r.code !== 0) {
    throw new Error(
      `banger vm create ${name} exited ${r.code}: ${(r.stdout + r.stderr).trim().slice(-2000)}`,
    );
  }
  const out = JSON.parse(r.stdout) as VmCreateStatusResult;
  if (out.operation.state !== 'succeeded' || !out.vm)
    throw new Error(
      `create of ${name} did not succeed: ${out.operation.error?.message ?? out.operation.state}`,
    );
  const k = serial.seenAt.get('kernel');
  const times = bangerTimes(out.operation, originWall, r.ms, k === undefined ? undefined : k - t0);
  if (!opts.keep) await deleteVm(w, name);
  return { times, vm: out.vm };
}

export interface BootInputs {
  kernel: string;
  initrd?: string;
  rootfs: string;
  accel: 'kvm' | 'tcg';
  /** Kernel command line with NAME for the VM name; default: banger's guestCmdline. */
  cmdlineTemplate?: string;
  /** Appended to the QEMU command line (experiments, e.g. a device). */
  qemuArgs?: string[];
}

/** A guest to compare against: an image directory as the builder writes it (vmlinuz, initrd, rootfs). */
export function imageDirInputs(dir: string, accel: 'kvm' | 'tcg', cmdlineTemplate?: string): BootInputs {
  const b: BootInputs = {
    kernel: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initrd.cpio.gz'),
    rootfs: join(dir, 'rootfs.ext4'),
    accel,
  };
  if (cmdlineTemplate !== undefined) b.cmdlineTemplate = cmdlineTemplate;
  return b;
}

/** The default image's kernel, initramfs and root filesystem, as the daemon recorded them. */
export async function defaultBootInputs(w: World, accel: 'kvm' | 'tcg'): Promise<BootInputs> {
  const images = (await w.client.image.list()).images;
  const img = images.find((i) => i.default) ?? images[0];
  if (!img) throw new Error('the daemon has no image');
  const kernel = (await w.client.kernel.show({ name: img.kernel })).kernel;
  const b: BootInputs = { kernel: kernel.kernel_path, rootfs: img.rootfs_path, accel };
  if (kernel.initrd_path) b.initrd = kernel.initrd_path;
  return b;
}

export async function bareRun(
  w: World,
  inputs: BootInputs,
  name: string,
  diagnose = false,
): Promise<{ times: BareTimes; argv: string[]; profile?: GuestProfile }> {
  const run = await bareBoot({
    dir: join(w.dir, 'bare', name),
    name,
    kernel: inputs.kernel,
    ...(inputs.initrd ? { initrd: inputs.initrd } : {}),
    rootfs: inputs.rootfs,
    rootfsFormat: 'raw',
    diskSizeBytes: parseSize(VM_DEFAULTS.diskSize, 'disk size'),
    vcpus: VM_DEFAULTS.vcpus,
    memoryMib: VM_DEFAULTS.memoryMib,
    accel: inputs.accel,
    daemonStateDir: w.stateDir,
    timeoutMs: 300_000,
    diagnose,
    ...(inputs.cmdlineTemplate !== undefined ? { cmdlineTemplate: inputs.cmdlineTemplate } : {}),
    ...(inputs.qemuArgs !== undefined ? { qemuArgs: inputs.qemuArgs } : {}),
  });
  await run.stop();
  return run.profile
    ? { times: run.times, argv: run.argv, profile: run.profile }
    : { times: run.times, argv: run.argv };
}

/** `pairs` alternating pairs: even pairs run banger first, odd pairs the bare engine first. */
export async function runBootPairs(
  w: World,
  inputs: BootInputs,
  pairs: number,
  tag: string,
): Promise<{ pairs: BootPair[]; bareArgv: string[]; profile?: GuestProfile }> {
  const out: BootPair[] = [];
  let bareArgv: string[] = [];
  let profile: GuestProfile | undefined;
  for (let i = 0; i < pairs; i++) {
    const order = i % 2 === 0 ? 'banger-first' : 'bare-first';
    let b: BangerTimes | undefined;
    let bare: BareTimes | undefined;
    for (const which of order === 'banger-first' ? ['banger', 'bare'] : ['bare', 'banger']) {
      if (which === 'banger') b = (await bangerCreate(w, `${tag}-${i}`)).times;
      else {
        // The last bare guest also reports its own view of the boot, after its time is taken.
        const r = await bareRun(w, inputs, `${tag}-bare-${i}`, i === pairs - 1);
        bare = r.times;
        bareArgv = r.argv;
        if (r.profile) profile = r.profile;
      }
    }
    out.push({ index: i, order, banger: b!, bare: bare! });
    w.say(
      `  pair ${i + 1}/${pairs} (${order}): banger ${(b!.cli / 1000).toFixed(2)} s ` +
        `(daemon ssh-ready ${(b!.sshReady / 1000).toFixed(2)} s), bare ${(bare!.sshReady / 1000).toFixed(2)} s`,
    );
  }
  return profile ? { pairs: out, bareArgv, profile } : { pairs: out, bareArgv };
}

export interface BootSummary {
  pairs: number;
  /** Medians (ms since start) of each stage. */
  banger: Record<string, Summary>;
  bare: Record<string, Summary>;
  /** Median over pairs of banger/bare per pair. */
  ratio_cli_vs_bare: number;
  ratio_daemon_vs_bare: number;
  /** VMM start → SSH ready, the part the guest and the readiness path decide. */
  ratio_boot_vs_bare: number;
}

function stageSummaries<T extends object>(rows: T[], keys: (keyof T & string)[]): Record<string, Summary> {
  const out: Record<string, Summary> = {};
  for (const k of keys) {
    const vals = rows.map((r) => r[k]).filter((v): v is T[typeof k] & number => typeof v === 'number');
    if (vals.length) out[k] = summarize(vals);
  }
  return out;
}

export function summarizeBoot(pairs: BootPair[]): BootSummary {
  const b = pairs.map((p) => p.banger);
  const bare = pairs.map((p) => p.bare);
  return {
    pairs: pairs.length,
    banger: {
      ...stageSummaries(b, [
        'accepted',
        'disk',
        'seed',
        'vmmStarted',
        'kernelBooted',
        'userspace',
        'sshd',
        'sshReady',
        'cli',
      ]),
      vmmToSsh: summarize(b.map((x) => x.sshReady - x.vmmStarted)),
    },
    bare: {
      ...stageSummaries(bare, [
        'disk',
        'seed',
        'vmmSpawned',
        'kernelBooted',
        'userspace',
        'sshd',
        'sshReady',
        'sshAttempts',
      ]),
      vmmToSsh: summarize(bare.map((x) => x.sshReady - x.vmmSpawned)),
    },
    ratio_cli_vs_bare: round(median(pairs.map((p) => ratio(p.banger.cli, p.bare.sshReady))), 3),
    ratio_daemon_vs_bare: round(median(pairs.map((p) => ratio(p.banger.sshReady, p.bare.sshReady))), 3),
    ratio_boot_vs_bare: round(
      median(
        pairs.map((p) => ratio(p.banger.sshReady - p.banger.vmmStarted, p.bare.sshReady - p.bare.vmmSpawned)),
      ),
      3,
    ),
  };
}

/** One guest to boot in the A/B part: an image directory (default: the daemon's default image),
 * a kernel command line (NAME for the VM name; default: banger's) and extra QEMU arguments. */
export interface GuestVariant extends BootInputs {
  label: string;
}

export interface GuestAbResult {
  rounds: number;
  variants: {
    label: string;
    image: string;
    cmdline: string;
    qemu_args: string[];
    stages: Record<string, Summary>;
  }[];
  /** Per variant, per stage: median over rounds of (variant / first variant) in the same round. */
  ratios: Record<string, Record<string, number>>;
  runs: { round: number; order: string[]; times: Record<string, BareTimes> }[];
}

const AB_STAGES = ['kernelBooted', 'userspace', 'sshd', 'sshReady'] as const;

/**
 * Guests (image + kernel command line + QEMU arguments) booted bare, in the same run, each round
 * in a rotated order so every variant takes every position: what a guest-side change (units,
 * initramfs, command line, a device) buys, without the daemon in the way.
 */
export async function runGuestAb(w: World, variants: GuestVariant[], rounds: number): Promise<GuestAbResult> {
  if (variants.length < 2) throw new Error('guest A/B needs at least two variants');
  const labels = variants.map((v) => v.label);
  if (new Set(labels).size !== labels.length) throw new Error('guest A/B: variant labels must differ');
  const runs: GuestAbResult['runs'] = [];
  for (let r = 0; r < rounds; r++) {
    const order = variants.map((_, i) => variants[(i + r) % variants.length]!);
    const times: Record<string, BareTimes> = {};
    for (const [k, v] of order.entries()) {
      times[v.label] = (await bareRun(w, v, `ab-${r}-${k}`)).times;
    }
    runs.push({ round: r, order: order.map((v) => v.label), times });
    w.say(
      `  round ${r + 1}/${rounds}: ` +
        order.map((v) => `${v.label} ${(times[v.label]!.sshReady / 1000).toFixed(2)} s`).join(', '),
    );
  }
  return summarizeAb(variants, runs);
}

/** Stage summaries per variant and per-round ratios against the first variant. Pure. */
export function summarizeAb(variants: GuestVariant[], runs: GuestAbResult['runs']): GuestAbResult {
  const base = variants[0]!.label;
  const ratios: Record<string, Record<string, number>> = {};
  for (const v of variants.slice(1)) {
    const per: Record<string, number> = {};
    for (const k of AB_STAGES) {
      const r = runs
        .map((x) => [x.times[v.label]?.[k], x.times[base]?.[k]] as const)
        .filter((p): p is readonly [number, number] => p[0] !== undefined && p[1] !== undefined)
        .map(([a, b]) => ratio(a, b));
      if (r.length) per[k] = round(median(r), 3);
    }
    ratios[v.label] = per;
  }
  return {
    rounds: runs.length,
    variants: variants.map((v) => ({
      label: v.label,
      image: dirname(v.rootfs),
      cmdline: v.cmdlineTemplate ?? guestCmdline({ name: 'NAME', networkMode: 'user' }),
      qemu_args: v.qemuArgs ?? [],
      stages: stageSummaries(
        runs.map((x) => x.times[v.label]!),
        [...AB_STAGES],
      ),
    })),
    ratios,
    runs,
  };
}
