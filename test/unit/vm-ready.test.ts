import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitForAgentReady } from '../../src/vm/agent.ts';
import { formatReadyTimes, guestCmdline, parseReadyTimes } from '../../src/vm/machine.ts';

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
