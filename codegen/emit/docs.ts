// docs/: a static HTML site of the RPC methods, readable offline with no build step.
// index.html (methods by surface and namespace, error codes), methods/<name>.html, style.css.
import type { Model, MethodInfo, Surface } from '../model.ts';
import { referencedDefs } from '../schema-utils.ts';
import { esc, prose, schemaBlock } from './docs-schema.ts';

const SURFACES: [Surface, string][] = [
  ['daemon', 'Daemon methods (bangerd)'],
  ['helper', 'Root helper methods (bangerd-root)'],
];

/**
 * Wraps a page body: `root` is the relative path from the page to the reference's root ('' or
 * '../'). The docs site (codegen/site/) passes its own layout, with its navigation and search.
 */
export type DocsLayout = (title: string, root: string, body: string) => string;

const page: DocsLayout = (title, root, body) => `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><link rel="stylesheet" href="${root}style.css"></head>
<body><main>${body}</main></body>
</html>
`;

/**
 * The op id an example call is shown with. A `*.begin` call's operation id IS its op id (the
 * daemon returns ctx.opId), so its example uses the result's `operation_id`; any other example
 * gets a stable, realistic-looking id (FNV-1a of the method name and index).
 */
export function exampleOpId(name: string, index: number, result: unknown): string {
  const operationId = (result as { operation_id?: unknown } | null)?.operation_id;
  if (name.endsWith('.begin') && typeof operationId === 'string') return operationId;
  let h = 0x811c9dc5;
  for (const ch of `${name}#${index}`) h = Math.imul(h ^ (ch.codePointAt(0) ?? 0), 0x01000193) >>> 0;
  return `op-${h.toString(16).padStart(8, '0')}`;
}

function indexPage(model: Model, layout: DocsLayout): string {
  const sections = SURFACES.map(([surface, heading]) => {
    const methods = model.methods.filter((m) => m.surface === surface);
    const groups = new Map<string, MethodInfo[]>();
    for (const m of methods) groups.set(m.namespace ?? '', [...(groups.get(m.namespace ?? '') ?? []), m]);
    const lists = [...groups]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([ns, ms]) => {
        const items = ms
          .map(
            (m) =>
              `<li><a href="methods/${m.name}.html"><code>${m.name}</code></a> — ${prose(m.summary)}</li>`,
          )
          .join('\n');
        return `<h3>${ns === '' ? 'Top level' : `<code>${ns}.*</code>`}</h3><ul class="methods">${items}</ul>`;
      })
      .join('\n');
    return `<section id="surface-${surface}"><h2>${heading}</h2>${lists}</section>`;
  }).join('\n');
  const errors = model.errors
    .map(
      (e) =>
        `<tr id="error-${e.code}"><td><code>${e.code}</code></td><td>${e.exit}</td><td>${e.universal ? 'yes' : 'no'}</td><td>${prose(e.description)}</td></tr>`,
    )
    .join('\n');
  return layout(
    'banger RPC reference',
    '',
    `<h1>banger RPC reference</h1>
<p>Protocol version ${model.protocolVersion}. One NDJSON request per connection on a unix socket:
<code>{"version":${model.protocolVersion},"method":…,"params":…,"op_id":…}</code>, answered by
<code>{"ok":true,"result":…,"op_id":…}</code> or <code>{"ok":false,"error":{"code":…,"message":…,"op_id":…}}</code>.</p>
${sections}
<section id="errors"><h2>Error codes</h2>
<p>Universal codes may come from any method; the others only from methods that list them.</p>
<table class="errors"><thead><tr><th>Code</th><th>CLI exit</th><th>Universal</th><th>When</th></tr></thead><tbody>${errors}</tbody></table></section>`,
  );
}

/** The message an error example shows: what the daemon would say, with the example's name in it. */
function exampleMessage(m: MethodInfo, code: string, params: unknown, fallback: string): string {
  const p = (params ?? {}) as Record<string, unknown>;
  const key = ['operation_id', 'op_id', 'name'].find((k) => typeof p[k] === 'string');
  const subject = key === undefined ? undefined : (p[key] as string);
  const nouns: Record<string, string> = { vm: 'VM', op: 'operation' };
  const noun =
    key === 'operation_id' || key === 'op_id'
      ? 'operation'
      : m.namespace === undefined
        ? 'object'
        : (nouns[m.namespace] ?? m.namespace);
  const what = subject === undefined ? noun : `${noun} ${JSON.stringify(subject)}`;
  const messages: Record<string, string> = {
    not_found: `${what} not found`,
    already_exists: `${what} already exists`,
    not_running: `${what} is not running`,
    conflict: `${what} is busy with another operation`,
  };
  return messages[code] ?? fallback;
}

/**
 * One error example per declared code: the request of the method's first example, answered by
 * `{"ok":false,"error":{code,message,op_id}}` carrying that request's op id.
 */
