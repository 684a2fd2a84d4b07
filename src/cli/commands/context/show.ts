import { Args } from '@oclif/core';
import { BangerCommand } from '../../base.ts';
import { getContext, readContexts, resolveTarget } from '../../contexts.ts';

export interface ContextShown {
  name: string;
  url: string;
  socket?: string;
  /** Why this context: --context, --socket, BANGER_CONTEXT, BANGER_SOCKET, current context, default. */
  source: string;
}

export default class ContextShow extends BangerCommand {
  static override summary = 'Show a context, or the one commands use now and why.';
  static override examples = ['<%= config.bin %> context show', '<%= config.bin %> context show srv --json'];
  static override args = {
    name: Args.string({ required: false, description: 'The context (default: the one in use).' }),
  };

  async run(): Promise<ContextShown> {
    const { args, flags } = await this.parse(ContextShow);
    let out: ContextShown;
    if (args.name !== undefined && args.name !== 'default') {
      const c = getContext(args.name, readContexts());
      out = { name: c.name, url: c.url, ...(c.socket ? { socket: c.socket } : {}), source: 'named' };
    } else {
      const t = resolveTarget(
        args.name === 'default' ? { context: 'default' } : { context: flags.context, socket: flags.socket },
      );
      out =
        t.kind === 'remote'
          ? {
              name: t.context.name,
              url: t.context.url,
              ...(t.context.socket ? { socket: t.context.socket } : {}),
              source: t.source,
            }
          : t.kind === 'local'
            ? { name: 'default', url: `unix://${t.socket}`, socket: t.socket, source: t.source }
            : { name: 'auto', url: '', source: t.source };
    }
    this.say(
      `${out.name}  ${out.url}${out.socket && !out.url.endsWith(out.socket) ? ` (remote socket ${out.socket})` : ''}`,
    );
    if (out.source !== 'named') this.say(`  chosen by: ${out.source}`);
    return out;
  }
}
