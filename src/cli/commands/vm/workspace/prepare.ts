import { resolve } from 'node:path';
import { Args, Flags } from '@oclif/core';
import type { VmWorkspacePrepareParams, Workspace } from '../../../../../generated/types.gen.ts';
import { BangerCommand } from '../../../base.ts';
import { withIdleResume } from '../../../idle-resume.ts';
import { formatBytes, formatDuration, paint, useColor } from '../../../format.ts';
import { checkVmName, usageError } from '../../../vm-ref.ts';

/** `12 files (34.5 KiB) from /src/app at 3f9a1c0 (main) → /root/repo` */
export function describeWorkspace(ws: Workspace): string {
  const files = `${ws.files} file${ws.files === 1 ? '' : 's'}`;
  const at = `${ws.base_commit.slice(0, 12)}${ws.branch ? ` (${ws.branch})` : ''}`;
  const what =
    ws.mode === 'full_copy' ? ', submodules included' : ws.include_untracked ? ', untracked included' : '';
  return `${files} (${formatBytes(ws.bytes)}${what}) from ${ws.host_path} at ${at} → ${ws.guest_path}`;
}

export default class VmWorkspacePrepare extends BangerCommand {
  static override summary = 'Copy a git work tree from this machine into a running VM.';
  static override description = `Copies the git-tracked files of PATH's repository (the whole repository, even when PATH is a directory inside it) into the VM, by default to /root/repo, with a shallow copy of its git history (HEAD only) so git status, git diff and git commit work in the VM: the files arrive as they are in your work tree, so uncommitted edits show up as changes there too.

Untracked files are copied only with --include-untracked; files git ignores never are. Bare repositories are refused, and so are repositories with submodules unless --mode full_copy (which copies the submodules' files as well). Preparing again replaces the VM's workspace (export your changes first: banger vm workspace export). banger vm exec then runs in the workspace by default.`;
  static override examples = [
    '<%= config.bin %> vm workspace prepare dev .',
    '<%= config.bin %> vm workspace prepare dev ~/src/app --include-untracked',
    '<%= config.bin %> vm workspace prepare dev ~/src/mono --mode full_copy --guest-path /srv/mono',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id); it must be running.' }),
    path: Args.string({
      required: true,
      description: 'A git work tree on this machine (or a directory inside one).',
    }),
  };
  static override flags = {
    'include-untracked': Flags.boolean({ summary: 'Also copy untracked files (never ignored ones).' }),
    mode: Flags.option({
      options: ['tracked', 'full_copy'] as const,
      summary: 'tracked: git-tracked files (default); full_copy: also the files of submodules.',
    })(),
    'guest-path': Flags.string({
      summary: 'Where to put it in the VM (default /root/repo).',
      helpValue: '<dir>',
    }),
  };

  async run(): Promise<{ workspace: Workspace }> {
    const { args, flags } = await this.parseWith(VmWorkspacePrepare);
    checkVmName(args.name);
    const guestPath = flags['guest-path'];
    if (guestPath !== undefined && !guestPath.startsWith('/'))
      throw usageError(`--guest-path ${guestPath}: give an absolute path in the VM`);
    const params: VmWorkspacePrepareParams = { name: args.name, path: resolve(args.path) };
    if (guestPath !== undefined) params.guest_path = guestPath;
    if (flags['include-untracked']) params.include_untracked = true;
    if (flags.mode !== undefined) params.mode = flags.mode;
    const t0 = Date.now();
    // An idle-paused VM is resumed first (said on stderr).
    const r = await withIdleResume(this.client, args.name, () => this.client.vm.workspace.prepare(params));
    const color = useColor(process.stdout);
    this.say(
      `${paint(color, 'green', '✓')} copied ${describeWorkspace(r.workspace)} in ${formatDuration(Date.now() - t0)}`,
    );
    this.say(`  run in it: ${this.config.bin} vm exec ${args.name} -- git status`);
    return r;
  }
}
