// Real-VM scenarios of `banger vm run`, `vm exec` and `vm workspace` (issue 5). Every scenario's
// name starts with its id: `npm run smoke -- -t workspace_export` runs one alone. Scenarios on the
// workspace VM share it when they run together (it is made on first use), so the file boots few
// guests: each real boot costs ~30-40 s of CPU under TCG.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Vm, Workspace } from '../../generated/types.gen.ts';
import { git, makeTestRepo, type TestRepo } from '../helpers/git-repo.ts';
import {
  banger,
  bangerJson,
  bangerSpawn,
  daemonLogRecords,
  pinnedHosts,
  uniqueName,
  vmDirs,
} from './harness.ts';

const repos: TestRepo[] = [];
const leftovers: string[] = [];
function repo(): TestRepo {
  const r = makeTestRepo('bsmoke-repo');
  // The daemon runs as banger-smoke and reads the work tree itself, as a real daemon reads its
  // user's: this root-made tree must be readable by it (git there trusts it: see harness.ts).
  chmodSync(dirname(r.dir), 0o755);
  repos.push(r);
  return r;
}

afterAll(async () => {
  for (const n of leftovers) await banger(['vm', 'delete', n]);
  for (const r of repos) r.cleanup();
});

async function vmNames(): Promise<string[]> {
  return (await bangerJson<Vm[]>(['vm', 'list'])).map((v) => v.name);
}

/** After a --rm run: no row, no directory, no pinned host key. */
async function expectGone(name: string, dirsBefore: string[]): Promise<void> {
  expect(await vmNames()).not.toContain(name);
  expect((await banger(['vm', 'show', name])).code).toBe(3);
  expect(vmDirs()).toEqual(dirsBefore);
  expect(pinnedHosts()).not.toContain(`${name}.vm`);
}

// The workspace VM: `vm run REPO -d`, shared by the scenarios that only read or extend it.
interface WsVm {
  name: string;
  repo: TestRepo;
  vm: Vm;
  workspace: Workspace;
  stderr: string;
}
let wsVm: Promise<WsVm> | undefined;
function workspaceVm(): Promise<WsVm> {
  wsVm ??= (async () => {
    const r = repo();
    const name = uniqueName('ws');
    leftovers.push(name);
    const out = await banger(['vm', 'run', r.dir, '-d', '--name', name, '--json']);
    if (out.code !== 0) throw new Error(`vm run -d failed (${out.code}): ${out.stderr}${out.stdout}`);
    const j = JSON.parse(out.stdout) as { vm: Vm; workspace: Workspace };
    return { name, repo: r, vm: j.vm, workspace: j.workspace, stderr: out.stderr };
  })();
  return wsVm;
}

async function exec(
  name: string,
  ...args: string[]
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return banger(['vm', 'exec', name, '--', ...args]);
}

/** sha256, mode and name of every file below the current directory (.git excluded), sorted. */
const TREE_SUMS = [
  'find . -path ./.git -prune -o \\( -type f -o -type l \\) -print | LC_ALL=C sort | while read -r f; do',
  `  printf '%s %s %s\\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$(stat -c %a "$f")" "$f"`,
  'done',
].join('\n');

