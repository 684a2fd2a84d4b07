// The CLI reference, from the oclif manifest (oclif.manifest.json, written by `npm run build`):
// one page per command (summary, description, usage, args, flags, examples) and, where the
// command's source calls the daemon (`this.client.vm.start(…)`), links to those RPC methods.
import { esc, prose } from '../emit/docs-schema.ts';

export interface ManifestFlag {
  name: string;
  type: 'boolean' | 'option';
  char?: string;
  summary?: string;
  description?: string;
  helpGroup?: string;
  helpValue?: string;
  options?: string[];
  default?: unknown;
  multiple?: boolean;
  allowNo?: boolean;
  required?: boolean;
  hidden?: boolean;
}

export interface ManifestArg {
  name: string;
  description?: string;
  required?: boolean;
  multiple?: boolean;
  options?: string[];
  default?: unknown;
}

export interface ManifestCommand {
  id: string;
  summary?: string;
  description?: string;
  hidden?: boolean;
  aliases?: string[];
  examples?: (string | { description?: string; command: string })[];
  args?: Record<string, ManifestArg>;
  flags?: Record<string, ManifestFlag>;
  relativePath?: string[];
}

export interface Manifest {
  version: string;
  commands: Record<string, ManifestCommand>;
}

/** A command's words as typed: `vm:workspace:export` → `vm workspace export`. */
export const commandWords = (id: string): string => id.split(':').join(' ');
/** A command's page, relative to cli/: `vm-workspace-export.html`. */
export const commandFile = (id: string): string => `${id.split(':').join('-')}.html`;

/** The source file of a manifest command: dist/src/…/x.js → src/…/x.ts. */
export function commandSource(cmd: ManifestCommand): string | undefined {
  const rel = cmd.relativePath;
  if (!rel || rel[0] !== 'dist') return undefined;
  return rel.slice(1).join('/').replace(/\.js$/, '.ts');
}

/**
 * The RPC methods a command's source calls through the generated client (`client.vm.start(`),
 * in order of first call, kept only when the schema has such a method: SDK helpers such as
 * `client.operations.wait(` are not methods.
 */
