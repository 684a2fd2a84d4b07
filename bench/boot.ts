// Part 1: create → SSH-ready, by stage, banger against the bare engine, in alternating pairs.
import { join } from 'node:path';
import type { Operation, Vm, VmCreateStatusResult } from '../generated/types.gen.ts';
import { parseSize } from '../src/vm/sizes.ts';
import { parseReadyTimes } from '../src/vm/machine.ts';
import { bareBoot, type BareTimes } from './bare.ts';
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
  if (r.code !== 0) throw new Error(`banger vm create ${name} exited ${r.code}: ${r.stderr}${r.stdout}`);
  const out = JSON.parse(r.stdout) as VmCreateStatusResult;
  if (out.operation.state !== 'succeeded' || !out.vm)
    throw new Error(`create of ${name} did not succeed: ${out.operation.error?.message ?? out.operation.state}`);
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

export async function bareRun(w: World, inputs: BootInputs, name: string): Promise<BareTimes> {
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
  });
  await run.stop();
  return run.times;
}

/** `pairs` alternating pairs: even pairs run banger first, odd pairs the bare engine first. */
export async function runBootPairs(
  w: World,
  inputs: BootInputs,
  pairs: number,
  tag: string,
): Promise<BootPair[]> {
  const out: BootPair[] = [];
  for (let i = 0; i < pairs; i++) {
    const order = i % 2 === 0 ? 'banger-first' : 'bare-first';
    let b: BangerTimes | undefined;
    let bare: BareTimes | undefined;
    for (const which of order === 'banger-first' ? ['banger', 'bare'] : ['bare', 'banger']) {
      if (which === 'banger') b = (await bangerCreate(w, `${tag}-${i}`)).times;
      else bare = await bareRun(w, inputs, `${tag}-bare-${i}`);
    }
    out.push({ index: i, order, banger: b!, bare: bare! });
    w.say(
      `  pair ${i + 1}/${pairs} (${order}): banger ${(b!.cli / 1000).toFixed(2)} s ` +
        `(daemon ssh-ready ${(b!.sshReady / 1000).toFixed(2)} s), bare ${(bare!.sshReady / 1000).toFixed(2)} s`,
    );
  }
  return out;
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
        pairs.map((p) =>
          ratio(p.banger.sshReady - p.banger.vmmStarted, p.bare.sshReady - p.bare.vmmSpawned),
        ),
      ),
      3,
    ),
  };
}
