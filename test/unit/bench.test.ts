import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Operation, Vm, VmCreateStatusResult } from '../../generated/types.gen.ts';
import { dmesgGaps, type BareTimes } from '../../bench/bare.ts';
import {
  bangerTimes,
  stepEnds,
  summarizeAb,
  summarizeBoot,
  type BootPair,
  type GuestVariant,
} from '../../bench/boot.ts';
import { cpuPercent, cpuTicks, idleTable, parseSmapsRollup } from '../../bench/idle.ts';
import { cpuModel } from '../../bench/machine.ts';
import { guestAbTable, markdownSummary, warmTable, type BenchResults } from '../../bench/report.ts';
import { mean, median, percentile, ratio, round, summarize } from '../../bench/stats.ts';
import { parseVariants } from '../../bench/variants.ts';
import { watchFile, watchNewEntry } from '../../bench/watch.ts';
import {
  createSample,
  summarizeWarm,
  warmConcurrency,
  type CreateSample,
  type WarmPair,
  type WarmResult,
} from '../../bench/warm.ts';
import { formatReadyTimes } from '../../src/vm/machine.ts';

const tmp = mkdtempSync(join(tmpdir(), 'bg-bench-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('stats', () => {
  it('interpolates percentiles and medians', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(percentile([1, 2, 3, 4, 5], 0)).toBe(1);
    expect(percentile([1, 2, 3, 4, 5], 100)).toBe(5);
    expect(percentile([1, 2, 3, 4, 5], 90)).toBeCloseTo(4.6);
    expect(percentile([], 50)).toBeNaN();
    expect(mean([1, 2, 6])).toBe(3);
  });

  it('summarizes and rounds; ratios guard against zero', () => {
    expect(summarize([10, 30, 20])).toEqual({ n: 3, median: 20, min: 10, max: 30, p90: 28 });
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(1, 3)).toBe(0.333);
    expect(ratio(1, 0)).toBeNaN();
    expect(round(1.26, 1)).toBe(1.3);
  });
});

const origin = Date.parse('2026-01-01T00:00:00.000Z');
const iso = (ms: number): string => new Date(origin + ms).toISOString();

function createOp(): Operation {
  return {
    id: 'op-abc123',
    kind: 'vm.create',
    method: 'vm.create.begin',
    state: 'succeeded',
    started_at: iso(40),
    steps: [
      { name: 'resolve_image', state: 'done', started_at: iso(41), duration_ms: 2 },
      { name: 'record', state: 'done', started_at: iso(43), duration_ms: 1 },
      { name: 'prepare_disk', state: 'done', started_at: iso(44), duration_ms: 20 },
      { name: 'seed', state: 'done', started_at: iso(64), duration_ms: 50 },
      { name: 'boot', state: 'done', started_at: iso(114), duration_ms: 200 },
      {
        name: 'wait_ready',
        state: 'done',
        started_at: iso(314),
        duration_ms: 15_000,
        detail: formatReadyTimes({ userspaceMs: 9_000, sshdMs: 13_500, sshMs: 15_000 }),
      },
    ],
  };
}