export function rpcCallsOf(source: string, methods: ReadonlySet<string>): string[] {
  const found: string[] = [];
  for (const m of source.matchAll(/\bclient((?:\.[a-z_]+)+)\s*\(/g)) {
    const name = (m[1] as string).slice(1);
    if (methods.has(name) && !found.includes(name)) found.push(name);
  }
  return found;
}

const BIN = 'banger';
const bin = (s: string): string => s.replaceAll('<%= config.bin %>', BIN).replaceAll('<%= command.id %>', '');

/** Description text as paragraphs (oclif descriptions are plain text with blank-line breaks). */
function paragraphs(text: string): string {
  return bin(text)
    .split(/\n\s*\n/)
    .map((p) => `<p>${prose(p.trim())}</p>`)
    .join('\n');
}

function argUsage(a: ManifestArg): string {
  const name = `${a.name.toUpperCase()}${a.multiple ? '...' : ''}`;
  return a.required ? name : `[${name}]`;
}

function flagName(f: ManifestFlag): string {
  const long = f.type === 'boolean' && f.allowNo ? `--[no-]${f.name}` : `--${f.name}`;
  const value =
    f.type === 'option' ? ` ${f.helpValue ?? (f.options ? `<${f.options.join('|')}>` : '<value>')}` : '';
  return `${f.char ? `-${f.char}, ` : ''}${long}${value}`;
}

function flagType(f: ManifestFlag): string {
  if (f.type === 'boolean') return 'boolean';
  const parts = [f.options ? f.options.map((o) => `<code>${esc(o)}</code>`).join(' | ') : 'value'];
  if (f.multiple) parts.push('(repeatable)');
  return parts.join(' ');
}

function flagRows(flags: ManifestFlag[]): string {
  return flags
    .map((f) => {
      const text = [f.summary, f.description]
        .filter((t): t is string => !!t)
        .map((t) => prose(bin(t)))
        .join(' ');
      const def =
        f.default === undefined || f.default === false
          ? ''
          : `<code>${esc(JSON.stringify(f.default))}</code>`;
      return `<tr id="flag-${f.name}"><td><code>${esc(flagName(f))}</code>${f.required ? ' <span class="muted">(required)</span>' : ''}</td><td>${flagType(f)}</td><td>${def}</td><td>${text}</td></tr>`;
    })
    .join('\n');
}

const FLAG_TABLE_HEAD =
  '<thead><tr><th>Flag</th><th>Type</th><th>Default</th><th>Description</th></tr></thead>';

export function commandPage(cmd: ManifestCommand, calls: string[]): { title: string; body: string } {
  const words = commandWords(cmd.id);
  const args = Object.values(cmd.args ?? {});
  const flags = Object.values(cmd.flags ?? {}).filter((f) => !f.hidden);
  const own = flags.filter((f) => f.helpGroup !== 'GLOBAL');
  const global = flags.filter((f) => f.helpGroup === 'GLOBAL');
  const usage = [BIN, words, ...args.map(argUsage), own.length > 0 ? '[FLAGS]' : '']
    .filter(Boolean)
    .join(' ');
  const argTable =
    args.length === 0
      ? '<p>None.</p>'
      : `<table class="args"><thead><tr><th>Argument</th><th>Required</th><th>Description</th></tr></thead><tbody>${args
          .map(
            (a) =>
              `<tr><td><code>${esc(argUsage(a))}</code></td><td>${a.required ? 'yes' : 'no'}</td><td>${prose(bin(a.description ?? ''))}${a.options ? ` One of ${a.options.map((o) => `<code>${esc(o)}</code>`).join(', ')}.` : ''}${a.default !== undefined ? ` Default <code>${esc(String(a.default))}</code>.` : ''}</td></tr>`,
          )
          .join('\n')}</tbody></table>`;
  const examples = (cmd.examples ?? [])
    .map((ex) =>
      typeof ex === 'string'
        ? `<pre><code>${esc(bin(ex))}</code></pre>`
        : `<p>${prose(bin(ex.description ?? ''))}</p><pre><code>${esc(bin(ex.command))}</code></pre>`,
    )
    .join('\n');
  const rpc =
    calls.length === 0
      ? ''
      : `<section id="rpc"><h2>RPC methods</h2><p>What this command asks the daemon, in the order it first calls them:</p><ul class="plain">${calls
          .map((m) => `<li><a class="rpc-method" href="../rpc/methods/${m}.html"><code>${m}</code></a></li>`)
          .join('\n')}</ul></section>`;
  const body = `<nav><a href="index.html">← all commands</a></nav>
<h1><code>${BIN} ${esc(words)}</code></h1>
<p class="summary">${prose(bin(cmd.summary ?? ''))}</p>
<section id="usage"><h2>Usage</h2><pre><code>${esc(usage)}</code></pre>
${cmd.aliases && cmd.aliases.length > 0 ? `<p>Aliases: ${cmd.aliases.map((a) => `<code>${BIN} ${esc(commandWords(a))}</code>`).join(', ')}</p>` : ''}</section>
${cmd.description ? `<section id="description"><h2>Description</h2>${paragraphs(cmd.description)}</section>` : ''}
<section id="args"><h2>Arguments</h2>${argTable}</section>
<section id="flags"><h2>Flags</h2>${own.length > 0 ? `<table class="flags">${FLAG_TABLE_HEAD}<tbody>${flagRows(own)}</tbody></table>` : '<p>None of its own.</p>'}
${global.length > 0 ? `<h3>Global flags</h3><table class="flags">${FLAG_TABLE_HEAD}<tbody>${flagRows(global)}</tbody></table>` : ''}</section>
${examples ? `<section id="examples"><h2>Examples</h2>${examples}</section>` : ''}
${rpc}`;
  return { title: `${BIN} ${words}`, body };
}

/** The commands index: grouped by topic (the manifest's first word), with the topic descriptions. */
export function commandsIndex(
  commands: ManifestCommand[],
  topics: Record<string, { description?: string }>,
): string {
  const groups = new Map<string, ManifestCommand[]>();
  for (const c of commands) {
    const topic = c.id.includes(':') ? c.id.slice(0, c.id.lastIndexOf(':')) : '';
    groups.set(topic, [...(groups.get(topic) ?? []), c]);
  }
  const sections = [...groups]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([topic, cmds]) => {
      const heading = topic === '' ? 'Top level' : `<code>${BIN} ${esc(commandWords(topic))}</code>`;
      const about = topics[topic]?.description;
      const items = cmds
        .map(
          (c) =>
            `<li><a href="${commandFile(c.id)}"><code>${BIN} ${esc(commandWords(c.id))}</code></a> — ${prose(bin(c.summary ?? ''))}</li>`,
        )
        .join('\n');
      return `<section id="topic-${topic === '' ? 'top' : topic.replaceAll(':', '-')}"><h2>${heading}</h2>${about ? `<p>${prose(about)}</p>` : ''}<ul class="plain">${items}</ul></section>`;
    })
    .join('\n');
  return `<h1>CLI reference</h1>
<p>Every <code>${BIN}</code> command, generated from the CLI's oclif manifest. All of them take <code>--json</code> (the result as JSON on stdout) and <code>--socket PATH</code>; exit codes are on the <a href="../errors.html">errors page</a>.</p>
${sections}`;
}
