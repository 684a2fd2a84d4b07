// The docs site, in memory: path (relative to the site root) → file text. One site for everything:
//   index.html            home: the sections and every guide
//   guides/*.html         docs/*.md rendered (the SDK guide is guides/sdk.html), guides/examples/ the SDK examples
//   cli/*.html            the CLI reference, from oclif.manifest.json, linking to the RPC methods each command calls
//   rpc/*.html            the method reference (codegen/emit/docs.ts, in the site's layout)
//   errors.html           the error codes with their CLI exit codes
//   search-index.js       the search index (JSON), search.js the search box, site.css the style
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { esc, prose } from '../emit/docs-schema.ts';
import { emitDocs } from '../emit/docs.ts';
import { loadModel, type Model } from '../model.ts';
import {
  commandFile,
  commandPage,
  commandSource,
  commandsIndex,
  commandWords,
  rpcCallsOf,
} from './cli-ref.ts';
import type { Manifest, ManifestCommand } from './cli-ref.ts';
import { errorsPage } from './errors-page.ts';
import { plainText, renderMarkdown, type LinkResolver } from './markdown.ts';
import { SEARCH_JS, SITE_CSS, sitePage } from './layout.ts';

export const MANIFEST_FILE = 'oclif.manifest.json';

/** One search result: title, url (from the site root), category, summary, and an extra key to match. */
export interface SearchEntry {
  t: string;
  u: string;
  c: 'method' | 'command' | 'guide' | 'section' | 'error';
  s?: string;
  k?: string;
}

export class SiteInputError extends Error {}

export function readManifest(root: string): Manifest {
  const path = join(root, MANIFEST_FILE);
  if (!existsSync(path)) {
    throw new SiteInputError(
      `${MANIFEST_FILE} is missing: run \`npm run build\` first (it writes the manifest)`,
    );
  }
  return JSON.parse(readFileSync(path, 'utf8')) as Manifest;
}

/** Links in docs/*.md, resolved against the site: other guides, the examples, anchors, the web. */
function guideLinks(root: string): LinkResolver {
  const docs = join(root, 'docs');
  return (href) => {
    if (href.startsWith('#') || /^(https?:|mailto:)/.test(href)) return href;
    const [path = '', hash] = href.split('#', 2);
    const frag = hash === undefined ? '' : `#${hash}`;
    if (/^[\w.-]+\.md$/.test(path) && existsSync(join(docs, path))) return `${path.slice(0, -3)}.html${frag}`;
    if (path === 'examples' || path === 'examples/') return 'examples/index.html';
    const example = /^examples\/([\w.-]+\.ts)$/.exec(path);
    if (example && existsSync(join(docs, path))) return `examples/${example[1]}.html`;
    return null; // a file of the repository outside docs/: shown as text
  };
}

/** Guides in reading order (a user's first, the developer's last); others follow by name. */
const GUIDE_ORDER = [
  'sdk',
  'cli',
  'vm-run',
  'lifecycle',
  'config',
  'networking',
  'egress',
  'images',
  'warm-start',
  'op-trace',
  'protocol',
  'guest-image',
  'bench',
  'dev-notes',
];

/** A guide: its name (docs/<name>.md) and its title as HTML. */
interface Guide {
  name: string;
  title: string;
}

function guides(root: string, files: Map<string, string>, search: SearchEntry[]): Guide[] {
  const dir = join(root, 'docs');
  const out: Guide[] = [];
  const resolve = guideLinks(root);
  const rank = (f: string): number => {
    const i = GUIDE_ORDER.indexOf(f.slice(0, -3));
    return i < 0 ? GUIDE_ORDER.length : i;
  };
  const mdFiles = readdirSync(dir)
    .filter((f) => f.endsWith('.md'))
    .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  for (const file of mdFiles) {
    const name = file.slice(0, -3);
    const r = renderMarkdown(readFileSync(join(dir, file), 'utf8'), resolve);
    const title = r.title?.text ?? name;
    out.push({ name, title: r.title?.html ?? esc(name) });
    files.set(`guides/${name}.html`, sitePage(`${title} — banger docs`, '../', r.html));
    search.push({ t: title, u: `guides/${name}.html`, c: 'guide', k: name });
    for (const h of r.headings.filter((x) => x.level === 2)) {
      search.push({ t: h.text, u: `guides/${name}.html#${h.id}`, c: 'section', s: title });
    }
  }
  const exDir = join(dir, 'examples');
  const examples = existsSync(exDir)
    ? readdirSync(exDir)
        .filter((f) => f.endsWith('.ts'))
        .sort()
    : [];
  for (const ex of examples) {
    const code = readFileSync(join(exDir, ex), 'utf8');
    files.set(
      `guides/examples/${ex}.html`,
      sitePage(
        `${ex} — banger SDK examples`,
        '../../',
        `<nav><a href="index.html">← SDK examples</a></nav><h1><code>docs/examples/${esc(ex)}</code></h1><pre><code class="language-ts">${esc(code)}</code></pre>`,
      ),
    );
  }
  const items = examples
    .map((ex) => {
      const first = /^\/\/ (.*)$/m.exec(readFileSync(join(exDir, ex), 'utf8'))?.[1] ?? '';
      return `<li><a href="${ex}.html"><code>${esc(ex)}</code></a> — ${prose(first)}</li>`;
    })
    .join('\n');
  files.set(
    'guides/examples/index.html',
    sitePage(
      'SDK examples — banger docs',
      '../../',
      `<h1>SDK examples</h1><p>The example programs of the <a href="../sdk.html">SDK guide</a>, typechecked and run by the SDK's test.</p><ul class="plain">${items}</ul>`,
    ),
  );
  return out;
}