describe('boot stages', () => {
  it('turns step starts and durations into offsets from the origin', () => {
    const ends = stepEnds(createOp(), origin);
    expect(ends.get('prepare_disk')).toEqual({ start: 44, end: 64 });
    expect(ends.get('wait_ready')).toEqual({ start: 314, end: 15_314 });
  });

  it('reads the guest stages from the wait_ready detail', () => {
    const t = bangerTimes(createOp(), origin, 15_600, 1_234.4);
    expect(t).toMatchObject({
      accepted: 40,
      disk: 64,
      seed: 114,
      vmmStarted: 314,
      kernelBooted: 1234,
      userspace: 9_314,
      sshd: 13_814,
      sshReady: 15_314,
      cli: 15_600,
    });
    expect(t.steps.seed).toBe(50);
  });

  it('fails clearly when a step is missing', () => {
    const op = createOp();
    op.steps = op.steps.filter((s) => s.name !== 'boot');
    expect(() => bangerTimes(op, origin, 1, undefined)).toThrow(/no finished step boot/);
  });

  it('summarizes pairs with per-pair ratios', () => {
    const b = bangerTimes(createOp(), origin, 16_000, 1000);
    const pairs: BootPair[] = [0, 1, 2].map((i) => ({
      index: i,
      order: i % 2 === 0 ? 'banger-first' : 'bare-first',
      banger: b,
      bare: { disk: 10, seed: 40, vmmSpawned: 50, sshReady: 8_000 + i * 2_000, sshAttempts: 20 },
    }));
    const s = summarizeBoot(pairs);
    expect(s.pairs).toBe(3);
    expect(s.ratio_cli_vs_bare).toBe(1.6); // 16000 / 10000 is the median ratio
    expect(s.banger.vmmToSsh?.median).toBe(15_000);
    expect(s.bare.kernelBooted).toBeUndefined();
    expect(s.bare.sshReady?.median).toBe(10_000);
  });
});

describe('watchers', () => {
  it('timestamps the first appearance of each pattern in a growing file', async () => {
    const f = join(tmp, 'serial.log');
    const target: { path?: string } = {};
    const w = watchFile(() => target.path, { kernel: /Linux version/, later: /never/ }, { intervalMs: 5 });
    await new Promise((r) => setTimeout(r, 20));
    writeFileSync(f, 'banger: op-1 vm.create begins\n');
    target.path = f;
    await new Promise((r) => setTimeout(r, 30));
    expect(w.seenAt.has('kernel')).toBe(false);
    const before = performance.now();
    appendFileSync(f, '[    0.000000] Linux ver');
    appendFileSync(f, 'sion 6.1.0\n');
    await new Promise((r) => setTimeout(r, 50));
    w.stop();
    expect(w.seenAt.get('kernel')).toBeGreaterThanOrEqual(before);
    expect(w.seenAt.has('later')).toBe(false);
  });

  it('finds a new directory entry', async () => {
    const d = join(tmp, 'vms');
    mkdirSync(join(d, 'old'), { recursive: true });
    const p = watchNewEntry(d, new Set(['old']), { intervalMs: 5 });
    setTimeout(() => mkdirSync(join(d, 'abc')), 20);
    expect(await p).toBe('abc');
  });
});

describe('report', () => {
  it('cpu model from /proc/cpuinfo', () => {
    expect(cpuModel('processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz : 1\n')).toBe('AMD EPYC');
    expect(cpuModel('')).toBe('unknown');
  });

  it('prints every part it has as a Markdown table', () => {
    const b = bangerTimes(createOp(), origin, 16_000, 1000);
    const pairs: BootPair[] = [
      {
        index: 0,
        order: 'banger-first',
        banger: b,
        bare: { disk: 10, seed: 40, vmmSpawned: 50, kernelBooted: 900, sshReady: 10_000, sshAttempts: 20 },
      },
    ];
    const r: BenchResults = {
      format: 1,
      name: 't',
      mode: 'quick',
      started_at: iso(0),
      duration_s: 1,
      machine: {
        cpu_model: 'AMD EPYC',
        cores: 2,
        memory_gib: 24,
        kernel: '6.1 #1',
        qemu_version: 'QEMU emulator version 7.2.22',
        node_version: 'v24',
        accel: 'tcg',
        load_average_start: [1, 2, 3],
        load_average_end: [2, 2, 2],
      },
      config: {
        vcpus: 2,
        memory_mib: 1024,
        disk_size: '4G',
        network: 'user',
        accel_config: 'auto',
        ready_poll_ms: 300,
        guest_cmdline: 'x',
      },
      notes: [],
      errors: [],
      boot: { summary: summarizeBoot(pairs), pairs, bare_argv: [] },
      rpc: {
        daemon: [{ clients: 1, calls: 10, seconds: 1, rps: 10, p50_ms: 1, p99_ms: 2 }],
        floor: [{ clients: 1, calls: 10, seconds: 0.5, rps: 20, p50_ms: 0.5, p99_ms: 1 }],
        ratios: [{ clients: 1, rps: 0.5, p50: 2, p99: 2 }],
      },
    };
    const md = markdownSummary(r);
    expect(md).toContain('| SSH ready (`ssh true` succeeded) | 15.31 | 10.00 |');
    expect(md).toContain('| kernel booted (banner on the console) | 1.00 | 0.90 |');
    expect(md).toContain('| 1 | 10 | 20 | 0.5 | 1 / 2 | 0.5 / 1 |');
    expect(md).toContain('CLI 1.6');
    expect(md).not.toContain('Copy-on-write');
  });
});

