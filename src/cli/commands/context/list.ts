import { resolveDaemonSocket } from '../../../paths.ts';
import { BangerCommand } from '../../base.ts';
import { DEFAULT_CONTEXT, readContexts, resolveTarget } from '../../contexts.ts';
import { renderRows } from '../../table.ts';

export interface ContextRow {
  name: string;
  url: string;
  socket?: string;
  /** The context commands use now (--context, BANGER_CONTEXT, then the current one). */
  active: boolean;
  /** The one `context use` chose. */
  current: boolean;
}

export default class ContextList extends BangerCommand {
  static override summary = 'List contexts (default is the local daemon); * marks the one in use.';
  static override aliases = ['context:ls'];
  static override examples = ['<%= config.bin %> context list', '<%= config.bin %> context list --json'];

  async run(): Promise<ContextRow[]> {
    const { flags } = await this.parse(ContextList);
    const data = readContexts();
    const target = resolveTarget({ context: flags.context, socket: flags.socket });
    const active =
      target.kind === 'remote' ? target.context.name : target.kind === 'auto' ? 'auto' : DEFAULT_CONTEXT;
    const rows: ContextRow[] = [
      {
        name: DEFAULT_CONTEXT,
        url: `unix://${target.kind === 'local' ? target.socket : resolveDaemonSocket(undefined)}`,
        active: active === DEFAULT_CONTEXT,
        current: data.current === undefined,
      },
      ...Object.entries(data.contexts)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([name, c]) => ({
          name,
          url: c.url,
          ...(c.socket !== undefined ? { socket: c.socket } : {}),
          active: active === name,
          current: data.current === name,
        })),
    ];
    const lines = renderRows(
      [
        { header: 'NAME', get: (r: ContextRow) => `${r.name}${r.active ? ' *' : ''}` },
        { header: 'URL', get: (r: ContextRow) => r.url },
        {
          header: 'REMOTE SOCKET',
          get: (r: ContextRow) => r.socket ?? (r.name === DEFAULT_CONTEXT ? '' : '(ask the host)'),
        },
      ],
      rows,
    );
    for (const l of lines) this.say(l);
    return rows;
  }
}
