import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import type { VmSshResult } from '../../generated/types.gen.ts';
import { buildSshArgv } from '../../src/cli/ssh-exec.ts';
import { shellQuote } from '../../src/util/shell.ts';

describe('shellQuote', () => {
  it.each<[string[], string]>([
    [['ls'], 'ls'],
    [['ls', '-la', '/tmp'], 'ls -la /tmp'],
    [['echo', 'a b'], "echo 'a b'"],
    [['echo', "it's"], `echo 'it'\\''s'`],
    [['echo', ''], "echo ''"],
    [['echo', '$HOME'], "echo '$HOME'"],
    [['ls', '*.txt'], "ls '*.txt'"],
    [['echo', 'a\nb'], "echo 'a\nb'"],
    [['sh', '-c', 'exit 42'], "sh -c 'exit 42'"],
    [['FOO=bar', 'env'], "'FOO=bar' env"],
    [['echo', '~'], "echo '~'"],
    [['echo', '#x'], "echo '#x'"],
    [
      ['echo', 'a;b', 'a|b', 'a&b', '$(id)', '`id`', '{a,b}', 'a>b', '!x'],
      "echo 'a;b' 'a|b' 'a&b' '$(id)' '`id`' '{a,b}' 'a>b' '!x'",
    ],
    [["'"], `''\\'''`],
    [['user@host:/p', '--flag', 'a,b', '1.5', '50%'], 'user@host:/p --flag a,b 1.5 50%'],
    [[], ''],
  ])('%j → %s', (args, want) => {
    expect(shellQuote(args)).toBe(want);
  });

  it('round-trips through a real POSIX shell: every argument arrives intact', () => {
    const args = [
      'a b',
      "it's",
      '',
      '$HOME',
      '*',
      'a\nb',
      "'",
      '"',
      '\\',
      'x=1',
      '-n',
      '~root',
      '$(echo pwned)',
      '\t',
    ];
    const r = spawnSync('sh', ['-c', `printf '%s\\0' ${shellQuote(args)}`], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout.split('\0').slice(0, -1)).toEqual(args);
  });
});

describe('buildSshArgv', () => {
  const c: VmSshResult = {
    name: 'calm-otter',
    host: '127.0.0.1',
    port: 42022,
    user: 'root',
    identity_file: '/k/id',
    known_hosts_file: '/k/kh',
    host_key_alias: 'calm-otter.vm',
    ssh_options: ['HostKeyAlias=calm-otter.vm'],
  };

  it('interactive on a TTY: -t, no BatchMode, no command', () => {
    expect(buildSshArgv(c, { command: [], tty: true })).toEqual([
      '-i',
      '/k/id',
      '-p',
      '42022',
      '-o',
      'UserKnownHostsFile=/k/kh',
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'LogLevel=ERROR',
      '-o',
      'HostKeyAlias=calm-otter.vm',
      '-t',
      '--',
      'root@127.0.0.1',
    ]);
  });

  it('a command: BatchMode, one quoted command word after the destination', () => {
    const argv = buildSshArgv(c, { command: ['-x', 'a b'], tty: false });
    expect(argv).toContain('BatchMode=yes');
    expect(argv).not.toContain('-t');
    // `--` before the destination, so a command word starting with '-' is not read as an option
    expect(argv.slice(-3)).toEqual(['--', 'root@127.0.0.1', "-x 'a b'"]);
  });
});