describe('guest profile', () => {
  it('finds the longest silences in dmesg', () => {
    const text = [
      '[    0.000000] Linux version 6.1.0',
      '[    0.300000] smp: Bringing up secondary CPUs ...',
      '[    0.500000] smp: Brought up 1 node, 2 CPUs',
      'continuation line without a stamp',
      '[    2.100000] Run /init as init process',
      '[    2.150000] virtio_blk virtio0: [vda]',
    ].join('\n');
    const g = dmesgGaps(text, 2);
    expect(g.last).toBe(2.15);
    expect(g.gaps).toEqual([
      { gap_s: 1.6, at_s: 2.1, line: 'Run /init as init process' },
      { gap_s: 0.3, at_s: 0.3, line: 'smp: Bringing up secondary CPUs ...' },
    ]);
  });
});

describe('guest A/B summary', () => {
  const v = (label: string, extra: Partial<GuestVariant> = {}): GuestVariant => ({
    label,
    kernel: '/img/vmlinuz',
    rootfs: `/img-${label}/rootfs.ext4`,
    accel: 'tcg',
    ...extra,
  });
  const t = (sshReady: number, sshd?: number): BareTimes => ({
    disk: 10,
    seed: 40,
    vmmSpawned: 50,
    sshReady,
    sshAttempts: 3,
    ...(sshd !== undefined ? { sshd } : {}),
  });

  it('ratios each variant against the first, per round, and prints one column per variant', () => {
    const variants = [
      v('old'),
      v('new', { cmdlineTemplate: 'root=x NAME', qemuArgs: ['-device', 'virtio-rng-device'] }),
    ];
    const g = summarizeAb(variants, [
      { round: 0, order: ['old', 'new'], times: { old: t(20_000, 18_000), new: t(15_000, 13_000) } },
      { round: 1, order: ['new', 'old'], times: { old: t(30_000), new: t(15_000) } },
      { round: 2, order: ['old', 'new'], times: { old: t(10_000), new: t(9_000) } },
    ]);
    expect(g.rounds).toBe(3);
    expect(g.ratios.new).toEqual({ sshReady: 0.75, sshd: 0.722 });
    expect(g.variants[1]).toMatchObject({
      image: '/img-new',
      cmdline: 'root=x NAME',
      qemu_args: ['-device', 'virtio-rng-device'],
    });
    expect(g.variants[0]!.stages.sshReady?.median).toBe(20_000);
    const md = guestAbTable(g);
    expect(md).toContain('| SSH ready (`ssh true` succeeded) | 20.00 | 15.00 | 0.75 |');
    expect(md).toContain('- new: /img-new; cmdline `root=x NAME`; QEMU args `-device virtio-rng-device`');
  });
});