describe('vm run on real VMs', () => {
  it('bare_run: vm run --rm -- echo prints the spec first, shows progress, runs the command, and deletes the VM', async () => {
    const dirs = vmDirs();
    const name = uniqueName('bare');
    const r = await banger(['vm', 'run', '--rm', '--name', name, '--', 'echo', 'smoke-bare-ok']);
    expect(r.code, r.stderr).toBe(0);
    // stdout is the command's output only; banger's own lines are on stderr, the spec first.
    expect(r.stdout).toBe('smoke-bare-ok\n');
    const lines = r.stderr.split('\n');
    expect(lines[0]).toMatch(/^spec: 2 vcpu · 768 MiB · 3G disk · image \S+$/);
    for (const step of ['resolve_image', 'prepare_disk', 'boot', 'wait_ready'])
      expect(r.stderr).toMatch(new RegExp(`${step} done \\(`));
    expect(r.stderr).toContain(`${name} is running`);
    expect(r.stderr).toContain(`deleted ${name}`);
    await expectGone(name, dirs);
  });

  it('exit_code: vm run exits with the command’s exit code, and every argument arrives intact', async () => {
    const name = uniqueName('exit');
    leftovers.push(name);
    const r = await banger([
      'vm',
      'run',
      '--rm',
      '--name',
      name,
      '--',
      'sh',
      '-c',
      'printf "%s|" "$@"; exit 42',
      'sh',
      'a b',
      "it's",
      '$HOME',
      '*',
      '',
    ]);
    expect(r.code, r.stderr).toBe(42);
    expect(r.stdout).toBe("a b|it's|$HOME|*||");
    expect(await vmNames()).not.toContain(name);
  });

  it('dry_run: vm run --dry-run prints the spec and the plan with the file count, and creates nothing', async () => {
    const r = repo();
    const namesBefore = await vmNames();
    const dirs = vmDirs();
    const logBefore = daemonLogRecords().length;
    const human = await banger([
      'vm',
      'run',
      r.dir,
      '--include-untracked',
      '--rm',
      '--dry-run',
      '--',
      'make',
      'test',
    ]);
    expect(human.code, human.stderr).toBe(0);
    const out = human.stdout.split('\n');
    expect(out[0]).toMatch(/^spec: 2 vcpu · 768 MiB · 3G disk · image \S+$/);
    expect(human.stdout).toContain('dry run: nothing was created');
    expect(human.stdout).toMatch(
      /copy 6 files \(5 tracked, 1 untracked\), .* of .*\/repo at [0-9a-f]{12} \(main\) to \/root\/repo/,
    );
    expect(human.stdout).toContain('run make test in /root/repo and exit with its exit code');
    expect(human.stdout).toMatch(/delete \S+ when it ends/);

    const j = await bangerJson<{
      dry_run: boolean;
      spec: { name: string; vcpus: number; memory_mib: number; image_ready: boolean };
      workspace: { files: number; untracked_files: number; base_commit: string };
      steps: string[];
    }>(['vm', 'run', r.dir, '--vcpu', '1', '--memory', '512', '--dry-run']);
    expect(j.dry_run).toBe(true);
    expect(j.spec).toMatchObject({ vcpus: 1, memory_mib: 512, image_ready: true });
    expect(j.workspace).toMatchObject({ files: 5, untracked_files: 0, base_commit: r.head });

    // Nothing was created, and the daemon was only asked read-only questions.
    expect(await vmNames()).toEqual(namesBefore);
    expect(vmDirs()).toEqual(dirs);
    expect(await vmNames()).not.toContain(j.spec.name);
    const methods = new Set(
      daemonLogRecords()
        .slice(logBefore)
        .filter((l) => l.msg === 'rpc completed' || l.msg === 'rpc failed')
        .map((l) => l.method),
    );
    methods.delete('vm.list');
    // image.show: the image's run defaults (an OCI image's Env, WorkingDir, User), read-only too.
    methods.delete('image.show');
    expect([...methods]).toEqual(['vm.create.plan']);
  });

  it('invalid_spec: invalid specs and refused repositories fail with a clear error and leave nothing', async () => {
    const dirs = vmDirs();
    const namesBefore = await vmNames();
    const r = repo();
    const bare = join(r.dir, '..', 'bare.git');
    git(r.dir, 'clone', '-q', '--bare', r.dir, bare);
    const withSub = join(r.dir, '..', 'withsub');
    git(r.dir, 'clone', '-q', r.dir, withSub);
    git(withSub, 'config', 'user.name', 'Host Dev');
    git(withSub, 'config', 'user.email', 'host@example.com');
    git(withSub, '-c', 'protocol.file.allow=always', 'submodule', 'add', '-q', r.dir, 'vendor/lib');
    git(withSub, 'commit', '-q', '-m', 'submodule');
    const cases: [string[], number, RegExp][] = [
      [['vm', 'create', '--name', 'Bad_Name'], 2, /invalid VM name/],
      [['vm', 'create', '--name', uniqueName('inv'), '--vcpu', '0'], 2, /vcpu/],
      [['vm', 'create', '--name', uniqueName('inv'), '--disk-size', '1K'], 2, /at least 512M/],
      [['vm', 'create', '--name', uniqueName('inv'), '--image', 'no-such-image'], 3, /image "no-such-image"/],
      [['vm', 'run', '--vcpu', '0', '--', 'true'], 2, /vcpu/],
      [['vm', 'run', '--disk-size', '100M', '--', 'true'], 2, /at least 512M/],
      [['vm', 'run', '--image', 'no-such-image', '--', 'true'], 3, /image "no-such-image"/],
      [['vm', 'run', '-d', '--rm'], 2, /use one of them/],
      [['vm', 'run', '-d', '--', 'true'], 2, /runs no command/],
      [['vm', 'run', '--include-untracked', '--', 'true'], 2, /give one/],
      [['vm', 'run', bare, '--', 'true'], 2, /bare git repository/],
      [['vm', 'run', withSub, '--', 'true'], 2, /submodules \(vendor\/lib\).*--mode full_copy/],
      [['vm', 'run', join(r.dir, 'missing'), '--', 'true'], 2, /no such directory/],
      [['vm', 'run', tmpdir(), '--', 'true'], 2, /not inside a git work tree/],
      [['vm', 'exec', 'no-such-vm', '--', 'true'], 3, /not found/],
    ];
    for (const [args, code, msg] of cases) {
      const res = await banger(args);
      expect(res.code, `${args.join(' ')}: ${res.stderr}`).toBe(code);
      expect(res.stderr, args.join(' ')).toMatch(/^error: /m);
      expect(res.stderr, args.join(' ')).toMatch(msg);
    }
    expect(vmDirs()).toEqual(dirs);
    expect(await vmNames()).toEqual(namesBefore);
  });

  it('rm_interrupt: vm run --rm deletes the VM when interrupted with Ctrl-C during the command (exit 130)', async () => {
    const dirs = vmDirs();
    const name = uniqueName('intr');
    leftovers.push(name);
    const p = bangerSpawn([
      'vm',
      'run',
      '--rm',
      '--name',
      name,
      '--',
      'sh',
      '-c',
      'echo started; exec sleep 600',
    ]);
    await p.waitFor(/^started$/m);
    p.kill('SIGINT');
    const r = await p.done;
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain(`deleted ${name}`);
    await expectGone(name, dirs);
  });

  it('include_untracked: vm run PATH --include-untracked copies untracked files, never ignored ones; the shell starts in the workspace', async () => {
    const r = repo();
    const name = uniqueName('untr');
    leftovers.push(name);
    // No command: the shell opens in /root/repo. Without a terminal it reads its commands from
    // stdin, and banger exits with the shell's exit code.
    const script = [
      'pwd',
      'cat untracked.txt',
      'for f in debug.log build; do test -e "$f" && echo "LEAKED $f"; done',
      'git status --porcelain',
      'exit 3',
      '',
    ].join('\n');
    const res = await banger(['vm', 'run', r.dir, '--include-untracked', '--rm', '--name', name], {
      input: script,
    });
    expect(res.code, res.stderr).toBe(3);
    expect(res.stdout).toBe('/root/repo\nnot tracked\n M README.md\n?? untracked.txt\n');
    expect(res.stderr).toMatch(/workspace: 6 files .*untracked included/);
    expect(await vmNames()).not.toContain(name);
  });

  it('workspace_run: vm run PATH copies tracked files (untracked and ignored absent) with a shallow git state', async () => {
    const w = await workspaceVm();
    expect(w.workspace).toMatchObject({
      host_path: w.repo.dir,
      guest_path: '/root/repo',
      mode: 'tracked',
      include_untracked: false,
      base_commit: w.repo.head,
      branch: 'main',
      files: 5,
    });
    expect(w.stderr.split('\n')[0]).toMatch(/^spec: /);
    expect(w.stderr).toMatch(/✓ workspace: 5 files/);
    const r = await exec(
      w.name,
      'sh',
      '-c',
      'pwd; cat src/app.txt; for f in untracked.txt debug.log build; do test -e "$f" && echo "LEAKED $f"; done; git status --porcelain; git rev-list --count HEAD; git rev-parse HEAD',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`/root/repo\napp v2\n M README.md\n1\n${w.repo.head}\n`);
    const shown = await bangerJson<Vm>(['vm', 'show', w.name]);
    expect(shown.workspace?.base_commit).toBe(w.repo.head);
    const human = await banger(['vm', 'show', w.name]);
    expect(human.stdout).toMatch(/workspace\s+\/root\/repo ← .*\/repo at [0-9a-f]{12} \(main\), 5 files/);
  });

  it('detach_exec: vm run -d returns once ready; vm exec runs in the workspace and propagates exit codes', async () => {
    const w = await workspaceVm();
    expect(w.vm.state).toBe('running');
    expect((await exec(w.name, 'pwd')).stdout).toBe('/root/repo\n');
    const other = await banger(['vm', 'exec', w.name, '--cwd', '/tmp', '--', 'pwd']);
    expect(other.stdout).toBe('/tmp\n');
    expect((await exec(w.name, 'sh', '-c', 'exit 7')).code).toBe(7);
    const args = await exec(w.name, 'printf', '%s|', 'a b', "it's", '$HOME');
    expect(args.stdout).toBe("a b|it's|$HOME|");
    const usage = await banger(['vm', 'exec', w.name]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/give the command to run after --/);
  });

  it('workspace_export: guest commits and changes come back as a patch that git apply reproduces on the host', async () => {
    const w = await workspaceVm();
    const change = [
      'set -e',
      "printf 'app v3 from the guest\\n' > src/app.txt",
      "git -c user.name=Guest -c user.email=guest@example.com commit -q -am 'guest commit'",
      "printf 'new in the guest\\n' > notes.txt",
      "printf '\\000\\001\\377 binary\\n' > blob.bin",
      'git rm -q data.bin',
      "printf 'staged\\n' > staged.txt && git add staged.txt",
      'chmod -x run.sh',
    ].join('\n');
    expect((await exec(w.name, 'sh', '-c', change)).code).toBe(0);
    const statusBefore = (await exec(w.name, 'git', 'status', '--porcelain')).stdout;

    const dir = join(tmpdir(), `bsmoke-export-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    try {
      const patchFile = join(dir, 'ws.patch');
      const toFile = await banger(['vm', 'workspace', 'export', w.name, '-o', patchFile]);
      expect(toFile.code, toFile.stderr).toBe(0);
      expect(toFile.stdout).toMatch(/wrote .*ws\.patch: 7 files changed since [0-9a-f]{12}/);
      const viaStdout = await banger(['vm', 'workspace', 'export', w.name]);
      expect(viaStdout.stdout).toBe(readFileSync(patchFile, 'utf8'));
      expect(viaStdout.stderr).toMatch(/7 files changed/);
      // The guest's own index and status are untouched by the export.
      expect((await exec(w.name, 'git', 'status', '--porcelain')).stdout).toBe(statusBefore);

      // On the host: the base commit plus the patch is the guest's tree, byte for byte.
      const clean = join(dir, 'clean');
      git(dir, 'clone', '-q', w.repo.dir, clean);
      git(clean, 'checkout', '-q', w.repo.head);
      git(clean, 'apply', '--index', patchFile);
      const hostSums = execFileSync('sh', ['-c', TREE_SUMS], { cwd: clean, encoding: 'utf8' });
      const guestSums = await exec(w.name, 'sh', '-c', TREE_SUMS);
      expect(guestSums.code).toBe(0);
      expect(hostSums).toBe(guestSums.stdout);
      expect(hostSums).toContain('./blob.bin');
      expect(hostSums).not.toContain('./data.bin');
      expect(readFileSync(join(clean, 'README.md'), 'utf8')).toContain('with a local edit');

      // Only what is not committed in the guest: --base-commit HEAD.
      const sinceHead = await bangerJson<{ files_changed: number; patch: string }>([
        'vm',
        'workspace',
        'export',
        w.name,
        '--base-commit',
        'HEAD',
      ]);
      // (the guest commit took src/app.txt and the host's README.md edit along: commit -a)
      expect(sinceHead.patch).not.toContain('src/app.txt');
      expect(sinceHead.patch).not.toContain('README.md');
      expect(sinceHead.files_changed).toBe(5);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('workspace_stop_start: workspace writes survive vm stop and vm start; the workspace stays recorded', async () => {
    const w = await workspaceVm();
    const bootsBefore = (await bangerJson<Vm>(['vm', 'show', w.name])).boot_count;
    expect((await exec(w.name, 'sh', '-c', 'echo kept-$((6*7)) > persisted.txt')).code).toBe(0);
    expect((await banger(['vm', 'stop', w.name])).code).toBe(0);
    const stopped = await exec(w.name, 'true');
    expect(stopped.code).toBe(5); // not_running
    expect(stopped.stderr).toMatch(/not running; start it with/);
    expect((await banger(['vm', 'start', w.name])).code).toBe(0);
    const r = await exec(w.name, 'cat', 'persisted.txt');
    expect(r.stdout).toBe('kept-42\n');
    const shown = await bangerJson<Vm>(['vm', 'show', w.name]);
    expect(shown.workspace?.guest_path).toBe('/root/repo');
    expect(shown.boot_count).toBe(bootsBefore + 1);
  });

  it('vm_restart: vm restart boots the guest again (new boot id), disk kept', async () => {
    const w = await workspaceVm();
    const bootId = async (): Promise<string> =>
      (await exec(w.name, 'cat', '/proc/sys/kernel/random/boot_id')).stdout.trim();
    const before = await bootId();
    expect(before).toMatch(/^[0-9a-f-]{36}$/);
    const count = (await bangerJson<Vm>(['vm', 'show', w.name])).boot_count;
    const res = await banger(['vm', 'restart', w.name]);
    expect(res.code, res.stderr).toBe(0);
    const after = await bootId();
    expect(after).toMatch(/^[0-9a-f-]{36}$/);
    expect(after).not.toBe(before);
    expect((await bangerJson<Vm>(['vm', 'show', w.name])).boot_count).toBe(count + 1);
    expect((await exec(w.name, 'git', 'rev-parse', 'HEAD')).code).toBe(0);
  });

  it('concurrent_runs: two vm run --rm at once each run in their own VM and leave nothing', async () => {
    const dirs = vmDirs();
    const a = uniqueName('cona');
    const b = uniqueName('conb');
    leftovers.push(a, b);
    const [ra, rb] = await Promise.all([
      banger(['vm', 'run', '--rm', '--name', a, '--', 'hostname']),
      banger(['vm', 'run', '--rm', '--name', b, '--', 'hostname']),
    ]);
    expect(ra.code, ra.stderr).toBe(0);
    expect(rb.code, rb.stderr).toBe(0);
    expect(ra.stdout).toBe(`${a}\n`);
    expect(rb.stdout).toBe(`${b}\n`);
    await expectGone(a, dirs);
    await expectGone(b, dirs);
  });
});
