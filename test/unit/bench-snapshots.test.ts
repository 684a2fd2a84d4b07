import { describe, expect, it } from 'vitest';
import { densitySide, densityTable, parseRollup, type DensityResult } from '../../bench/density.ts';
import { resumeTable, summarizeResume, type ResumeRep } from '../../bench/resume.ts';
import type { CreateSample } from '../../bench/warm.ts';

const cold = (cli: number): CreateSample => ({
  op: 'op',
  accepted: 40,
  sshReady: cli - 200,
  cli,
  steps: {},
  details: {},
});

describe('bench resume', () => {
  const reps: ResumeRep[] = [
    [12_000, 1_500],
    [10_000, 1_400],
    [11_000, 2_750],
  ].map(([c, r], i) => ({
    index: i,
    order: i % 2 === 0 ? 'cold-first' : 'resume-first',
    cold: cold(c!),
    pause_ms: 900 + i * 100,
    saved_bytes: (150 + i) * 2 ** 20,
    resume_ms: r!,
    exec_true_ms: 800,
  }));

  it('takes medians, the per-repetition ratio and the worst repetition against the target', () => {
    const s = summarizeResume(reps);
    expect(s.cold_ms.median).toBe(11_000);
    expect(s.resume_ms.median).toBe(1_500);
    expect(s.ratio_resume_vs_cold).toBe(0.136); // 1500 / 11000
    expect(s.ratio_resume_vs_cold_per_rep).toBe(0.14); // 0.125, 0.14, 0.25
    expect(s.ratio_worst_rep).toBe(0.25);
    expect(s.saved_mib.median).toBe(151);
    expect(s.target_met).toBe(true);
    expect(summarizeResume(reps, 0.13).target_met).toBe(false);
  });

  it('prints the times and the verdict', () => {
    const md = resumeTable({ vm: 'resume-vm', summary: summarizeResume(reps), reps });
    expect(md).toContain('| `banger vm resume` → SSH ready | 1.50 (1.40–2.75) |');
    expect(md).toContain('resume / cold **0.136** (per repetition 0.14, worst 0.25); target ≤ 0.15: **met**');
  });
});

describe('bench density', () => {
  const rollup = (rss: number, pss: number, anon: number, file: number): string =>
    [
      '55d0c0a00000-7ffd1b5f4000 ---p 00000000 00:00 0                          [rollup]',
      `Rss:              ${rss} kB`,
      `Pss:              ${pss} kB`,
      'Pss_Dirty:         1000 kB',
      `Pss_Anon:         ${anon} kB`,
      `Pss_File:         ${file} kB`,
      'Pss_Shmem:           0 kB',
      '',
    ].join('\n');

  it('reads Rss and Pss by kind from smaps_rollup (MiB), and fails without Pss', () => {
    expect(parseRollup(rollup(409_600, 204_800, 153_600, 51_200))).toEqual({
      rss: 400,
      pss: 200,
      pss_anon: 150,
      pss_file: 50,
      pss_shmem: 0,
    });
    expect(() => parseRollup('Rss: 1 kB\n')).toThrow(/no Pss line/);
  });

  it('sums each side and compares the clones with the cold VMs against the target', () => {
    const vmm = (vm: string, pss: number) => ({
      vm,
      pid: 1,
      rss: pss + 100,
      pss,
      pss_anon: pss - 20,
      pss_file: 20,
      pss_shmem: 0,
    });
    const clones = densitySide('warm-clones', [2_000.4, 2_100], [vmm('a', 150), vmm('b', 170)]);
    const coldSide = densitySide('cold', [12_000, 12_500], [vmm('c', 400), vmm('d', 410)]);
    expect(clones.total_pss_mib).toBe(320);
    expect(clones.total_rss_mib).toBe(520);
    expect(clones.create_ms).toEqual([2_000, 2_100]);
    const d: DensityResult = {
      n: 2,
      settle_s: 20,
      template: { id: 't', build_ms: 1, boot_ms: 1, save_ms: 1, state_bytes: 1, steps: {} },
      ram_file: { path: '/x/warm/t/ram', size_mib: 1024, resident_mib: 210 },
      clones,
      cold: coldSide,
      ratio_pss: 0.395,
      target_ratio: 0.5,
      target_met: true,
    };
    const md = densityTable(d);
    expect(md).toContain('| 2 clones of one template | 320 | 520 | 160 (150–170) | 130/20/0, 150/20/0 |');
    expect(md).toContain('clones / cold total Pss **0.395**; target ≤ 0.5: **met**');
    expect(md).toContain("the template's RAM file 1024 MiB (210 MiB in the page cache)");
  });
});
