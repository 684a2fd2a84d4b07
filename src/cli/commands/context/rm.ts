import { Args } from '@oclif/core';
import { BangerCommand } from '../../base.ts';
import { contextTunnel } from '../../context-client.ts';
import { getContext, readContexts, removeContext } from '../../contexts.ts';

export default class ContextRm extends BangerCommand {
  static override summary = 'Remove a context (and close its SSH connection).';
  static override aliases = ['context:remove'];
  static override examples = ['<%= config.bin %> context rm srv'];
  static override args = {
    name: Args.string({ required: true, description: 'The context.' }),
  };

  async run(): Promise<{ removed: string; was_current: boolean }> {
    const { args } = await this.parse(ContextRm);
    const ctx = getContext(args.name, readContexts());
    // Its master connection, if one is up: no reason to keep it for its idle minutes.
    await contextTunnel(ctx).close();
    const { wasCurrent } = removeContext(args.name);
    this.say(
      `removed context ${args.name}${wasCurrent ? '; the current context is default (the local daemon) again' : ''}`,
    );
    return { removed: args.name, was_current: wasCurrent };
  }
}
