// The docs site's parts without a browser: the Markdown subset the guides use, the command → RPC
// method links read from the CLI's sources, the error examples of the method pages, and the exit
// code table of docs/cli.md against the schema (the site's errors page is generated from it).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { emitDocs } from '../../codegen/emit/docs.ts';
import { loadModel } from '../../codegen/model.ts';
import { rpcCallsOf } from '../../codegen/site/cli-ref.ts';
import { CLI_EXITS } from '../../codegen/site/errors-page.ts';
import { renderMarkdown } from '../../codegen/site/markdown.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const { model } = loadModel(ROOT);
const METHODS = new Set(model.methods.map((m) => m.name));
const md = (text: string): string =>
  renderMarkdown(text, (href) => (href.endsWith('.md') ? href.replace(/\.md$/, '.html') : null)).html;

describe('markdown subset', () => {
  it('renders headings with unique ids, and keeps their inline code', () => {
    const r = renderMarkdown('# Title `x`\n\n## Same\n\ntext\n\n## Same\n', () => null);
    expect(r.title?.text).toBe('Title x');
    expect(r.html).toContain('<h1 id="title-x">Title <code>x</code></h1>');
    expect(r.headings.map((h) => h.id)).toEqual(['title-x', 'same', 'same-1']);
  });

  it('escapes code blocks and raw HTML instead of passing them through', () => {
    expect(md('```sh\necho <b> && x\n```')).toBe(
      '<pre><code class="language-sh">echo &lt;b&gt; &amp;&amp; x</code></pre>',
    );
    expect(md('a <script>alert(1)</script> b')).toBe('<p>a &lt;script&gt;alert(1)&lt;/script&gt; b</p>');
  });

  it('renders tables, with | inside code spans and escaped as \\|', () => {
    const html = md('| a | b |\n| - | -: |\n| `x | y` | 1 \\| 2 |\n');
    expect(html).toContain('<th>a</th><th style="text-align:right">b</th>');
    expect(html).toContain('<td><code>x | y</code></td><td style="text-align:right">1 | 2</td>');
  });

  it('renders nested lists, continuation lines, and ordered lists', () => {
    const html = md('- one\n  still one\n  - inner\n- two\n\n1. first\n2. second\n');
    expect(html).toBe(
      '<ul><li>one\nstill one\n<ul><li>inner</li></ul></li>\n<li>two</li></ul>\n<ol><li>first</li>\n<li>second</li></ol>',
    );
  });

  it('resolves links: guides become pages, files the site lacks stay text', () => {
    expect(md('see [the CLI](cli.md) and [src](../src/x.ts)')).toBe(
      '<p>see <a href="cli.html">the CLI</a> and <span class="repo-link" title="../src/x.ts">src</span></p>',
    );
    expect(md('**bold** and *em* but not a*b*c or snake_case_name')).toBe(
      '<p><strong>bold</strong> and <em>em</em> but not a*b*c or snake_case_name</p>',
    );
  });
});

function commandSources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? commandSources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

describe('CLI commands → RPC methods', () => {
  const source = (rel: string): string => readFileSync(join(ROOT, 'src/cli/commands', rel), 'utf8');

  it('reads the methods a command calls from its source', () => {
    expect(rpcCallsOf(source('vm/start.ts'), METHODS)).toEqual(['vm.start']);
    expect(rpcCallsOf(source('vm/create.ts'), METHODS)[0]).toBe('vm.create.begin');
    expect(rpcCallsOf(source('vm/workspace/export.ts'), METHODS)).toEqual(['vm.workspace.export']);
    expect(rpcCallsOf(source('ping.ts'), METHODS)).toEqual(['ping']);
    expect(rpcCallsOf('this.client.vm.nope({});', METHODS)).toEqual([]);
  });

  it('every client call in a command is a schema method (none is silently left unlinked)', () => {
    const unknown: string[] = [];
    for (const file of commandSources(join(ROOT, 'src/cli/commands'))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/\bclient((?:\.[a-z_]+)+)\s*\(/g)) {
        const name = (m[1] as string).slice(1);
        if (!METHODS.has(name)) unknown.push(`${file.slice(ROOT.length + 1)}: ${name}`);
      }
    }
    expect(unknown).toEqual([]);
  });
});

describe('error examples on the method pages', () => {
  const unescape = (s: string): string =>
    s.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');

  it('shows one per declared code, answered with the request op id', () => {
    const pages = emitDocs(model);
    for (const m of model.methods) {
      const html = pages.get(`docs/methods/${m.name}.html`) ?? '';
      const pres = [...html.matchAll(/<pre class="ndjson error"><code>([\s\S]*?)<\/code><\/pre>/g)];
      const codes = pres.map((p) => {
        const [req, res] = unescape(p[1] as string)
          .split('\n')
          .map(
            (l) =>
              JSON.parse(l) as {
                method?: string;
                op_id?: string;
                ok?: boolean;
                error?: Record<string, unknown>;
              },
          );
        expect(req?.method, m.name).toBe(m.name);
        expect(res?.ok, m.name).toBe(false);
        expect(Object.keys(res?.error ?? {}).sort(), m.name).toEqual(['code', 'message', 'op_id']);
        expect(res?.error?.op_id, m.name).toBe(req?.op_id);
        return res?.error?.code;
      });
      expect(codes, m.name).toEqual(m.errors);
    }
    expect(model.methods.some((m) => m.errors.length > 1)).toBe(true);
  });
});

describe('docs/cli.md exit codes', () => {
  it('agree with the schema and the CLI (the errors page is generated from those)', () => {
    const text = readFileSync(join(ROOT, 'docs/cli.md'), 'utf8');
    const rows = [...text.matchAll(/^\| *(`[a-z_]+`|\([a-z ]+\)) *\| *(\d+) *\|/gm)].map((m) => [
      (m[1] as string).replace(/[`()]/g, ''),
      Number(m[2]),
    ]);
    const expected = [
      ...model.errors.map((e) => [e.code, e.exit]),
      ...CLI_EXITS.map((c) => [c.label, c.exit]),
    ];
    expect(rows.sort()).toEqual(expected.sort());
  });
});
