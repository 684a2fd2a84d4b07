import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Args, Flags } from '@oclif/core';
import type { VmWorkspaceExportParams, VmWorkspaceExportResult } from '../../../../../generated/types.gen.ts';
import { BangerCommand } from '../../../base.ts';
import { withIdleResume } from '../../../idle-resume.ts';
import { checkVmName, usageError } from '../../../vm-ref.ts';

export default class VmWorkspaceExport extends BangerCommand {
  static override summary = "Get the VM workspace's changes as a binary git patch.";
  static override description = `Collects everything that changed in the VM's workspace since the commit it was prepared from — commits made in the VM, staged and unstaged edits, new and deleted files, binary files, mode changes — as one binary git patch (the VM's own index is left alone). Files ignored by .gitignore are not included.

The patch goes to stdout, or to a file with -o. Apply it on this machine with git apply (add --index to stage it too) in a checkout of the base commit: the workspace was copied with your uncommitted edits, so those are in the patch as well — on the same work tree, git stash them first (or apply on a clean worktree). --base-commit diffs from another commit the VM knows, e.g. HEAD for only what is not yet committed in the VM.`;
  static override examples = [
    {
      description: 'Bring the changes home',
      command: '<%= config.bin %> vm workspace export dev | git apply --index',
    },
    { description: 'Into a file', command: '<%= config.bin %> vm workspace export dev -o dev.patch' },
    {
      description: 'Only what is not committed in the VM yet',
      command: '<%= config.bin %> vm workspace export dev --base-commit HEAD',
    },
  ];
  static override args = {
    name: Args.string({
      required: true,
      description: 'The VM (name or id); it must be running and have a workspace.',
    }),
  };
  static override flags = {
    'base-commit': Flags.string({
      summary: 'Commit to diff from (default: the commit the workspace was prepared from).',
      helpValue: '<rev>',
    }),
    output: Flags.string({
      char: 'o',
      summary: 'Write the patch to this file instead of stdout.',
      helpValue: '<file>',
    }),
  };

  async run(): Promise<VmWorkspaceExportResult & { output?: string }> {
    const { args, flags } = await this.parseWith(VmWorkspaceExport);
    checkVmName(args.name);
    const base = flags['base-commit'];
    if (base !== undefined && (base.startsWith('-') || !/^[A-Za-z0-9._/~^-]{1,200}$/.test(base)))
      throw usageError(`--base-commit ${base}: give a commit, branch or revision such as HEAD~1`);
    const params: VmWorkspaceExportParams = { name: args.name };
    if (base !== undefined) params.base_commit = base;
    // An idle-paused VM is resumed first (said on stderr).
    const r = await withIdleResume(this.client, args.name, () => this.client.vm.workspace.export(params));
    const files = `${r.files_changed} file${r.files_changed === 1 ? '' : 's'} changed since ${r.base_commit.slice(0, 12)}`;
    if (flags.output !== undefined) {
      const out = resolve(flags.output);
      writeFileSync(out, r.patch);
      this.say(`wrote ${out}: ${files}`);
      if (r.files_changed > 0) this.say(`  apply it: git apply --index ${flags.output}`);
      return { ...r, output: out };
    }
    if (!this.jsonEnabled()) {
      process.stdout.write(r.patch);
      process.stderr.write(`${files}\n`);
    }
    return r;
  }
}
