// Idle pause, the pure parts: duration text, the per-VM decision, host-side SSH detection.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  formatIdleDuration,
  IdleDurationError,
  idleDecision,
  lastUseOf,
  parseIdleDuration,
  type IdleFacts,
} from '../../src/vm/idle.ts';
import { hasSshSession, parseProcNetTcp } from '../../src/daemon/idle-ssh.ts';
import { heartbeatMs } from '../../src/cli/idle-resume.ts';

describe('idle_pause_after duration text', () => {
  it.each([
    ['20s', 20_000],
    ['30m', 1_800_000],
    ['1h30m', 5_400_000],
    ['2d', 172_800_000],
    ['1h0m10s', 3_610_000],
    [' 45s ', 45_000],
    ['', 0],
    ['0', 0],
    ['0s', 0],
  ])('%j is %d ms', (text, ms) => {
    expect(parseIdleDuration(text)).toBe(ms);
  });

  it.each(['30', '5x', '1m1h', '-1m', '1.5h', 'm', '30 m', '9s', '31d', 'off'])('%j is refused', (text) => {
    expect(() => parseIdleDuration(text)).toThrow(IdleDurationError);
  });

  it('says what it takes', () => {
    expect(() => parseIdleDuration('30')).toThrow(/give a number with a unit \(s, m, h, d\), e\.g\. 30m/);
    expect(() => parseIdleDuration('5s')).toThrow(/from 10s to 30d/);
  });

  it('the wire schema (IdleDurationText) lets through every text the parser accepts', () => {
    const schema = JSON.parse(
      readFileSync(new URL('../../schema/methods.json', import.meta.url), 'utf8'),
    ) as {
      $defs: { IdleDurationText: { pattern: string } };
    };
    const re = new RegExp(schema.$defs.IdleDurationText.pattern);
    for (const text of ['0', '', '0s', '20s', '30m', '1h30m', '2d', '1d2h3m4s']) {
      expect(() => parseIdleDuration(text)).not.toThrow();
      expect(re.test(text), text).toBe(true);
    }
    expect(re.test('30 m')).toBe(false);
  });

  it('formats back to text the parser reads as the same value', () => {
    for (const ms of [10_000, 20_000, 1_800_000, 5_400_000, 3_610_000, 90_061_000])
      expect(parseIdleDuration(formatIdleDuration(ms))).toBe(ms);
    expect(formatIdleDuration(5_400_000)).toBe('1h30m');
    expect(formatIdleDuration(0)).toBe('0');
  });
});

describe('idleDecision', () => {
  const base: IdleFacts = {
    running: true,
    busy: undefined,
    session: false,
    pausing: false,
    afterMs: 60_000,
    lastUsedMs: 1_000_000,
    now: 1_000_000,
  };

  it('waits until the window has passed, then pauses', () => {
    expect(idleDecision({ ...base, now: base.lastUsedMs + 59_999 })).toEqual({ action: 'wait', dueInMs: 1 });
    expect(idleDecision({ ...base, now: base.lastUsedMs + 60_000 })).toEqual({
      action: 'pause',
      idleMs: 60_000,
    });
  });

  it('is off at 0 whatever else holds', () => {
    expect(idleDecision({ ...base, afterMs: 0, now: base.now + 1e9 })).toEqual({ action: 'off' });
  });

  it('never pauses a VM that is not running or already being paused', () => {
    const late = base.now + 1e9;
    expect(idleDecision({ ...base, running: false, now: late }).action).toBe('skip');
    expect(idleDecision({ ...base, pausing: true, now: late }).action).toBe('skip');
  });

  it('a busy VM or one with an SSH session is used now, however long ago it was last used', () => {
    const late = base.now + 1e9;
    expect(idleDecision({ ...base, busy: 'exporting its workspace', now: late })).toEqual({ action: 'used' });
    expect(idleDecision({ ...base, busy: 'forking', now: late })).toEqual({ action: 'used' });
    expect(idleDecision({ ...base, session: true, now: late })).toEqual({ action: 'used' });
  });

  it('the last use of a record is the newest of last use, last start and creation', () => {
    const t = (s: string): number => Date.parse(s);
    expect(
      lastUseOf({
        lastUsedAt: '2026-01-01T10:00:00.000Z',
        lastStartedAt: '2026-01-01T09:00:00.000Z',
        createdAt: '2026-01-01T08:00:00.000Z',
      }),
    ).toBe(t('2026-01-01T10:00:00.000Z'));
    expect(
      lastUseOf({
        lastUsedAt: null,
        lastStartedAt: '2026-01-01T09:00:00.000Z',
        createdAt: '2026-01-01T08:00:00.000Z',
      }),
    ).toBe(t('2026-01-01T09:00:00.000Z'));
    expect(lastUseOf({ lastStartedAt: null, createdAt: '2026-01-01T08:00:00.000Z' })).toBe(
      t('2026-01-01T08:00:00.000Z'),
    );
  });
});