describe('guest A/B variants file', () => {
  it('reads labels, images relative to the file, command lines and QEMU arguments', () => {
    const v = parseVariants(
      JSON.stringify([
        { label: 'old', image: 'images/old', cmdline: 'root=x NAME' },
        { label: 'rng', qemu_args: ['-device', 'virtio-rng-device'] },
      ]),
      '/var/tmp/v/variants.json',
    );
    expect(v).toEqual([
      { label: 'old', image: '/var/tmp/v/images/old', cmdline: 'root=x NAME' },
      { label: 'rng', qemu_args: ['-device', 'virtio-rng-device'] },
    ]);
  });

  it('says what is wrong', () => {
    const f = '/v.json';
    expect(() => parseVariants('[', f)).toThrow(/not JSON/);
    expect(() => parseVariants('[{"label":"a"}]', f)).toThrow(/at least two/);
    expect(() => parseVariants('[{"label":"a"},{"label":"a"}]', f)).toThrow(/labels must differ/);
    expect(() => parseVariants('[{"label":"a"},{"label":"b","img":"x"}]', f)).toThrow(
      /entry 1: unknown key img/,
    );
    expect(() => parseVariants('[{"label":"a b"},{"label":"b"}]', f)).toThrow(/entry 0: label/);
    expect(() => parseVariants('[{"label":"a"},{"label":"b","qemu_args":[1]}]', f)).toThrow(/qemu_args/);
  });
});

