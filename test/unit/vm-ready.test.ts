import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitForAgentReady } from '../../src/vm/agent.ts';
import { createLogger } from '../../src/log/logger.ts';
import type { VmRow } from '../../src/store/index.ts';
import { vmFiles } from '../../src/vm/layout.ts';
import {
  BootStalledError,
  formatReadyTimes,
  guestCmdline,
  parseReadyTimes,
  waitReady,
  type MachineDeps,
} from '../../src/vm/machine.ts';
import type { VmRuntime } from '../../src/vm/runtime.ts';
import type { SshPaths } from '../../src/vm/ssh.ts';
import type { VmNetwork } from '../../src/vm/network.ts';

const tmp = mkdtempSync(join(tmpdir(), 'bg-ready-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('ready times in the wait_ready detail', () => {
  it('formats for people and parses back (10 ms resolution)', () => {
    const d = formatReadyTimes({ userspaceMs: 9_812, sshdMs: 14_203, sshMs: 15_049 });
    expect(d).toBe('since VMM start: userspace 9.81 s, sshd 14.20 s, ssh 15.05 s');
    expect(parseReadyTimes(d)).toEqual({ userspaceMs: 9_810, sshdMs: 14_200, sshMs: 15_050 });
  });

  it('keeps only what was seen, and ignores other details', () => {
    expect(parseReadyTimes(formatReadyTimes({ sshMs: 1_000 }))).toEqual({ sshMs: 1_000 });
    expect(parseReadyTimes('sshd is up; checking ssh')).toBeUndefined();
    expect(parseReadyTimes(undefined)).toBeUndefined();
  });
});

describe('guestCmdline', () => {
  it('keeps the root, console and network settings', () => {
    const c = guestCmdline({ name: 'calm-otter', networkMode: 'user' });
    expect(c.split(' ')).toEqual(
      expect.arrayContaining([
        'root=LABEL=banger-root',
        'rw',
        'net.ifnames=0',
        'ip=10.0.2.15::10.0.2.2:255.255.255.0:calm-otter:eth0:off:10.0.2.3',
      ]),
    );
    expect(guestCmdline({ name: 'x', networkMode: 'bridge' })).not.toContain('ip=');
  });
});

/** A fake host end of the agent port: the test decides what the "guest" writes and when. */
function fakeAgent(path: string, onClient: (s: Socket) => void): Promise<Server> {
  return new Promise((resolve) => {
    const srv = createServer(onClient);
    srv.listen(path, () => resolve(srv));
  });
}

describe('waitForAgentReady', () => {
  it('reports userspace, then ready with the boot id', async () => {
    const path = join(tmp, 'a1.sock');
    const srv = await fakeAgent(path, (s) => {
      s.write('banger-userspace\n');
      setTimeout(() => s.write('banger-ready boot_id=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n'), 30);
    });
    const lines: string[] = [];
    const st = await waitForAgentReady(path, { timeoutMs: 5_000, onLine: (l) => lines.push(l) });
    srv.close();
    expect(st).toEqual({ userspace: true, ready: true, bootId: '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0' });
    expect(lines).toEqual(['banger-userspace', 'banger-ready boot_id=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0']);
  });

  it('retries until the socket exists, and gives up at the deadline', async () => {
    const path = join(tmp, 'a2.sock');
    const t0 = Date.now();
    const st = await waitForAgentReady(path, { timeoutMs: 300 });
    expect(st.ready).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
  });
});

describe('waitReady: a boot that stalls', () => {
  /** A VM directory whose agent socket accepts and says nothing (a stuck guest). */
  async function stuckVm(
    name: string,
  ): Promise<{ deps: MachineDeps; vm: VmRow; srv: Server; serial: string }> {
    const stateDir = join(tmp, name);
    const id = 'a1b2c3d4e5f6';
    const f = vmFiles(stateDir, id);
    mkdirSync(f.dir, { recursive: true });
    writeFileSync(f.serialLog, 'Linux version 6.1\n');
    const srv = await fakeAgent(f.agentSocket, () => undefined);
    const deps = {
      stateDir,
      runtime: { isRunning: () => true, get: () => undefined } as unknown as VmRuntime,
      log: createLogger({ name: 't', quiet: true }),
      ssh: {} as SshPaths,
      accel: () => Promise.resolve('tcg' as const),
      readyTimeoutMs: 6_000,
      bootStallMs: 1_500,
      network: {} as VmNetwork, // user networking: never asked
    } satisfies MachineDeps;
    return { deps, vm: { id, name, networkMode: 'user' } as VmRow, srv, serial: f.serialLog };
  }

  it('fails with BootStalledError when the console shows nothing new before userspace', async () => {
    const { deps, vm, srv } = await stuckVm('stall');
    const t0 = Date.now();
    const err = await waitReady(deps, vm, new AbortController().signal).catch((e: unknown) => e);
    srv.close();
    expect(err).toBeInstanceOf(BootStalledError);
    expect((err as Error).message).toMatch(/the boot stalled \(no console output for 2 s/);
    // Noticed within a watchdog tick or two of the threshold, long before the ready timeout.
    expect(Date.now() - t0).toBeLessThan(4_500);
  });

  it('keeps waiting while the console grows (a slow boot is not a stuck one)', async () => {
    const { deps, vm, srv, serial } = await stuckVm('slow');
    const grow = setInterval(() => appendFileSync(serial, 'still booting\n'), 400);
    const err = await waitReady(deps, vm, new AbortController().signal).catch((e: unknown) => e);
    clearInterval(grow);
    srv.close();
    expect(err).not.toBeInstanceOf(BootStalledError);
    expect((err as Error).message).toMatch(/not ready within 6 s/);
  });
});
