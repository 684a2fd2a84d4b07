// The CLI side of idle pause: vm ssh/exec/run/workspace resume a VM the idle timer paused (and
// say so on stderr), leave a VM paused by request alone, and cost nothing extra when it runs.
import { describe, expect, it, vi } from 'vitest';
import type { BangerClient } from '../../generated/client.gen.ts';
import type { Vm, VmSshResult } from '../../generated/types.gen.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { heartbeat, sshDetailsResuming, withIdleResume } from '../../src/cli/idle-resume.ts';

const DETAILS = { name: 'a', host: '127.0.0.1', port: 2222, user: 'root' } as unknown as VmSshResult;

function fake(vm: Partial<Vm> & { state: Vm['state'] }): { client: BangerClient; calls: string[] } {
  const calls: string[] = [];
  let state = vm.state;
  let idle = vm.idle_paused_at;
  const client = {
    vm: {
      ssh: async () => {
        calls.push('ssh');
        if (state !== 'running') throw new ErrorResponse('not_running', 'vm "a" is not running');
        return DETAILS;
      },
      show: async () => {
        calls.push('show');
        return { vm: { name: 'a', state, ...(idle ? { idle_paused_at: idle } : {}) } };
      },
      resume: async () => {
        calls.push('resume');
        state = 'running';
        idle = undefined;
        return { vm: { name: 'a', state } };
      },
    },
  } as unknown as BangerClient;
  return { client, calls };
}

describe('idle resume in the CLI', () => {
  it('a running VM: the one vm.ssh call, nothing said', async () => {
    const { client, calls } = fake({ state: 'running' });
    const said: string[] = [];
    expect(await sshDetailsResuming(client, 'a', undefined, (l) => said.push(l))).toBe(DETAILS);
    expect(calls).toEqual(['ssh']);
    expect(said).toEqual([]);
  });

  it('an idle-paused VM is resumed, said on the side channel, then reached', async () => {
    const { client, calls } = fake({ state: 'paused', idle_paused_at: '2026-01-01T00:00:00.000Z' });
    const said: string[] = [];
    expect(await sshDetailsResuming(client, 'a', undefined, (l) => said.push(l))).toBe(DETAILS);
    expect(calls).toEqual(['ssh', 'show', 'resume', 'ssh']);
    expect(said).toEqual(['resuming idle-paused VM a…']);
  });

  it('a VM paused by request (or stopped) is not resumed: the not_running error stands', async () => {
    const { client, calls } = fake({ state: 'paused' });
    const err = await withIdleResume(
      client,
      'a',
      () => client.vm.ssh({ name: 'a' }),
      () => undefined,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ErrorResponse);
    expect((err as ErrorResponse).code).toBe('not_running');
    expect(calls).toEqual(['ssh', 'show']);
  });

  it('other errors are not a reason to look', async () => {
    const { client, calls } = fake({ state: 'running' });
    const err = await withIdleResume(
      client,
      'a',
      () => Promise.reject(new ErrorResponse('not_found', 'vm "a" not found')),
      () => undefined,
    ).catch((e: unknown) => e);
    expect((err as ErrorResponse).code).toBe('not_found');
    expect(calls).toEqual([]);
  });
});

describe('the session heartbeat (vm.touch)', () => {
  it('touches at once, then every third of the VM window, and not after stop', async () => {
    vi.useFakeTimers();
    try {
      const touched: number[] = [];
      const client = {
        vm: {
          touch: async () => {
            touched.push(Date.now());
            return { vm: { name: 'a', idle_pause_after: '30s' } };
          },
        },
      } as unknown as BangerClient;
      const t0 = Date.now();
      const stop = heartbeat(client, 'a');
      await vi.advanceTimersByTimeAsync(0);
      expect(touched).toEqual([t0]);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(touched).toEqual([t0, t0 + 10_000]);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(touched).toHaveLength(3);
      stop();
      await vi.advanceTimersByTimeAsync(60_000);
      expect(touched).toHaveLength(3);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a failed touch does not end the session: it tries again a minute later', async () => {
    vi.useFakeTimers();
    try {
      let calls = 0;
      const client = {
        vm: {
          touch: async () => {
            calls++;
            throw new ErrorResponse('not_found', 'gone');
          },
        },
      } as unknown as BangerClient;
      const stop = heartbeat(client, 'a');
      await vi.advanceTimersByTimeAsync(59_999);
      expect(calls).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(calls).toBe(2);
      stop();
    } finally {
      vi.useRealTimers();
    }
  });
});
