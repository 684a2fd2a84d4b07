import { Args } from '@oclif/core';
import { BangerCommand } from '../base.ts';
import {
  bashCompletion,
  completionTable,
  zshCompletion,
  type CompletionCommand,
  type CompletionFlag,
} from '../completion.ts';

export default class Completion extends BangerCommand {
  static override summary = 'Print the shell completion script for bash or zsh.';
  static override description = `Completes commands, topics, flags and flag choices (e.g. vm create --network), and paths for other flag values. The script is generated from this CLI's own command list, so regenerate it after an upgrade.

bash: add \`source <(banger completion bash)\` to ~/.bashrc (or save the output as ~/.local/share/bash-completion/completions/banger).
zsh: add \`source <(banger completion zsh)\` to ~/.zshrc after compinit (or save the output as _banger in a directory of your $fpath).`;
  static override examples = [
    'source <(<%= config.bin %> completion bash)',
    '<%= config.bin %> completion zsh > ~/.zfunc/_banger',
  ];
  static override args = {
    shell: Args.string({ required: true, options: ['bash', 'zsh'], description: 'The shell.' }),
  };

  async run(): Promise<{ shell: string; script: string }> {
    const { args } = await this.parseWith(Completion);
    // oclif's manifest, as loaded: ids, aliases, flags, choices; no command module is imported.
    const commands: CompletionCommand[] = this.config.commands.map((c) => ({
      id: c.id,
      summary: c.summary ?? c.description?.split('\n')[0],
      aliases: c.aliases,
      hidden: c.hidden,
      flags: Object.fromEntries(
        Object.entries(c.flags).map(([name, f]): [string, CompletionFlag] => [
          name,
          {
            name,
            type: f.type,
            char: f.char,
            options: f.type === 'option' ? f.options : undefined,
            allowNo: f.type === 'boolean' ? f.allowNo : undefined,
            hidden: f.hidden,
          },
        ]),
      ),
    }));
    const table = completionTable(commands, this.config.topics);
    const script =
      args.shell === 'zsh' ? zshCompletion(table, this.config.bin) : bashCompletion(table, this.config.bin);
    if (!this.jsonEnabled()) process.stdout.write(script);
    return { shell: args.shell, script };
  }
}