describe('warm start', () => {
  const vm = (warm?: string): Vm =>
    ({ name: 'w', state: 'running', ...(warm ? { warm_template: warm } : {}) }) as unknown as Vm;
  const step = (name: string, start: number, ms: number, state: 'done' | 'skipped' = 'done') =>
    state === 'done'
      ? { name, state, started_at: iso(start), duration_ms: ms }
      : { name, state, detail: 'booting cold (--cold)' };
  function createOut(kind: 'cold' | 'warm'): VmCreateStatusResult {
    const steps =
      kind === 'cold'
        ? [
            step('resolve_image', 41, 2),
            step('warm', 43, 0, 'skipped'),
            step('record', 43, 1),
            step('prepare_disk', 44, 20),
            step('seed', 64, 50),
            step('boot', 114, 200),
            step('wait_ready', 314, 10_000),
          ]
        : [
            step('resolve_image', 41, 2),
            step('warm', 43, 3),
            step('record', 46, 1),
            step('prepare_disk', 47, 20),
            step('seed', 67, 50),
            step('restore', 117, 600),
            { ...step('reidentify', 717, 300), detail: 'banger-reidentify: ok machine-id hostname' },
            step('wait_ready', 1017, 400),
          ];
    return {
      operation: {
        id: `op-${kind}`,
        kind: 'vm.create',
        method: 'vm.create.begin',
        state: 'succeeded',
        started_at: iso(40),
        steps,
      },
      vm: vm(kind === 'warm' ? '0123456789abcdef' : undefined),
    };
  }

  it('reads a create from its operation and checks it went the way asked', () => {
    const w = createSample('warm', createOut('warm'), origin, 1_700.4);
    expect(w).toEqual({
      op: 'op-warm',
      accepted: 40,
      sshReady: 1_417,
      cli: 1_700,
      steps: {
        resolve_image: 2,
        warm: 3,
        record: 1,
        prepare_disk: 20,
        seed: 50,
        restore: 600,
        reidentify: 300,
        wait_ready: 400,
      },
      details: { reidentify: 'banger-reidentify: ok machine-id hostname' },
      warm_template: '0123456789abcdef',
    });
    const c = createSample('cold', createOut('cold'), origin, 10_600);
    expect(c.steps.warm).toBeUndefined(); // skipped
    expect(c.sshReady).toBe(10_314);
    expect(() => createSample('warm', createOut('cold'), origin, 1)).toThrow(/did not restore/);
    expect(() => createSample('cold', createOut('warm'), origin, 1)).toThrow(/did not boot cold/);
    const fell = createOut('warm');
    fell.operation.steps.push({ name: 'warm_fallback', state: 'done', detail: 'warm start failed (x)' });
    expect(() => createSample('warm', fell, origin, 1)).toThrow(
      /fell back to a cold boot: warm start failed/,
    );
    const failed = createOut('warm');
    failed.operation.state = 'failed';
    failed.operation.error = { code: 'internal', message: 'boom' };
    expect(() => createSample('warm', failed, origin, 1)).toThrow(/did not succeed: boom/);
  });

  const sample = (cli: number, extra: Record<string, number>): CreateSample => ({
    op: 'op',
    accepted: 40,
    sshReady: cli - 300,
    cli,
    steps: { prepare_disk: 20, seed: 50, wait_ready: cli - 500, ...extra },
    details: {},
  });
  const pairs: WarmPair[] = [10_000, 12_000, 11_000].map((c, i) => ({
    index: i,
    order: i % 2 === 0 ? 'cold-first' : 'warm-first',
    cold: sample(c, { boot: 200 }),
    warm: sample(1_000 + i * 600, { restore: 500 + i * 100, reidentify: 300 }),
  }));

  it('summarizes both kinds and the warm/cold ratio against the target', () => {
    const s = summarizeWarm(pairs);
    expect(s.pairs).toBe(3);
    expect(s.cold.cli).toMatchObject({ median: 11_000, min: 10_000, max: 12_000 });
    expect(s.warm.cli).toMatchObject({ median: 1_600, min: 1_000, max: 2_200 });
    expect(s.ratio_warm_vs_cold).toBe(0.145); // 1600 / 11000
    expect(s.ratio_warm_vs_cold_daemon).toBe(0.121); // 1300 / 10700
    expect(s.ratio_warm_vs_cold_per_pair).toBe(0.133); // median of 0.1, 0.133, 0.2
    expect(s.target_met).toBe(true);
    expect(s.warm.steps.restore?.median).toBe(600);
    expect(s.warm.steps.boot).toBeUndefined();
    expect(s.cold.steps.restore).toBeUndefined();
    expect(Object.keys(s.warm.steps)).toEqual([
      'prepare_disk',
      'seed',
      'restore',
      'reidentify',
      'wait_ready',
    ]);
    expect(summarizeWarm(pairs, 0.1).target_met).toBe(false);
    // Robustly: the worst pair (2200 / 11000) has its own target.
    expect(s.worst_pair).toEqual({ index: 2, ratio: 0.2 });
    expect(s.target_worst_ratio).toBe(0.25);
    expect(summarizeWarm(pairs, 0.15, 0.19).target_met).toBe(false);
  });

  it('judges the target by the median of the pairs, not by the ratio of the two medians', () => {
    // The load changed during the run: the pairs' own ratios are 0.14, 0.24, 0.16, 0.14, 0.14
    // (median 0.14), the two medians divide to 4800 / 30000 = 0.16.
    const cold = [10_000, 20_000, 30_000, 40_000, 50_000];
    const warm = [1_400, 4_800, 4_800, 5_600, 7_000];
    const drift = (w: number[]): WarmPair[] =>
      cold.map((c, i) => ({
        index: i,
        order: i % 2 === 0 ? 'cold-first' : 'warm-first',
        cold: sample(c, { boot: 200 }),
        warm: sample(w[i]!, { restore: 200 }),
      }));
    const s = summarizeWarm(drift(warm));
    expect(s.ratio_warm_vs_cold_per_pair).toBe(0.14);
    expect(s.ratio_warm_vs_cold).toBe(0.16);
    expect(s.worst_pair).toEqual({ index: 1, ratio: 0.24 });
    expect(s.target_met).toBe(true);
    // The worst pair still counts on its own.
    expect(summarizeWarm(drift([1_400, 5_200, 4_800, 5_600, 7_000])).target_met).toBe(false);
  });

  it('prints a cold/warm table with the step breakdown, the target, the template and concurrency', () => {
    const w: WarmResult = {
      template: {
        id: '0123456789abcdef',
        build_ms: 31_000,
        boot_ms: 24_000,
        save_ms: 2_500,
        state_bytes: 300 * 2 ** 20,
        steps: { prepare: 100, boot: 24_000, settle: 3_000, save: 2_500 },
      },
      summary: summarizeWarm(pairs),
      pairs,
      concurrency: warmConcurrency(
        2,
        { wall: 25_000, each: [24_000, 25_000] },
        { wall: 3_000, each: [2_000, 3_000] },
      ),
    };
    expect(w.concurrency?.ratio_warm_vs_cold).toBe(0.102); // 2500 / 24500
    const md = warmTable(w);
    expect(md).toContain('| `banger vm create` returned | 11.00 (10.00–12.00) | 1.60 (1.00–2.20) |');
    expect(md).toContain('| step `boot` | 0.20 (0.20–0.20) | – |');
    expect(md).toContain('| step `restore` | – | 0.60 (0.50–0.70) |');
    expect(md.indexOf('step `reidentify`')).toBeLessThan(md.indexOf('step `wait_ready`'));
    expect(md).toContain(
      "median of the pairs **0.133** (the CLI's create → ready; ratio of the two medians 0.145",
    );
    expect(md).toContain('worst pair (#3) **0.2**; targets ≤ 0.15× cold, worst pair ≤ 0.25: **met**');
    expect(md).toContain('took 31.00 s (its boot 24.00 s, save 2.50 s, state 300 MiB;');
    expect(md).toContain('cold 24.00, 25.00 s (25.00 s), warm 2.00, 3.00 s (3.00 s); warm / cold 0.102');
  });
});

