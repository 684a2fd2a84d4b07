import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { capacityOf, pickContext, type Capacity } from '../../src/cli/context-fanout.ts';
import { INSTALL_TOML } from '../../src/paths.ts';
import { answers } from '../../src/rpc/listen.ts';
import { REMOTE_SOCKET_PROBE, remoteSocketProbe, sshReason, SshTunnel } from '../../src/rpc/ssh-transport.ts';
import type { DaemonStatusResult } from '../../generated/types.gen.ts';

describe('ssh reasons', () => {
  it('keeps the last meaningful line', () => {
    expect(sshReason('ssh: connect to host srv port 22: Connection refused\r\n')).toBe(
      'ssh: connect to host srv port 22: Connection refused',
    );
    expect(sshReason("Warning: Permanently added 'x' (ED25519) to the list of known hosts.\n")).toBe(
      'ssh failed without saying why',
    );
  });
  it('turns the changed-host-key banner into one refusal', () => {
    const banner = [
      '@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@',
      '@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @',
      '@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@',
      'IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!',
      'Offending ED25519 key in /home/me/.ssh/known_hosts:3',
      'Host key for 10.0.0.2 has changed and you have requested strict checking.',
      'Host key verification failed.',
    ].join('\n');
    const r = sshReason(banner);
    expect(r).toMatch(/^the host key has changed/);
    expect(r).toContain('Offending ED25519 key in /home/me/.ssh/known_hosts:3');
    expect(r).toMatch(/refused/);
  });
});

describe('the remote socket probe', () => {
  // The install marker is a file of the test's own (present or not), never this machine's.
  const dir = mkdtempSync(join(tmpdir(), 'banger-probe-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const marker = join(dir, "install's.toml");
  const probe = (env: Record<string, string>): string =>
    spawnSync('sh', ['-c', remoteSocketProbe(marker)], {
      env: { PATH: '/usr/bin:/bin', ...env },
      encoding: 'utf8',
    }).stdout.trim();
  it('names the system install marker of src/paths.ts by default', () => {
    expect(INSTALL_TOML).toBe('/etc/banger/install.toml');
    expect(REMOTE_SOCKET_PROBE).toContain(`[ -e '/etc/banger/install.toml' ]`);
  });
  it('follows src/paths.ts: BANGER_SOCKET, then XDG_RUNTIME_DIR, then /tmp/banger-UID', () => {
    expect(probe({ BANGER_SOCKET: '/x/y.sock' })).toBe('/x/y.sock');
    const uid = process.getuid?.() ?? 0;
    expect(probe({ XDG_RUNTIME_DIR: '/run/user/7' })).toBe('/run/user/7/banger/bangerd.sock');
    expect(probe({})).toBe(uid === 0 ? '/run/banger/bangerd.sock' : `/tmp/banger-${uid}/bangerd.sock`);
  });
  it('a system install (the marker present) uses /run/banger, whatever XDG_RUNTIME_DIR says', () => {
    writeFileSync(marker, '');
    try {
      expect(probe({ XDG_RUNTIME_DIR: '/run/user/7' })).toBe('/run/banger/bangerd.sock');
      expect(probe({ BANGER_SOCKET: '/x/y.sock' })).toBe('/x/y.sock');
    } finally {
      rmSync(marker);
    }
  });
});

describe('the tunnel', () => {
  it('keeps its sockets short and per context, and its ProxyCommand quoted', () => {
    const t = new SshTunnel(
      { name: 'srv', destination: 'me@srv', port: 2222, label: 'x' },
      '/run/user/1000/banger/ssh',
    );
    const u = new SshTunnel(
      { name: 'other', destination: 'me@srv', port: 2222, label: 'x' },
      '/run/user/1000/banger/ssh',
    );
    expect(t.localSocket).not.toBe(u.localSocket);
    expect(t.localSocket.length).toBeLessThan(100);
    expect(t.baseArgs()).toEqual(['-S', t.controlPath, '-o', 'BatchMode=yes', '-p', '2222']);
    expect(t.proxyCommand()).toBe(
      `ssh '-S' '${t.controlPath}' '-o' 'BatchMode=yes' '-p' '2222' -W %h:%p -- 'me@srv'`,
    );
  });
});

describe('the tunnel socket check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-tunnel-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a missing or dead local socket does not answer (no existsSync needed before the probe)', async () => {
    expect(await answers(join(dir, 'missing.sock'))).toBe(false);
    const plain = join(dir, 'plain-file.sock');
    writeFileSync(plain, '');
    expect(await answers(plain)).toBe(false);
  });

  it('a local socket that answers is reused as is: no ssh is run', async () => {
    // A destination no ssh could reach: were the master started, socket() would fail.
    const t = new SshTunnel({ name: 'srv', destination: 'nobody@invalid.invalid', label: 'x' }, dir);
    const server = createServer((c) => c.destroy());
    await new Promise<void>((resolve) => server.listen(t.localSocket, resolve));
    try {
      expect(await t.socket()).toBe(t.localSocket);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('--context auto', () => {
  const status = (total: number, committed: number, cpus: number, vcpus: number): DaemonStatusResult =>
    ({
      host: {
        hostname: 'h',
        cpus,
        memory_total_mib: total,
        memory_available_mib: total,
        committed_vcpus: vcpus,
        committed_memory_mib: committed,
      },
    }) as DaemonStatusResult;
  it('picks the most free memory, then vCPUs, then the name', () => {
    const caps = [
      capacityOf('a', status(8192, 2048, 4, 2)),
      capacityOf('b', status(8192, 1024, 2, 2)),
      capacityOf('c', status(4096, 0, 8, 0)),
    ] as Capacity[];
    expect(pickContext(caps)?.context).toBe('b');
    const tie = [
      capacityOf('y', status(4096, 0, 2, 1)),
      capacityOf('x', status(4096, 0, 2, 0)),
    ] as Capacity[];
    expect(pickContext(tie)?.context).toBe('x');
    const same = [
      capacityOf('y', status(4096, 0, 2, 0)),
      capacityOf('x', status(4096, 0, 2, 0)),
    ] as Capacity[];
    expect(pickContext(same)?.context).toBe('x');
    expect(pickContext([])).toBeUndefined();
    expect(capacityOf('old', {} as DaemonStatusResult)).toBeUndefined();
  });
});