function errorExamples(m: MethodInfo, model: Model): string {
  const params = m.examples[0]?.params;
  return m.errors
    .map((code, i) => {
      const opId = exampleOpId(m.name, 1000 + i, undefined);
      const req: Record<string, unknown> = { version: model.protocolVersion, method: m.name };
      if (params !== undefined) req.params = params;
      req.op_id = opId;
      const description = model.errors.find((e) => e.code === code)?.description ?? '';
      const message = exampleMessage(m, code, params, description);
      const res = { ok: false, error: { code, message, op_id: opId } };
      return `<h3 id="error-example-${code}">Error: <code>${code}</code></h3><pre class="ndjson error"><code>${esc(JSON.stringify(req))}\n${esc(JSON.stringify(res))}</code></pre>`;
    })
    .join('\n');
}

function methodPage(m: MethodInfo, model: Model, layout: DocsLayout): string {
  const meta = [
    `served by <strong>${m.surface === 'daemon' ? 'bangerd' : 'bangerd-root'}</strong>`,
    `dispatch <code>${m.dispatch}</code>`,
    `kind <code>${m.kind}</code>`,
    `since ${esc(m.since)}`,
  ].join(' · ');
  const deprecated = m.deprecated ? `<p class="deprecated">Deprecated: ${prose(m.deprecated)}</p>` : '';
  const params = m.params ? schemaBlock(m.params, model.defs, 'No params.') : '<p>No params.</p>';
  const codes = [...m.errors, ...model.errors.filter((e) => e.universal).map((e) => e.code)];
  const errorRows = codes
    .map((code) => {
      const e = model.errors.find((x) => x.code === code);
      return `<tr><td><a href="../index.html#error-${code}"><code>${code}</code></a></td><td>${e?.universal ? 'universal' : 'declared'}</td><td>${prose(e?.description ?? '')}</td></tr>`;
    })
    .join('\n');
  const examples = m.examples
    .map((ex, i) => {
      const opId = exampleOpId(m.name, i, ex.result);
      const req: Record<string, unknown> = { version: model.protocolVersion, method: m.name };
      if (ex.params !== undefined) req.params = ex.params;
      req.op_id = opId;
      const res = { ok: true, result: ex.result, op_id: opId };
      return `<h3>Example ${i + 1}</h3><pre class="ndjson"><code>${esc(JSON.stringify(req))}\n${esc(JSON.stringify(res))}</code></pre>`;
    })
    .join('\n');
  const used = [
    ...new Set([
      ...(m.params ? referencedDefs(m.params, model.defs) : []),
      ...referencedDefs(m.result, model.defs),
    ]),
  ].sort();
  const types = used
    .map((name) => {
      const def = model.defs[name];
      if (!def) return '';
      return `<h3 id="type-${name}"><code>${name}</code></h3><p>${prose(def.description ?? '')}</p>${schemaBlock(def, model.defs, 'No fields.')}`;
    })
    .join('\n');
  const errorExs = errorExamples(m, model);
  return layout(
    `${m.name} — banger RPC`,
    '../',
    `<nav><a href="../index.html">← all methods</a></nav>
<h1><code>${m.name}</code></h1>
<p class="summary">${prose(m.summary)}</p>
<p class="meta">${meta}</p>
${deprecated}
<section id="description"><h2>Description</h2><p>${prose(m.description)}</p></section>
<section id="params"><h2>Params</h2>${params}</section>
<section id="result"><h2>Result</h2>${schemaBlock(m.result, model.defs, 'An empty object.')}</section>
<section id="errors"><h2>Errors</h2><table class="errors"><thead><tr><th>Code</th><th>Kind</th><th>Meaning</th></tr></thead><tbody>${errorRows}</tbody></table></section>
<section id="examples"><h2>Examples</h2><p>Each example is a request line and its response line, as sent on the socket.</p>${examples}</section>${
      errorExs
        ? `\n<section id="error-examples"><h2>Error examples</h2><p>One per declared error code: the response carries the request's op id.</p>${errorExs}</section>`
        : ''
    }
${types ? `<section id="types"><h2>Types</h2>${types}</section>` : ''}`,
  );
}

const STYLE = `body { font: 15px/1.5 system-ui, sans-serif; color: #1d1d1f; background: #fff; margin: 0; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 code, h3 code { font-size: 0.95em; }
code { font: 0.9em ui-monospace, monospace; background: #f2f2f4; padding: 0 0.2em; border-radius: 3px; }
pre { background: #f6f6f8; padding: 0.75rem; border-radius: 4px; white-space: pre-wrap; word-break: break-all; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1rem; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; }
ul.methods { padding-left: 1.2rem; }
.summary { font-size: 1.1em; }
.meta, .constraint { color: #666; }
.deprecated { background: #fff3cd; padding: 0.5rem; }
`;

/** Every docs file, keyed by its path under generated/. */
export function emitDocs(model: Model, layout: DocsLayout = page): Map<string, string> {
  const files = new Map<string, string>();
  files.set('docs/index.html', indexPage(model, layout));
  files.set('docs/style.css', STYLE);
  for (const m of model.methods) files.set(`docs/methods/${m.name}.html`, methodPage(m, model, layout));
  return files;
}
