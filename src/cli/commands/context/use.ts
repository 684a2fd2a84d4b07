import { Args } from '@oclif/core';
import { BangerCommand } from '../../base.ts';
import { useContext } from '../../contexts.ts';

export default class ContextUse extends BangerCommand {
  static override summary = 'Make a context the current one (default: back to the local daemon).';
  static override description =
    'Commands without --context and without BANGER_CONTEXT then talk to it. --context and BANGER_CONTEXT still win.';
  static override examples = ['<%= config.bin %> context use srv', '<%= config.bin %> context use default'];
  static override args = {
    name: Args.string({ required: true, description: 'The context (or default).' }),
  };

  async run(): Promise<{ current: string }> {
    const { args } = await this.parse(ContextUse);
    useContext(args.name);
    this.say(`current context: ${args.name}`);
    if (process.env.BANGER_CONTEXT && process.env.BANGER_CONTEXT !== args.name)
      process.stderr.write(`note: BANGER_CONTEXT=${process.env.BANGER_CONTEXT} is set and wins over it\n`);
    return { current: args.name };
  }
}
