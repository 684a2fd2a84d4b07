// Remote hosts over SSH (issue #17): two "hosts" (network namespaces, each with its own sshd and
// bangerd) and the CLI in a third namespace, as another user, reaching them only over SSH through
// contexts (test/fixtures/remote/hosts.ts). One VM per host at most (host a keeps one across the
// scenarios; host b gets `vm run --rm`'s, and a record that never boots).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cliBanger,
  killSshd,
  startRemoteWorld,
  startSshd,
  stopRemoteWorld,
  type RemoteWorld,
} from '../fixtures/remote/hosts.ts';
import { inNetns, ROOT } from './harness.ts';

const IMAGE_CACHE = process.env.BANGER_IMAGE_CACHE ?? '/var/cache/banger';
const VM_A = 'remote-a1';

let world: RemoteWorld;

async function ok(
  args: string[],
  opts: { timeoutMs?: number } = {},
): Promise<{ stdout: string; stderr: string }> {
  const r = await cliBanger(world, args, opts);
  if (r.code !== 0) throw new Error(`banger ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r;
}

async function json<T>(args: string[], opts: { timeoutMs?: number } = {}): Promise<T> {
  const dd = args.indexOf('--');
  const a = dd === -1 ? [...args, '--json'] : [...args.slice(0, dd), '--json', ...args.slice(dd)];
  return JSON.parse((await ok(a, opts)).stdout) as T;
}

/** Host a's VM, created (and booted) through context a once for the scenarios that need it. */
async function ensureVmOnA(): Promise<{ opId: string }> {
  const list = await json<{ name: string }[]>(['--context', 'a', 'vm', 'list']);
  if (list.some((v) => v.name === VM_A)) return { opId: '' };
  const r = await json<{ operation: { id: string; state: string } }>(
    ['--context', 'a', 'vm', 'create', '--name', VM_A],
    {
      timeoutMs: 600_000,
    },
  );
  expect(r.operation.state).toBe('succeeded');
  return { opId: r.operation.id };
}

describe('remote hosts over SSH', () => {
  beforeAll(async () => {
    const hash = (
      JSON.parse(readFileSync(join(IMAGE_CACHE, 'smoke-prebuilt', 'manifest.json'), 'utf8')) as {
        recipe_hash: string;
      }
    ).recipe_hash;
    world = await startRemoteWorld({ imageCache: IMAGE_CACHE, recipeHash: hash });
    // a: an ~/.ssh/config alias, the socket asked of the host; b: user@address and --socket.
    await ok(['context', 'add', 'a', 'ssh://host-a']);
    await ok([
      'context',
      'add',
      'b',
      `ssh://banger-remote@${world.hosts.b.addr}`,
      '--socket',
      world.hosts.b.env.socket,
    ]);
  }, 900_000);

  afterAll(async () => {
    if (world) await stopRemoteWorld(world);
  }, 300_000);

  it('remote_basic: status, create, ssh, logs, op trace through a context; vm run with a workspace on another', async () => {
    // The CLI's user cannot use a host's socket itself (0600, the host user's): SSH is the way in.
    const direct = await cliBanger(world, ['--socket', world.hosts.b.env.socket, 'vm', 'list']);
    expect(direct.code).toBe(69);
    expect(direct.stderr).toMatch(/permission denied/);

    type Status = { socket: string; state_dir: string; host: { committed_vcpus: number; cpus: number } };
    const sa = await json<Status>(['--context', 'a', 'daemon', 'status']);
    expect(sa.socket).toBe(world.hosts.a.env.socket); // asked of host a: its user's install default
    expect(sa.state_dir).toBe(world.hosts.a.env.stateDir);
    expect(sa.host.cpus).toBeGreaterThan(0);
    const sb = await json<Status>(['daemon', 'status'], {}).catch(() => undefined); // default: no local daemon
    expect(sb).toBeUndefined();
    const sb2 = await json<Status>(['--context', 'b', 'daemon', 'status']);
    expect(sb2.state_dir).toBe(world.hosts.b.env.stateDir);
    // BANGER_CONTEXT and the current context pick it too.
    const viaEnv = await cliBanger(world, ['daemon', 'status', '--json'], { env: { BANGER_CONTEXT: 'b' } });
    expect(JSON.parse(viaEnv.stdout).state_dir).toBe(world.hosts.b.env.stateDir);

    // Per-call cost of the transport against the host's own socket (docs/remote.md's figures).
    const node = join(ROOT, '.tools', 'node', 'bin', 'node');
    const lat = join(ROOT, 'test', 'fixtures', 'remote', 'latency.ts');
    const overSsh = await inNetns(world.cliNetns, [
      'setpriv',
      `--reuid=${world.cli.uid}`,
      `--regid=${world.cli.gid}`,
      '--clear-groups',
      'env',
      `HOME=${world.cliHome}`,
      `XDG_RUNTIME_DIR=${join(world.cliHome, 'run')}`,
      node,
      lat,
      'ssh',
      'host-a',
      world.hosts.a.env.socket,
      '30',
    ]);
    const local = await inNetns(world.hosts.a.netns, [node, lat, 'unix', world.hosts.a.env.socket, '30']);
    process.stderr.write(
      `remote_basic latency: ${overSsh.stdout.trim()} ${overSsh.stderr} / ${local.stdout.trim()}\n`,
    );
    expect(JSON.parse(overSsh.stdout).median_ms).toBeGreaterThan(0);

    // vm create through a; the op id the daemon reports is traceable there.
    const { opId } = await ensureVmOnA();
    expect(opId).toMatch(/^op-/);
    const host = await ok(['--context', 'a', 'vm', 'ssh', VM_A, '--', 'hostname']);
    expect(host.stdout.trim()).toBe(VM_A);
    const exec = await cliBanger(world, ['--context', 'a', 'vm', 'exec', VM_A, '--', 'sh', '-c', 'exit 7']);
    expect(exec.code).toBe(7);
    const logs = await ok(['--context', 'a', 'vm', 'logs', VM_A]);
    expect(logs.stdout.length).toBeGreaterThan(100);
    const trace = await json<{ op_id: string; summary?: { kind: string; state: string; vm: string } }>([
      '--context',
      'a',
      'op',
      'trace',
      opId,
    ]);
    expect(trace.op_id).toBe(opId);
    expect(trace.summary).toMatchObject({ kind: 'vm.create', state: 'succeeded', vm: VM_A });

    // vm run PATH --rm on b: the work tree (with an uncommitted change) crosses over SSH.
    const repo = join(world.cliHome, 'repo');
    const gitAs = [
      'setpriv',
      `--reuid=${world.cli.uid}`,
      `--regid=${world.cli.gid}`,
      '--clear-groups',
      'env',
      `HOME=${world.cliHome}`,
    ];
    const sh = (line: string): Promise<unknown> => inNetns(world.cliNetns, [...gitAs, 'sh', '-c', line]);
    await sh(
      `set -e; mkdir -p ${repo}; cd ${repo}; git init -q; git config user.email t@t; git config user.name t; echo committed > a.txt; git add a.txt; git commit -qm one; echo changed > a.txt; echo new > b.txt; git add b.txt`,
    );
    const run = await ok(
      [
        '--context',
        'b',
        'vm',
        'run',
        repo,
        '--rm',
        '--',
        'sh',
        '-c',
        'cat a.txt b.txt; pwd; git status --short',
      ],
      {
        timeoutMs: 600_000,
      },
    );
    expect(run.stdout).toContain('changed\nnew\n/root/repo\n');
    expect(run.stdout).toMatch(/M a\.txt/);
    expect(run.stderr).toMatch(/deleted /);
    expect((await json<unknown[]>(['--context', 'b', 'vm', 'list'])).length).toBe(0);
  });

  it('remote_all_contexts: vm list --all-contexts shows both hosts; --context auto picks the emptier', async () => {
    await ensureVmOnA();
    // auto: a holds a running VM, b holds none, so b has more free memory. --no-start: no boot.
    const created = await cliBanger(world, [
      'vm',
      'create',
      '--context',
      'auto',
      '--name',
      'remote-b1',
      '--no-start',
    ]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stderr).toMatch(/context auto: picked b \(/);
    expect(created.stderr).toMatch(/most free/);

    const all = await json<{
      vms: { context: string; name: string }[];
      errors: { context: string; error: string }[];
    }>(['vm', 'list', '--all-contexts']);
    expect(all.vms.map((v) => `${v.context}/${v.name}`).sort()).toEqual([`a/${VM_A}`, 'b/remote-b1']);
    // The CLI's own machine has no daemon: an error entry, not a failure.
    expect(all.errors.map((e) => e.context)).toEqual(['default']);
    const table = await ok(['vm', 'list', '--all-contexts']);
    expect(table.stdout).toMatch(/^CONTEXT\s+NAME/m);
    expect(table.stdout).toMatch(new RegExp(`^a\\s+${VM_A}\\s`, 'm'));
    expect(table.stdout).toMatch(/^b\s+remote-b1\s/m);
    expect(table.stdout).toMatch(/^default: unreachable/m);
    await ok(['--context', 'b', 'vm', 'delete', 'remote-b1']);
  });

  it('remote_failures: a host that goes away mid-command is named; a changed host key is refused', async () => {
    await ensureVmOnA();
    // vm logs -f through a, then host a's sshd (and every session) dies.
    const follow = cliBanger(world, ['--context', 'a', 'vm', 'logs', VM_A, '-f']);
    const t0 = Date.now();
    while (follow.output().stdout.length === 0 && Date.now() - t0 < 60_000)
      await new Promise((r) => setTimeout(r, 200));
    killSshd(world.hosts.a);
    const r = await follow;
    expect(r.code).toBe(69);
    expect(r.stderr).toMatch(/context a \(ssh:\/\/host-a\) went away during vm\.logs/);
    expect(r.stderr).toMatch(/\(op-[0-9a-f]{12}\)/);
    // While it is away: a new command says which host and ssh's reason.
    const down = await cliBanger(world, ['--context', 'a', 'vm', 'list']);
    expect(down.code).toBe(69);
    expect(down.stderr).toMatch(
      /context a \(ssh:\/\/host-a\): ssh: connect to host 10\.77\.1\.2 port 22: Connection refused/,
    );
    world.hosts.a.sshdPid = await startSshd(world.hosts.a);
    expect((await json<{ name: string }[]>(['--context', 'a', 'vm', 'list'])).map((v) => v.name)).toContain(
      VM_A,
    );

    // Host b's key changes (a new sshd key): its master is ended first, so the next command connects anew.
    const b = world.hosts.b;
    const ctlDir = join(world.cliHome, 'run', 'banger', 'ssh');
    await inNetns(world.cliNetns, [
      'sh',
      '-c',
      `for c in ${ctlDir}/*.ctl; do ssh -S "$c" -O exit x; done; true`,
    ]);
    await inNetns(b.netns, [
      'sh',
      '-c',
      `rm -f ${b.dir}/ssh_host_ed25519_key*; ssh-keygen -q -t ed25519 -N '' -f ${b.dir}/ssh_host_ed25519_key`,
    ]);
    killSshd(b);
    b.sshdPid = await startSshd(b);
    const changed = await cliBanger(world, ['--context', 'b', 'daemon', 'status']);
    expect(changed.code).toBe(69);
    expect(changed.stderr).toMatch(
      /context b \(ssh:\/\/banger-remote@10\.77\.2\.2\): the host key has changed/,
    );
    expect(changed.stderr).toMatch(/refused/);
  });
});
