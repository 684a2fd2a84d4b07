// A small Markdown renderer for the subset docs/*.md use: ATX headings (with ids), paragraphs,
// fenced code blocks, pipe tables, nested lists, block quotes, rules, and inline code, links,
// **bold** and *emphasis*. Raw HTML is escaped, never passed through. Written here rather than
// taken from npm so the docs build adds no dependency; anything outside the subset renders as
// plain text, which the site's tests would show.
import { esc } from '../emit/docs-schema.ts';

export interface Heading {
  level: number;
  /** Plain text (for <title> and the search index). */
  text: string;
  /** As rendered, with its inline code and links. */
  html: string;
  id: string;
}

export interface Rendered {
  html: string;
  /** The first level-1 heading, if any. */
  title: Heading | undefined;
  headings: Heading[];
}

/**
 * Maps a link target as written in the Markdown to the href to emit, or null to render the link
 * text alone (a target the site does not have, such as a source file outside docs/).
 */
export type LinkResolver = (href: string) => string | null;

/** Rendered inline HTML back to its text: tags dropped, entities decoded. */
export function plainText(html: string): string {
  return html
    .replace(/<[^>]*>/g, '')
    .replace(/&#(\d+);/g, (_m, n: string) => String.fromCodePoint(+n))
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&quot;', '"')
    .replaceAll('&amp;', '&');
}

/** GitHub-style heading slug: lower case, punctuation dropped, spaces to dashes. */
export function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/<[^>]*>/g, '')
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .trim()
    .replace(/ /g, '-');
}

const PLACEHOLDER = '\u0000';

/** How many spaces a line starts with. */
const leading = (l: string): number => l.length - l.trimStart().length;

/** Inline Markdown to HTML: code spans first (their content is literal), then links and emphasis. */
export function inline(text: string, resolve: LinkResolver): string {
  const codes: string[] = [];
  let s = text.replace(/(`+)([\s\S]*?[^`])\1(?!`)/g, (_m, _ticks: string, code: string) => {
    codes.push(`<code>${esc(code.trim() === '' ? code : code.replace(/^ (.*) $/, '$1'))}</code>`);
    return `${PLACEHOLDER}${codes.length - 1}${PLACEHOLDER}`;
  });
  s = esc(s.replace(/\\([\\`*_[\]()#|<>-])/g, (_m, c: string) => `&#${c.codePointAt(0)};`)).replace(
    /&amp;#(\d+);/g,
    '&#$1;',
  );
  s = s.replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, (_m, label: string, href: string) => {
    const target = resolve(href.replaceAll('&amp;', '&'));
    if (target === null)
      return `<span class="repo-link" title="${href.replaceAll('"', '&quot;')}">${label}</span>`;
    const external = /^https?:/.test(target) ? ' rel="noopener"' : '';
    return `<a href="${target.replaceAll('&', '&amp;').replaceAll('"', '&quot;')}"${external}>${label}</a>`;
  });
  s = s.replace(/&lt;(https?:\/\/[^\s&]+)&gt;/g, '<a href="$1" rel="noopener">$1</a>');
  s = s.replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, '<strong>$1</strong>');
  s = s.replace(/(^|[^*\w])\*(?=\S)([^*]*?\S)\*(?![*\w])/g, '$1<em>$2</em>');
  return s.replace(new RegExp(`${PLACEHOLDER}(\\d+)${PLACEHOLDER}`, 'g'), (_m, i: string) => codes[+i] ?? '');
}

/** The cells of a table row: split on `|` outside code spans and not escaped. */
function cells(row: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inCode = false;
  const line = row.trim().replace(/^\|/, '').replace(/\|$/, '');
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === '\\' && line[i + 1] === '|') {
      cur += '|';
      i++;
    } else if (c === '`') {
      inCode = !inCode;
      cur += c;
    } else if (c === '|' && !inCode) {
      out.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  out.push(cur.trim());
  return out;
}

