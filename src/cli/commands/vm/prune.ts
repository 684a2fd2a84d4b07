import { Flags } from '@oclif/core';
import type { VmPruneResult } from '../../../../generated/types.gen.ts';
import { createInterface } from 'node:readline/promises';
import { BangerCommand } from '../../base.ts';
import { usageError } from '../../vm-ref.ts';

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(question);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

export default class VmPrune extends BangerCommand {
  static override summary = 'Delete every stopped VM.';
  static override description = `Deletes every VM that is stopped or in the error state (disk, console log and record); running VMs are kept. --dry-run only lists what would go. On a terminal it lists them and asks first; without a terminal (scripts) it needs -f/--force.`;
  static override examples = [
    '<%= config.bin %> vm prune --dry-run',
    '<%= config.bin %> vm prune',
    '<%= config.bin %> vm prune -f',
  ];
  static override flags = {
    'dry-run': Flags.boolean({ summary: 'Only list the VMs that would be deleted.' }),
    force: Flags.boolean({ char: 'f', summary: 'Do not ask.' }),
  };

  async run(): Promise<VmPruneResult & { dry_run: boolean }> {
    const { flags } = await this.parseWith(VmPrune);
    const dry = flags['dry-run'];
    if (!dry && !flags.force) {
      if (!process.stdin.isTTY || this.jsonEnabled()) {
        throw usageError('vm prune deletes every stopped VM: pass -f to confirm, or --dry-run to see which');
      }
      const preview = await this.client.vm.prune({ dry_run: true });
      if (preview.deleted.length === 0) {
        this.say('no stopped VMs to delete');
        return { ...preview, dry_run: false };
      }
      this.say(`would delete: ${preview.deleted.join(', ')}`);
      if (!(await confirm(`Delete ${preview.deleted.length} VM(s)? [y/N] `))) {
        this.say('nothing deleted');
        return { deleted: [], kept: [...preview.kept, ...preview.deleted], dry_run: false };
      }
    }
    const r = await this.client.vm.prune(dry ? { dry_run: true } : {});
    if (r.deleted.length === 0) this.say('no stopped VMs to delete');
    else this.say(`${dry ? 'would delete' : 'deleted'}: ${r.deleted.join(', ')}`);
    if (r.kept.length > 0) this.say(`kept (not stopped): ${r.kept.join(', ')}`);
    return { ...r, dry_run: dry };
  }
}
