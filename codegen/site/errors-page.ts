// The error-code table with the CLI's exit codes: the wire codes and their exits come from the
// schema (the same table the CLI's exitCodeFor reads), the CLI's own exits from src/cli/exit-codes.ts,
// so there is one source for each number.
import type { Model } from '../model.ts';
import { prose } from '../emit/docs-schema.ts';
import { EXIT_INTERRUPTED, EXIT_UNREACHABLE } from '../../src/cli/exit-codes.ts';

/** oclif's exit code for a flag, argument or command it refuses (its parse errors exit 2). */
export const EXIT_USAGE = 2;

/** Exits the CLI produces itself, with no wire error behind them. */
export const CLI_EXITS: { id: string; label: string; exit: number; when: string }[] = [
  {
    id: 'usage',
    label: 'usage error',
    exit: EXIT_USAGE,
    when: 'a flag, argument or command the CLI itself refuses (an unknown command gets a "did you mean")',
  },
  {
    id: 'unreachable',
    label: 'daemon unreachable',
    exit: EXIT_UNREACHABLE,
    when: 'nothing answers on the socket; start `bangerd`',
  },
  {
    id: 'interrupted',
    label: 'interrupted',
    exit: EXIT_INTERRUPTED,
    when: 'Ctrl-C (a running `vm create` or `image build` is canceled and undone)',
  },
];

export function errorsPage(model: Model): string {
  const wire = [...model.errors]
    .sort((a, b) => a.exit - b.exit)
    .map(
      (e) =>
        `<tr id="error-${e.code}"><td><code>${e.code}</code></td><td>${e.exit}</td><td>${e.universal ? 'any method' : 'methods that declare it'}</td><td>${prose(e.description)}</td></tr>`,
    )
    .join('\n');
  const cli = CLI_EXITS.map(
    (c) =>
      `<tr id="exit-${c.id}"><td>(${c.label})</td><td>${c.exit}</td><td>CLI only</td><td>${prose(c.when)}</td></tr>`,
  ).join('\n');
  return `<h1>Errors and exit codes</h1>
<p>A failed call answers <code>{"ok":false,"error":{"code":…,"message":…,"op_id":…}}</code>; the CLI prints
<code>error: &lt;message&gt; (op-…)</code> on stderr (with <code>--json</code>: <code>{"ok":false,"exit_code":N,"error":{…}}</code> on stdout)
and exits with the code's exit status. <code>banger op trace &lt;op id&gt;</code> shows every log line of the failed call.
Each method page lists the codes it declares, with an example of each.</p>
<table class="errors"><thead><tr><th>Error code</th><th>CLI exit</th><th>From</th><th>When</th></tr></thead>
<tbody>${wire}
${cli}</tbody></table>
<p><code>banger vm ssh NAME -- CMD</code>, <code>banger vm exec NAME -- CMD</code> and <code>banger vm run -- CMD</code> exit with the remote
command's exit code (255 is ssh's own failure).</p>`;
}
