import { Args, Flags } from '@oclif/core';
import { BangerCommand } from '../../base.ts';
import { addContext, contextsFile, type RemoteContext } from '../../contexts.ts';

export default class ContextAdd extends BangerCommand {
  static override summary = 'Add a context: a banger daemon on another machine, reached over SSH.';
  static override description = `Records NAME as ssh://[user@]host[:port] in ${'$'}XDG_CONFIG_HOME/banger/contexts.json (default ~/.config/banger). Nothing is contacted now. Commands then reach that host with banger --context NAME …, BANGER_CONTEXT=NAME, or after banger context use NAME.

The connection is your own ssh: ~/.ssh/config applies (aliases, keys, ProxyJump), the host key is checked against your known_hosts (connect once with ssh first to accept it), and banger never prompts (BatchMode). The ssh user must be the user bangerd runs as there (on a system install, the owner given to banger system install). --socket is the daemon's socket on that host; without it banger asks the host for its install default (/run/banger/bangerd.sock for a system install). See docs/remote.md.`;
  static override examples = [
    '<%= config.bin %> context add srv ssh://me@srv',
    '<%= config.bin %> context add gpu ssh://me@gpu-01:2222 --socket /run/banger/bangerd.sock',
    '<%= config.bin %> --context srv vm run . --rm -- make test',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The context name (lower case; not default or auto).' }),
    url: Args.string({ required: true, description: 'ssh://[user@]host[:port]' }),
  };
  static override flags = {
    // Here --socket is the remote daemon's socket (the global --socket, a local one, means nothing).
    socket: Flags.string({
      summary: "Path of bangerd's socket on the remote host (default: ask the host).",
      helpValue: '<path>',
    }),
  };

  async run(): Promise<RemoteContext> {
    const { args, flags } = await this.parse(ContextAdd);
    const socket = flags.socket;
    addContext(args.name, socket !== undefined ? { url: args.url, socket } : { url: args.url });
    this.say(`added context ${args.name} (${args.url}) to ${contextsFile()}`);
    this.say(`  check it:   ${this.config.bin} --context ${args.name} daemon status`);
    this.say(`  use it:     ${this.config.bin} context use ${args.name}`);
    return { name: args.name, url: args.url, ...(socket !== undefined ? { socket } : {}) };
  }
}
