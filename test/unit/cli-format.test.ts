import { describe, expect, it } from 'vitest';
import {
  formatBoot,
  formatWarmTemplate,
  warmFallback,
  formatBytes,
  formatElapsed,
  formatMiB,
  formatRelativeTime,
  formatTimestamp,
  formatVmNetwork,
  normalizeSize,
  parseMemoryMiB,
  parseSizeBytes,
} from '../../src/cli/format.ts';
import type { Operation, Vm } from '../../generated/types.gen.ts';

describe('formatBytes', () => {
  it.each<[number, string]>([
    [0, '0 B'],
    [1, '1 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [1024 ** 2 - 1, '1.0 MiB'],
    [52428800, '50.0 MiB'],
    [352321536, '336.0 MiB'],
    [4 * 1024 ** 3, '4.0 GiB'],
    [2.5 * 1024 ** 4, '2.5 TiB'],
    [-1, '?'],
    [Number.NaN, '?'],
  ])('%d → %s', (n, want) => expect(formatBytes(n)).toBe(want));
});

describe('formatMiB', () => {
  it.each<[number, string]>([
    [128, '128 MiB'],
    [1023, '1023 MiB'],
    [1024, '1.0 GiB'],
    [1536, '1.5 GiB'],
    [262144, '256.0 GiB'],
  ])('%d → %s', (n, want) => expect(formatMiB(n)).toBe(want));
});

describe('formatRelativeTime', () => {
  const now = Date.parse('2026-01-14T12:00:00.000Z');
  const ago = (ms: number): string => new Date(now - ms).toISOString();
  it.each<[number, string]>([
    [0, 'just now'],
    [4_999, 'just now'],
    [30_000, '30s ago'],
    [3 * 60_000 + 10_000, '3m ago'],
    [2 * 3_600_000, '2h ago'],
    [5 * 86_400_000, '5d ago'],
    [-10 * 60_000, 'in 10m'],
  ])('%d ms ago → %s', (ms, want) => expect(formatRelativeTime(ago(ms), now)).toBe(want));
  it('old times are dates; garbage is "?"', () => {
    expect(formatRelativeTime('2025-01-01T00:00:00.000Z', now)).toBe('2025-01-01');
    expect(formatRelativeTime('yesterday', now)).toBe('?');
  });
  it('formatTimestamp', () => {
    expect(formatTimestamp(ago(180_000), now)).toBe('2026-01-14 11:57:00 UTC (3m ago)');
    expect(formatTimestamp('2025-01-01T00:00:00.000Z', now)).toBe('2025-01-01 00:00:00 UTC');
  });
});

describe('sizes', () => {
  it.each<[string, string | undefined, number | undefined]>([
    ['4G', '4G', 4 * 1024 ** 3],
    ['4g', '4G', 4 * 1024 ** 3],
    ['4GiB', '4G', 4 * 1024 ** 3],
    ['4GB', '4G', 4 * 1024 ** 3],
    ['512M', '512M', 512 * 1024 ** 2],
    ['1048576', '1048576', 1048576],
    [' 20G ', '20G', 20 * 1024 ** 3],
    ['1.5G', undefined, undefined],
    ['-1G', undefined, undefined],
    ['lots', undefined, undefined],
    ['4P', undefined, undefined],
    ['', undefined, undefined],
  ])('%j → %j, %j bytes', (input, norm, bytes) => {
    expect(normalizeSize(input)).toBe(norm);
    expect(parseSizeBytes(input)).toBe(bytes);
  });

  it('parseMemoryMiB: bare numbers are MiB, units convert, the rest is refused', () => {
    expect(parseMemoryMiB('2048')).toBe(2048);
    expect(parseMemoryMiB('2G')).toBe(2048);
    expect(parseMemoryMiB('512M')).toBe(512);
    expect(parseMemoryMiB('1GiB')).toBe(1024);
    expect(() => parseMemoryMiB('1000K')).toThrow(/not a whole number of MiB/);
    expect(() => parseMemoryMiB('two')).toThrow(/not a memory size/);
  });
});

describe('formatElapsed', () => {
  it.each<[number, string]>([
    [0, '  0.0s'],
    [1234, '  1.2s'],
    [61_000, ' 61.0s'],
    [-5, '  0.0s'],
  ])('%d → %j', (ms, want) => expect(formatElapsed(ms)).toBe(want));
});

describe('formatVmNetwork', () => {
  const base = { nat: false } as Vm;
  it('user mode shows the forwarded port; bridge the guest ip and nat', () => {
    expect(
      formatVmNetwork({
        ...base,
        network: { mode: 'user', mac: 'm', ssh_host: '127.0.0.1', ssh_port: 42022 },
      }),
    ).toBe('user 127.0.0.1:42022');
    expect(
      formatVmNetwork({ ...base, nat: true, network: { mode: 'bridge', mac: 'm', guest_ip: '172.16.0.5' } }),
    ).toBe('bridge 172.16.0.5 +nat');
    expect(formatVmNetwork({ ...base, network: { mode: 'user', mac: 'm' } })).toBe('user');
  });
});

describe('warm start in the CLI', () => {
  const tpl = {
    id: '1a2b3c4d5e6f7a8b',
    image: 'debian-bookworm',
    vcpus: 2,
    memory_mib: 1024,
    disk_size_bytes: 4 * 1024 ** 3,
    network: 'user' as const,
    accel: 'tcg' as const,
    engine_version: 'QEMU emulator version 7.2.0',
    created_at: '2026-11-28T10:00:00.000Z',
    state_bytes: 150 * 1024 ** 2,
    boot_ms: 10_000,
    save_ms: 1_000,
    stale: false,
    used_by: [] as string[],
  };

  it('one line per template, saying what backs on it and when it is stale', () => {
    expect(formatWarmTemplate(tpl)).toBe(
      '1a2b3c4d5e6f7a8b 2 vCPU, 1024 MiB, 4.0 GiB, user, tcg; state 150.0 MiB; no VMs',
    );
    expect(formatWarmTemplate({ ...tpl, stale: true, used_by: ['a', 'b'] })).toBe(
      '1a2b3c4d5e6f7a8b 2 vCPU, 1024 MiB, 4.0 GiB, user, tcg; state 150.0 MiB; backs a, b; STALE (not used for new VMs)',
    );
  });

  it('the boot note and the fallback reason of a create', () => {
    const vm = { warm_template: '1a2b3c4d5e6f7a8b' } as Vm;
    expect(formatBoot(vm)).toBe('warm start from template 1a2b3c4d5e6f7a8b');
    expect(formatBoot({} as Vm)).toBe('cold boot');
    const op = {
      steps: [{ name: 'warm_fallback', state: 'done', detail: 'warm start failed (x); booting cold' }],
    } as unknown as Operation;
    expect(warmFallback(op)).toBe('warm start failed (x); booting cold');
    expect(warmFallback({ steps: [] } as unknown as Operation)).toBeUndefined();
  });
});
