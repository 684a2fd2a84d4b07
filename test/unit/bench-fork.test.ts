// bench/fork.ts's summary: medians per number of children, the ratio to the cold creates of the
// same run, and the target judged on N = 1.
import { describe, expect, it } from 'vitest';
import { summarizeFork, type ForkRep } from '../../bench/fork.ts';

const rep = (children: number, fork_ms: number, cold: number, pause = 900): ForkRep => ({
  index: 0,
  children,
  order: 'cold-first',
  cold: { op: 'op-x', accepted: 10, sshReady: cold - 100, cli: cold, steps: {}, details: {} },
  fork_ms,
  source_pause_ms: pause,
  steps: {},
  exec_true_ms: 300,
});

describe('summarizeFork', () => {
  it('gives the ratio per N and judges the target on one child', () => {
    const s = summarizeFork([rep(1, 1500, 10_000), rep(1, 1700, 12_000), rep(4, 4000, 11_000, 1200)]);
    expect(s.cold_ms.median).toBe(11_000);
    expect(s.by_n['1']!.fork_ms.median).toBe(1600);
    expect(s.by_n['1']!.ratio_vs_cold).toBeCloseTo(1600 / 11_000, 2);
    expect(s.by_n['4']!.source_pause_ms.median).toBe(1200);
    expect(s.target_met).toBe(true);
    expect(summarizeFork([rep(1, 5000, 10_000)]).target_met).toBe(false);
  });
});