// A /proc/net/tcp of a daemon namespace (little-endian host): QEMU's hostfwd listening on
// 127.0.0.1:41022 (0xA03E), an ssh client connected to it (both ends), a TIME_WAIT to 41023, an
// established connection to a bridged guest 10.213.0.2:22, and one to 10.213.0.3:80.
const TABLE_LE = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A03E 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D2F0 0100007F:A03E 01 00000000:00000000 00:00000000 00000000  1000        0 22222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:A03E 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 33333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D2F2 0100007F:A03F 06 00000000:00000000 03:00000AFE 00000000     0        0 0 3 0000000000000000
   4: 0100D50A:C350 0200D50A:0016 01 00000000:00000000 02:00000A1E 00000000     0        0 44444 2 0000000000000000 20 4 30 10 -1
   5: 0100D50A:C352 0300D50A:0050 01 00000000:00000000 02:00000A1E 00000000     0        0 55555 2 0000000000000000 20 4 30 10 -1
`;

describe('host-side SSH session detection (/proc/net/tcp)', () => {
  const conns = parseProcNetTcp(TABLE_LE, true);

  it('parses addresses (host byte order), ports and the established state; skips the header', () => {
    expect(conns).toHaveLength(6);
    expect(conns[0]).toEqual({
      localIp: '127.0.0.1',
      localPort: 41022,
      remoteIp: '0.0.0.0',
      remotePort: 0,
      established: false,
    });
    expect(conns[4]).toMatchObject({ localIp: '10.213.0.1', remoteIp: '10.213.0.2', remotePort: 22 });
    expect(conns.map((c) => c.established)).toEqual([false, true, true, false, true, true]);
  });

  it('reads a big-endian host the other way round', () => {
    const be = parseProcNetTcp('   0: 7F000001:0016 0A000002:C350 01 0 0 0 0 0 0\n', false);
    expect(be[0]).toMatchObject({ localIp: '127.0.0.1', localPort: 22, remoteIp: '10.0.0.2' });
  });

  it('user mode: an established connection to the forwarded port is a session; a listener or TIME_WAIT is not', () => {
    expect(hasSshSession(conns, { mode: 'user', port: 41022 })).toBe(true);
    expect(hasSshSession(conns, { mode: 'user', port: 41023 })).toBe(false);
    expect(hasSshSession(conns.slice(0, 1), { mode: 'user', port: 41022 })).toBe(false);
  });

  it('bridged: an established connection to the guest address on port 22 only', () => {
    expect(hasSshSession(conns, { mode: 'bridge', ip: '10.213.0.2' })).toBe(true);
    expect(hasSshSession(conns, { mode: 'bridge', ip: '10.213.0.3' })).toBe(false);
    expect(hasSshSession(conns, { mode: 'bridge', ip: '10.213.0.4' })).toBe(false);
  });

  it('garbage lines are skipped, not fatal', () => {
    expect(parseProcNetTcp('nonsense\n  7: zz:zz 00:00 01\n\n', true)).toEqual([]);
  });
});

describe('the CLI heartbeat period', () => {
  it('is a third of the VM idle_pause_after, from 3 s to 60 s; 60 s when idle pause is off', () => {
    expect(heartbeatMs('30s')).toBe(10_000);
    expect(heartbeatMs('10s')).toBe(3333);
    expect(heartbeatMs('30m')).toBe(60_000);
    expect(heartbeatMs(undefined)).toBe(60_000);
  });
});
