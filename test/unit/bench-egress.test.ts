import { describe, expect, it } from 'vitest';
import {
  downloadScript,
  egressTable,
  parseDownload,
  summarizeEgress,
  type EgressRep,
  type EgressResult,
} from '../../bench/egress.ts';

const MIB100 = 100 * 2 ** 20;

describe('bench egress: the guest side', () => {
  it('goes through the proxy only when asked, overriding the guest’s proxy variables either way', () => {
    const direct = downloadScript('http://10.0.2.2:4000/blob');
    expect(direct).toContain(`--noproxy '*'`);
    expect(direct).not.toContain(' -x ');
    const proxied = downloadScript('http://127.0.0.1:4000/blob', 'http://10.0.2.100:3128');
    expect(proxied).toContain(`--noproxy '' -x http://10.0.2.100:3128`);
    expect(proxied).toMatch(
      /-w 'egress-bench %\{http_code\} %\{size_download\} %\{time_total\} %\{time_starttransfer\}\\n' http:\/\/127/,
    );
  });

  it('reads curl’s line among other output, and refuses a short or failed download', () => {
    const out = `Warning: something\negress-bench 200 ${MIB100} 3.456789\n`;
    expect(parseDownload(out, MIB100)).toEqual({ ms: 3456.8, bytes: MIB100 });
    expect(parseDownload(`egress-bench 200 ${MIB100} 3,5\n`, MIB100).ms).toBe(3500);
    expect(parseDownload(`egress-bench 200 ${MIB100} 1.2 0.0345\n`, MIB100)).toEqual({
      ms: 1200,
      bytes: MIB100,
      ttfb_ms: 34.5,
    });
    expect(() => parseDownload(`egress-bench 403 120 0.010\n`, MIB100)).toThrow(/answered 403/);
    expect(() => parseDownload(`egress-bench 200 1000 0.5\n`, MIB100)).toThrow(/got 1000 bytes/);
    expect(() => parseDownload('curl: (7) Failed to connect\n', MIB100)).toThrow(/no curl result line/);
  });
});

describe('bench egress: summary and table', () => {
  const dl = (ms: number) => ({ ms, bytes: MIB100, exec_ms: ms + 1500 });
  const reps: EgressRep[] = [
    [4000, 4400],
    [5000, 5200],
    [4500, 6300],
  ].map(([a, b], i) => ({
    index: i,
    order: i % 2 === 0 ? 'all-first' : 'allow-first',
    all: dl(a!),
    allow: dl(b!),
  }));

  it('takes medians, each repetition’s ratio and the worst against the target', () => {
    const s = summarizeEgress(reps, 100);
    expect(s.all_ms.median).toBe(4500);
    expect(s.allow_ms.median).toBe(5200);
    expect(s.ratio_allow_vs_all).toBe(1.156); // 5200 / 4500
    expect(s.ratio_each_rep).toEqual([1.1, 1.04, 1.4]);
    expect(s.ratio_worst_rep).toBe(1.4);
    expect(s.all_mib_s).toBe(22.2);
    expect(s.target_met).toBe(true);
    expect(summarizeEgress(reps, 100, 1.15).target_met).toBe(false);
  });

  it('prints the times, the verdict, why bridged has no figure, and the proxy alone', () => {
    const r: EgressResult = {
      network: 'user',
      bridged: 'not measured: no root helper',
      policies: { all: 'all', allow: 'allow=127.0.0.1:4000' },
      vms: { all: 'egress-all', allow: 'egress-allow' },
      summary: summarizeEgress(reps, 100),
      reps,
      proxy_only: {
        mb: 100,
        reps: 3,
        target_ratio: 1.2,
        results: { http: { direct_ms: 200, proxied_ms: 260, ratio: 1.3 } },
      },
    };
    const md = egressTable(r);
    expect(md).toContain('| curl in the guest, s: median (min–max) | 4.50 (4.00–5.00) | 5.20 (4.40–6.30) |');
    expect(md).toContain(
      'allow= / all **1.156** (each repetition 1.1, 1.04, 1.4; worst 1.4); target ≤ 1.2: **met**',
    );
    expect(md).toContain('Bridged mode: not measured: no root helper.');
    expect(md).toContain('http 1.3× (0.20 → 0.26 s)');
  });
});