describe('idle part: /proc readings', () => {
  it('takes utime + stime after the command name, even one with spaces and parentheses', () => {
    const stat = '4242 (qemu (x) y) S 1 2 3 4 5 6 7 8 9 10 1234 567 0 0 20 0 3 0 99 1 2';
    expect(cpuTicks(stat)).toBe(1234 + 567);
    expect(() => cpuTicks('4242 (x) S')).toThrow(/stat/);
  });

  it('reads Rss and Pss in MiB from smaps_rollup', () => {
    const text = [
      '55d0c0000000-7ffd00000000 ---p 00000000 00:00 0 [rollup]',
      'Rss:              436200 kB',
      'Pss:              424254 kB',
      'Pss_Anon:         412648 kB',
    ].join('\n');
    expect(parseSmapsRollup(text)).toEqual({ rss_mib: 426, pss_mib: 414.3 });
    expect(() => parseSmapsRollup('Rss: 1 kB')).toThrow(/Pss/);
  });

  it('CPU % of one core over a window (USER_HZ ticks)', () => {
    expect(cpuPercent(1000, 1150, 60)).toBe(2.5);
    expect(cpuPercent(0, 0, 60)).toBe(0);
  });

  it('the summary table says whether the target was met', () => {
    const s = { n: 3, median: 1.2, min: 1.1, max: 1.3, p90: 1.3 };
    const t = idleTable({
      vm: 'idle-0',
      settle_s: 20,
      window_s: 60,
      cpu_pct: s,
      cpu_pct_samples: [1.1, 1.2, 1.3],
      cpu_pct_mean: 1.2,
      rss_mib: { n: 3, median: 420, min: 419, max: 421, p90: 421 },
      pss_mib: { n: 3, median: 410, min: 409, max: 411, p90: 411 },
      burst: { mib: 600, rss_right_after_mib: 998, after_s: 20, rss_mib: 418, pss_mib: 406 },
      target_cpu_pct: 2,
      meets_target: true,
    });
    expect(t).toContain('| VMM CPU, % of one core (3 × 60 s) | 1.2 % (1.1–1.3) |');
    expect(t).toContain('998 → 418 MiB');
    expect(t).toContain('≤ 2 % of a core: met');
  });
});
