// What a remote daemon's answers and parameters mean on this machine. Two methods name files:
//  - vm.ssh answers with the guest key and known_hosts *on the remote host*: they are fetched
//    through the context's SSH master into a private local directory (0700/0600), and the VM is
//    reached through the remote host (ProxyCommand `ssh -W` over the same master). Every caller
//    of vm.ssh (vm ssh, vm exec, vm run, devcontainer lifecycle and port forwards) then works
//    unchanged, with the terminal, signals and exit codes of a local ssh.
//  - vm.workspace.prepare takes a git work tree *on the daemon's host*: the local tree is sent
//    first (the same files a local prepare would copy, plus a shallow .git of HEAD) as one tar
//    through the master into a temporary directory there, prepared from, then removed.
import { chmodSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type {
  VmSshResult,
  VmWorkspacePrepareParams,
  VmWorkspacePrepareResult,
} from '../../generated/types.gen.ts';
import { RemoteError, sshReason, type RemoteAdapter } from '../rpc/ssh-transport.ts';
import { buildShallowGit, inspectRepo, lastLines, spawnWorkspaceTar } from '../vm/workspace-repo.ts';
import { writeFileAtomicSync } from '../util/atomic-write.ts';
import { shellQuote } from '../util/shell.ts';

const KH_MARK = '--banger-known-hosts--';

/** vm.ssh through a context: the key and known_hosts copied here, the VM reached via the host. */
export const remoteVmSsh: RemoteAdapter = async (params, call, tunnel) => {
  const r = (await call(params)) as VmSshResult;
  const got = await tunnel.exec(
    `cat -- ${shellQuote([r.identity_file])} && echo ${KH_MARK} && cat -- ${shellQuote([r.known_hosts_file])}`,
  );
  const text = got.stdout.toString('utf8');
  const at = text.indexOf(`\n${KH_MARK}\n`);
  if (got.code !== 0 || at === -1)
    throw new RemoteError(
      tunnel.endpoint.name,
      `${tunnel.endpoint.label}: cannot read the VM key ${r.identity_file} there (${sshReason(got.stderr)}); the ssh user must be the user bangerd runs as`,
    );
  const dir = join(tunnel.controlPath.replace(/\.ctl$/, ''), 'keys');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const key = join(dir, 'id');
  const kh = join(dir, 'known_hosts');
  // Replaced whole (another banger may be reading them for its ssh right now).
  writeFileAtomicSync(key, `${text.slice(0, at)}\n`, { mode: 0o600 });
  writeFileAtomicSync(kh, text.slice(at + KH_MARK.length + 2), { mode: 0o600 });
  return {
    ...r,
    identity_file: key,
    known_hosts_file: kh,
    ssh_options: [...r.ssh_options, `ProxyCommand=${tunnel.proxyCommand()}`],
  } satisfies VmSshResult;
};

/** vm.workspace.prepare through a context: the local tree sent to the host first. */
export const remoteWorkspacePrepare: RemoteAdapter = async (params, call, tunnel) => {
  const p = params as VmWorkspacePrepareParams;
  const mode = p.mode ?? 'tracked';
  const info = await inspectRepo(p.path, { includeUntracked: p.include_untracked ?? false, mode });
  if (info.submodules.length > 0)
    throw new RemoteError(
      tunnel.endpoint.name,
      `${p.path} has submodules (${info.submodules.join(', ')}): copying them to a remote host is not supported yet`,
    );
  const tmp = await mkdtemp(join(tmpdir(), 'banger-rws-'));
  let remoteDir: string | undefined;
  try {
    const gitDir = await buildShallowGit(info, join(tmp, 'git'));
    const tar = spawnWorkspaceTar(info, gitDir);
    // There: a fresh directory with exactly the files sent, all of them in the index (-f: one
    // force-added locally stays), so the daemon's own listing finds the same set.
    const script = [
      'set -e',
      'd=$(mktemp -d "${TMPDIR:-/tmp}/banger-ws.XXXXXX")',
      'echo "$d"',
      'tar -x -f - -C "$d"',
      'git -C "$d" add -A -f',
    ].join('; ');
    const r = await tunnel.exec(`sh -c ${shellQuote([script])}`, tar.stdout).catch((err: unknown) => {
      tar.kill();
      throw err;
    });
    remoteDir = r.stdout.toString('utf8').trim().split('\n')[0];
    if (r.code !== 0 || !remoteDir?.startsWith('/')) {
      tar.kill();
      throw new RemoteError(
        tunnel.endpoint.name,
        `${tunnel.endpoint.label}: copying ${info.root} there failed: ${sshReason(r.stderr)}`,
      );
    }
    // A tar that failed sent a partial tree: never prepare a workspace from it.
    const t = await tar.done;
    if (t.code !== 0 && t.code !== 1)
      throw new RemoteError(
        tunnel.endpoint.name,
        `tar of ${info.root} failed (exit ${t.code}): ${lastLines(t.stderr)}`,
      );
    const res = (await call({ ...p, path: remoteDir })) as VmWorkspacePrepareResult;
    // Said as the user knows it: the local tree.
    return { ...res, workspace: { ...res.workspace, host_path: info.root } };
  } finally {
    await rm(tmp, { recursive: true, force: true });
    if (remoteDir?.startsWith('/')) await tunnel.exec(`rm -rf -- ${shellQuote([remoteDir])}`);
  }
};

export const REMOTE_ADAPTERS: Record<string, RemoteAdapter> = {
  'vm.ssh': remoteVmSsh,
  'vm.workspace.prepare': remoteWorkspacePrepare,
};
