// The pure parts of `vm run`, `vm exec` and `vm workspace`: the spec line, the dry-run plan, the
// remote command line (run through a real sh to prove the quoting), and the workspace summary.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { VmCreatePlanResult, VmSshResult } from '../../generated/types.gen.ts';
import { compactSize, planSteps, specLine } from '../../src/cli/run-plan.ts';
import { describeWorkspace } from '../../src/cli/commands/vm/workspace/prepare.ts';
import { guestSshArgv, remoteLine } from '../../src/cli/guest-run.ts';
import { signalExitCode } from '../../src/util/shell.ts';
import type { RepoInfo } from '../../src/vm/workspace.ts';

const plan: VmCreatePlanResult = {
  name: 'calm-otter',
  name_generated: true,
  image: 'debian-bookworm',
  image_ready: true,
  vcpus: 2,
  memory_mib: 1024,
  disk_size_bytes: 4 * 1024 ** 3,
  network: 'user',
  nat: false,
  egress: { mode: 'all', rules: [] },
};

const details: VmSshResult = {
  name: 'calm-otter',
  host: '127.0.0.1',
  port: 42022,
  user: 'root',
  identity_file: '/s/id',
  known_hosts_file: '/s/kh',
  host_key_alias: 'calm-otter.vm',
  ssh_options: ['StrictHostKeyChecking=yes'],
};

describe('vm run output', () => {
  it('prints the resolved spec in one line', () => {
    expect(specLine(plan)).toBe('spec: 2 vcpu · 1024 MiB · 4G disk · image debian-bookworm');
    expect(specLine({ ...plan, image_ready: false, nat: true, disk_size_bytes: 512 * 1024 ** 2 })).toBe(
      'spec: 2 vcpu · 1024 MiB · 512M disk · image debian-bookworm (built first) · nat',
    );
    expect(
      specLine({
        ...plan,
        egress: { mode: 'allow', rules: [{ kind: 'domain', value: 'a.test', text: 'a.test' }] },
      }),
    ).toBe('spec: 2 vcpu · 1024 MiB · 4G disk · image debian-bookworm · egress allow=a.test');
    expect(compactSize(1536 * 1024 ** 2)).toBe('1536M');
    expect(compactSize(1000)).toBe('1000 B');
  });

  it('plans in words: build, create, boot, copy, run, delete', () => {
    const repo = {
      root: '/src/app',
      head: '3f9a1c07b2d4e5f60718293a4b5c6d7e8f901234',
      branch: 'main',
      files: [Buffer.from('a'), Buffer.from('b'), Buffer.from('c')],
      bytes: 2048,
      untracked: 1,
      submodules: [],
      mode: 'tracked' as const,
      includeUntracked: true,
    } satisfies RepoInfo & { mode: 'tracked'; includeUntracked: boolean };
    const steps = planSteps({
      plan: { ...plan, image_ready: false },
      repo,
      command: ['make', 'test it'],
      rm: true,
      detach: false,
      bin: 'banger',
    });
    expect(steps).toEqual([
      'build the default image debian-bookworm (once; a few minutes)',
      'create VM calm-otter (a random name; --name picks one) from image debian-bookworm: 2 vCPU, 1024 MiB, 4G disk, user network',
      'boot it and wait until SSH answers',
      'copy 3 files (2 tracked, 1 untracked), 2.0 KiB, of /src/app at 3f9a1c07b2d4 (main) to /root/repo, with a shallow git history',
      "run make 'test it' in /root/repo and exit with its exit code",
      'delete calm-otter when it ends (also on Ctrl-C)',
    ]);
    const detached = planSteps({ plan, command: [], rm: false, detach: true, bin: 'banger' });
    expect(detached.at(-1)).toBe(
      'return, leaving calm-otter running (run things in it: banger vm exec calm-otter -- CMD)',
    );
    const shell = planSteps({ plan, command: [], rm: false, detach: false, bin: 'banger' });
    expect(shell.slice(-2)).toEqual([
      'open an interactive shell',
      'leave calm-otter running afterwards (delete it with: banger vm delete calm-otter)',
    ]);
  });

  it('describes a workspace', () => {
    expect(
      describeWorkspace({
        host_path: '/src/app',
        guest_path: '/root/repo',
        mode: 'tracked',
        include_untracked: false,
        base_commit: '3f9a1c07b2d4e5f60718293a4b5c6d7e8f901234',
        branch: 'main',
        files: 1,
        bytes: 10,
        prepared_at: '2026-01-01T00:00:00.000Z',
      }),
    ).toBe('1 file (10 B) from /src/app at 3f9a1c07b2d4 (main) → /root/repo');
  });
});

describe('the remote command line', () => {
  it('cds into the workspace and keeps every argument intact', () => {
    const dir = mkdtempSync(join(tmpdir(), "bws it's "));
    try {
      const args = ['printf', '%s|', 'a b', "it's", '$HOME', '*', '', 'x\ny'];
      const line = remoteLine(args, dir)!;
      expect(line.startsWith('cd ')).toBe(true);
      expect(execFileSync('sh', ['-c', line], { encoding: 'utf8' })).toBe("a b|it's|$HOME|*||x\ny|");
      expect(execFileSync('sh', ['-c', remoteLine(['pwd'], dir)!], { encoding: 'utf8' }).trim()).toBe(dir);
      // A failing cd stops the command.
      expect(() =>
        execFileSync('sh', ['-c', remoteLine(['true'], join(dir, 'gone'))!], { stdio: 'ignore' }),
      ).toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('without a command: a login shell in the directory, or a plain login', () => {
    expect(remoteLine([], '/root/repo')).toBe('cd /root/repo && exec "${SHELL:-/bin/sh}" -l');
    expect(remoteLine([], undefined)).toBeUndefined();
    expect(remoteLine(['ls'], undefined)).toBe('ls');
  });

  it('builds the ssh argv: batch mode for commands, -t for a terminal, the line last', () => {
    const cmd = guestSshArgv(details, { command: ['ls', '-la'], cwd: '/root/repo', tty: false });
    expect(cmd.slice(-3)).toEqual(['--', 'root@127.0.0.1', 'cd /root/repo && ls -la']);
    expect(cmd).toContain('BatchMode=yes');
    expect(cmd).not.toContain('-t');
    const shell = guestSshArgv(details, { command: [], cwd: '/root/repo', tty: true });
    expect(shell).toContain('-t');
    expect(shell.at(-1)).toBe('cd /root/repo && exec "${SHELL:-/bin/sh}" -l');
    const login = guestSshArgv(details, { command: [], tty: true });
    expect(login.at(-1)).toBe('root@127.0.0.1');
  });

  it('signal exit codes are 128+N', () => {
    expect(signalExitCode('SIGINT')).toBe(130);
    expect(signalExitCode('SIGTERM')).toBe(143);
  });
});
