import { describe, expect, it } from 'vitest';
import { BEGIN, END, installBlock, removeBlock, sshConfigBlock } from '../../src/cli/ssh-config.ts';
import { parseSsListen } from '../../src/daemon/guest-ports.ts';

const block = sshConfigBlock({ identityFile: '/s/ssh/id_ed25519', knownHostsFile: '/s/ssh/known_hosts' });

describe('ssh-config block', () => {
  it('matches *.vm with banger’s key and pinned host keys', () => {
    expect(block.startsWith(`${BEGIN}\n`)).toBe(true);
    expect(block.trimEnd().endsWith(END)).toBe(true);
    expect(block).toContain('Host *.vm\n');
    expect(block).toContain('    IdentityFile "/s/ssh/id_ed25519"\n');
    expect(block).toContain('    UserKnownHostsFile "/s/ssh/known_hosts"\n');
    expect(block).toContain('    StrictHostKeyChecking yes\n');
  });

  it('installs at the top, replaces an older copy, and uninstalls to the original text', () => {
    const original = 'Host *\n    ServerAliveInterval 30\n';
    const once = installBlock(original, block);
    expect(once.startsWith(BEGIN)).toBe(true);
    expect(once.endsWith(original)).toBe(true);
    const older = installBlock(original, block.replace('/s/', '/old/'));
    expect(installBlock(older, block)).toBe(once);
    expect(installBlock(once, block)).toBe(once);
    expect(removeBlock(once)).toBe(original);
    expect(removeBlock(original)).toBe(original);
    expect(installBlock('', block)).toBe(block);
    expect(removeBlock(block)).toBe('');
  });

  it('leaves a damaged block alone', () => {
    const damaged = `${BEGIN}\nHost *.vm\n`;
    expect(removeBlock(damaged)).toBe(damaged);
  });
});

describe('vm.ports parsing of ss -Htlnp', () => {
  const ss = [
    'LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=401,fd=3))',
    'LISTEN 0      128             [::]:22           [::]:*    users:(("sshd",pid=401,fd=4))',
    'LISTEN 0      4096   127.0.0.53%lo:53        0.0.0.0:*    users:(("systemd-resolve",pid=300,fd=14))',
    'LISTEN 0      511        127.0.0.1:6379      0.0.0.0:*',
    'LISTEN 0      511                *:8080            *:*    users:(("node",pid=900,fd=20))',
    'garbage line',
    'LISTEN 0 1 1.2.3.4:99999 0.0.0.0:*',
  ].join('\n');

  it('one entry per port, loopback-only marked, endpoints for reachable ports', () => {
    expect(parseSsListen(ss, 'calm-otter.vm')).toEqual([
      {
        port: 22,
        proto: 'tcp',
        address: '0.0.0.0',
        process: 'sshd',
        loopback_only: false,
        endpoint: 'calm-otter.vm:22',
      },
      { port: 53, proto: 'tcp', address: '127.0.0.53', process: 'systemd-resolve', loopback_only: true },
      { port: 6379, proto: 'tcp', address: '127.0.0.1', loopback_only: true },
      {
        port: 8080,
        proto: 'tcp',
        address: '0.0.0.0',
        process: 'node',
        loopback_only: false,
        endpoint: 'calm-otter.vm:8080',
      },
    ]);
    expect(parseSsListen(ss).every((p) => p.endpoint === undefined)).toBe(true);
    expect(parseSsListen('')).toEqual([]);
  });
});