const LIST_ITEM = /^( *)([-*+]|\d+[.)]) +(.*)$/;
const FENCE = /^ *(```+|~~~+)\s*([\w+-]*)/;
const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

interface Ctx {
  resolve: LinkResolver;
  headings: Heading[];
  ids: Map<string, number>;
}

function blocks(lines: string[], ctx: Ctx, tight: boolean): string {
  const out: string[] = [];
  let i = 0;
  const isBlank = (l: string | undefined): boolean => l === undefined || l.trim() === '';
  const startsBlock = (l: string): boolean =>
    /^ {0,3}#{1,6} /.test(l) ||
    FENCE.test(l) ||
    LIST_ITEM.test(l) ||
    /^ {0,3}>/.test(l) ||
    /^ {0,3}---+\s*$/.test(l);
  while (i < lines.length) {
    const line = lines[i] as string;
    if (isBlank(line)) {
      i++;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const marker = fence[1] as string;
      const indent = leading(line);
      const body: string[] = [];
      for (i++; i < lines.length && !(lines[i] as string).trim().startsWith(marker); i++) {
        body.push((lines[i] as string).replace(new RegExp(`^ {0,${indent}}`), ''));
      }
      i++;
      const lang = fence[2] ? ` class="language-${fence[2]}"` : '';
      out.push(`<pre><code${lang}>${esc(body.join('\n'))}</code></pre>`);
      continue;
    }
    const heading = /^ {0,3}(#{1,6}) +(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      const level = (heading[1] as string).length;
      const html = inline(heading[2] as string, ctx.resolve);
      const base = slug(html) || 'section';
      const n = ctx.ids.get(base) ?? 0;
      ctx.ids.set(base, n + 1);
      const id = n === 0 ? base : `${base}-${n}`;
      ctx.headings.push({ level, text: plainText(html), html, id });
      out.push(`<h${level} id="${id}">${html}</h${level}>`);
      i++;
      continue;
    }
    if (/^ {0,3}(---+|\*\*\*+)\s*$/.test(line)) {
      out.push('<hr>');
      i++;
      continue;
    }
    if (/^ {0,3}>/.test(line)) {
      const body: string[] = [];
      for (; i < lines.length && /^ {0,3}>/.test(lines[i] as string); i++) {
        body.push((lines[i] as string).replace(/^ {0,3}> ?/, ''));
      }
      out.push(`<blockquote>${blocks(body, ctx, false)}</blockquote>`);
      continue;
    }
    if (line.includes('|') && TABLE_SEP.test(lines[i + 1] ?? '')) {
      const head = cells(line);
      const aligns = cells(lines[i + 1] as string).map((c) =>
        c.startsWith(':') && c.endsWith(':') ? 'center' : c.endsWith(':') ? 'right' : '',
      );
      const td = (tag: string, c: string, k: number): string =>
        `<${tag}${aligns[k] ? ` style="text-align:${aligns[k]}"` : ''}>${inline(c, ctx.resolve)}</${tag}>`;
      const rows: string[] = [];
      for (i += 2; i < lines.length && (lines[i] as string).includes('|') && !isBlank(lines[i]); i++) {
        rows.push(
          `<tr>${cells(lines[i] as string)
            .map((c, k) => td('td', c, k))
            .join('')}</tr>`,
        );
      }
      out.push(
        `<table><thead><tr>${head.map((c, k) => td('th', c, k)).join('')}</tr></thead><tbody>${rows.join('\n')}</tbody></table>`,
      );
      continue;
    }
    const item = LIST_ITEM.exec(line);
    if (item) {
      const indent = (item[1] as string).length;
      const ordered = /\d/.test(item[2] as string);
      const items: string[][] = [];
      let loose = false;
      while (i < lines.length) {
        const m = LIST_ITEM.exec(lines[i] as string);
        if (!m || (m[1] as string).length !== indent || /\d/.test(m[2] as string) !== ordered) break;
        const contentIndent = indent + (m[2] as string).length + 1;
        const body = [m[3] as string];
        for (i++; i < lines.length; i++) {
          const l = lines[i] as string;
          if (isBlank(l)) {
            // A blank line continues the item only when indented content follows it.
            const next = lines[i + 1];
            if (next !== undefined && !isBlank(next) && leading(next) > indent) {
              loose = loose || !LIST_ITEM.test(next);
              body.push('');
              continue;
            }
            break;
          }
          const lead = leading(l);
          if (lead <= indent && (LIST_ITEM.test(l) || startsBlock(l))) break;
          body.push(l.slice(Math.min(lead, contentIndent)));
        }
        items.push(body);
        // Blank lines between items of this list make it loose (items as paragraphs).
        const sameList = (l: string | undefined): boolean => {
          const n = LIST_ITEM.exec(l ?? '');
          return !!n && (n[1] as string).length === indent && /\d/.test(n[2] as string) === ordered;
        };
        while (i < lines.length && isBlank(lines[i]) && sameList(lines[i + 1])) {
          loose = true;
          i++;
        }
      }
      const tag = ordered ? 'ol' : 'ul';
      out.push(`<${tag}>${items.map((b) => `<li>${blocks(b, ctx, !loose)}</li>`).join('\n')}</${tag}>`);
      continue;
    }
    const para: string[] = [];
    for (; i < lines.length && !isBlank(lines[i]); i++) {
      const l = lines[i] as string;
      if (para.length > 0 && (startsBlock(l) || (l.includes('|') && TABLE_SEP.test(lines[i + 1] ?? ''))))
        break;
      para.push(l.trim());
    }
    const text = inline(para.join('\n'), ctx.resolve);
    out.push(tight ? text : `<p>${text}</p>`);
  }
  return out.join('\n');
}

export function renderMarkdown(md: string, resolve: LinkResolver): Rendered {
  const ctx: Ctx = { resolve, headings: [], ids: new Map() };
  const html = blocks(md.replace(/\r\n?/g, '\n').split('\n'), ctx, false);
  return { html, title: ctx.headings.find((h) => h.level === 1), headings: ctx.headings };
}