function cliReference(root: string, model: Model, files: Map<string, string>, search: SearchEntry[]): void {
  const manifest = readManifest(root);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    oclif?: { topics?: Record<string, { description?: string }> };
  };
  const methods = new Set(model.methods.map((m) => m.name));
  const commands: ManifestCommand[] = Object.values(manifest.commands)
    .filter((c) => !c.hidden)
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const cmd of commands) {
    const source = commandSource(cmd);
    const calls =
      source && existsSync(join(root, source))
        ? rpcCallsOf(readFileSync(join(root, source), 'utf8'), methods)
        : [];
    const { title, body } = commandPage(cmd, calls);
    files.set(`cli/${commandFile(cmd.id)}`, sitePage(`${title} — banger CLI`, '../', body));
    search.push({
      t: title,
      u: `cli/${commandFile(cmd.id)}`,
      c: 'command',
      s: cmd.summary,
      k: commandWords(cmd.id),
    });
  }
  files.set(
    'cli/index.html',
    sitePage('CLI reference — banger docs', '../', commandsIndex(commands, pkg.oclif?.topics ?? {})),
  );
}

function home(guideList: Guide[], model: Model): string {
  const guideItems = guideList
    .map((g) => `<li><a href="guides/${g.name}.html">${g.title}</a></li>`)
    .join('\n');
  return `<h1>banger documentation</h1>
<p>One-command development sandboxes on microVMs: the <code>banger</code> CLI, the daemon <code>bangerd</code> it talks to over a
unix socket, and the typed client SDK for your own programs. Press <kbd>/</kbd> to search.</p>
<ul class="cards">
<li><a href="guides/sdk.html">SDK guide</a><br><span class="muted"><code>import { BangerClient } from 'banger/client'</code>: every method typed, with examples.</span></li>
<li><a href="cli/index.html">CLI reference</a><br><span class="muted">Every command with its flags, examples and the RPC methods it calls.</span></li>
<li><a href="rpc/index.html">RPC methods</a><br><span class="muted">${model.methods.length} methods of protocol version ${model.protocolVersion}: params, results, errors, examples.</span></li>
<li><a href="errors.html">Errors &amp; exit codes</a><br><span class="muted">The ${model.errors.length} wire error codes and the CLI's exit status for each.</span></li>
</ul>
<h2 id="guides">Guides</h2>
<ul class="plain">${guideItems}</ul>`;
}

/** Builds every file of the site from the checkout at `root` (schema, docs/, oclif manifest). */
export function buildSite(root: string): Map<string, string> {
  const { model } = loadModel(root);
  const files = new Map<string, string>();
  const search: SearchEntry[] = [];

  // The method reference: the generator's pages, in the site's layout, under rpc/.
  const rpcDocs = emitDocs(model, (title, r, body) => sitePage(title, `../${r}`, body));
  for (const [path, text] of rpcDocs) {
    if (path.endsWith('.html')) files.set(path.replace(/^docs\//, 'rpc/'), text);
  }
  for (const m of model.methods) {
    search.push({ t: m.name, u: `rpc/methods/${m.name}.html`, c: 'method', s: plainText(prose(m.summary)) });
  }

  const guideList = guides(root, files, search);
  cliReference(root, model, files, search);

  files.set('errors.html', sitePage('Errors and exit codes — banger docs', '', errorsPage(model)));
  for (const e of model.errors) {
    search.push({
      t: e.code,
      u: `errors.html#error-${e.code}`,
      c: 'error',
      s: `exit ${e.exit}: ${e.description}`,
    });
  }
  files.set('index.html', sitePage('banger documentation', '', home(guideList, model)));
  files.set(
    'guides/index.html',
    sitePage(
      'Guides — banger docs',
      '../',
      `<h1>Guides</h1><ul class="plain">${guideList.map((g) => `<li><a href="${g.name}.html">${g.title}</a></li>`).join('\n')}</ul>`,
    ),
  );
  search.push({ t: 'Errors and exit codes', u: 'errors.html', c: 'guide' });

  files.set('site.css', SITE_CSS);
  files.set('search.js', SEARCH_JS);
  files.set('search-index.js', `window.BANGER_SEARCH_INDEX = ${JSON.stringify(search)};\n`);
  return files;
}
