// The docs site's page chrome: a header with the sections and a search box on every page, one
// stylesheet, and the search script. Every link is relative (`root` is the way from a page back to
// the site's root), so the site works from any URL prefix and from file:// as well as over HTTP.
import { esc } from '../emit/docs-schema.ts';

export const SECTIONS: [href: string, label: string][] = [
  ['guides/sdk.html', 'SDK'],
  ['guides/index.html', 'Guides'],
  ['cli/index.html', 'CLI'],
  ['rpc/index.html', 'RPC methods'],
  ['errors.html', 'Errors & exit codes'],
];

export function sitePage(title: string, root: string, body: string): string {
  const nav = SECTIONS.map(([href, label]) => `<a href="${root}${href}">${esc(label)}</a>`).join('\n');
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><link rel="stylesheet" href="${root}site.css"></head>
<body data-root="${root}">
<header class="site">
<a class="brand" href="${root}index.html">banger docs</a>
<nav class="sections">${nav}</nav>
<div class="search"><input id="search" type="search" placeholder="Search methods, commands, guides…" autocomplete="off" aria-label="Search the docs"><ol id="search-results" hidden></ol></div>
</header>
<main>${body}</main>
<script src="${root}search-index.js"></script>
<script src="${root}search.js"></script>
</body>
</html>
`;
}

export const SITE_CSS = `* { box-sizing: border-box; }
body { font: 15px/1.55 system-ui, sans-serif; color: #1d1d1f; background: #fff; margin: 0; }
header.site { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; align-items: center; gap: 0.4rem 1.2rem;
  padding: 0.55rem 1.5rem; background: #1f2430; color: #fff; }
header.site a { color: #d6e2ff; text-decoration: none; }
header.site a:hover { color: #fff; text-decoration: underline; }
header.site .brand { font-weight: 700; color: #fff; font-size: 1.05em; }
nav.sections { display: flex; flex-wrap: wrap; gap: 0.2rem 1rem; }
.search { position: relative; margin-left: auto; }
#search { width: 18rem; max-width: 70vw; padding: 0.3rem 0.5rem; border-radius: 4px; border: 1px solid #4a5266; background: #2b3140; color: #fff; font: inherit; }
#search::placeholder { color: #aab; }
#search-results { position: absolute; right: 0; top: 2.1rem; width: 30rem; max-width: 92vw; max-height: 70vh; overflow: auto; margin: 0;
  padding: 0.25rem 0; list-style: none; background: #fff; color: #1d1d1f; border: 1px solid #ccd; border-radius: 4px; box-shadow: 0 6px 20px rgba(0,0,0,.18); }
#search-results li a { display: block; padding: 0.3rem 0.7rem; color: #1d1d1f; }
#search-results li a:hover, #search-results li.active a { background: #eef3ff; text-decoration: none; }
#search-results .kind { float: right; color: #778; font-size: 0.85em; }
#search-results .hint { display: block; color: #667; font-size: 0.85em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#search-results li.none { padding: 0.3rem 0.7rem; color: #667; }
main { max-width: 62rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
a { color: #0b57d0; }
h1 code, h2 code, h3 code { font-size: 0.95em; }
code { font: 0.9em ui-monospace, monospace; background: #f2f2f4; padding: 0 0.2em; border-radius: 3px; }
pre { background: #f6f6f8; padding: 0.75rem; border-radius: 4px; overflow-x: auto; }
pre.ndjson { white-space: pre-wrap; word-break: break-all; }
pre.error { border-left: 3px solid #d33; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1rem; }
th { white-space: nowrap; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; }
blockquote { margin: 0.5rem 0; padding: 0.1rem 1rem; border-left: 3px solid #ccd; color: #444; }
ul.methods, ul.plain { padding-left: 1.2rem; }
.summary { font-size: 1.1em; }
.meta, .constraint, .muted { color: #666; }
.deprecated { background: #fff3cd; padding: 0.5rem; }
.repo-link { border-bottom: 1px dotted #999; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: 0.8rem; padding: 0; list-style: none; }
.cards li { border: 1px solid #dde; border-radius: 6px; padding: 0.6rem 0.8rem; }
.cards li a { font-weight: 600; }
`;

/**
 * The search box: the index (search-index.js sets BANGER_SEARCH_INDEX, so it loads from file://
 * too) is ranked by where the query matches (exact name, prefix, word, anywhere, summary), best
 * first; Enter or a click follows a result, arrows move between them. Plain ES2017, no libraries.
 */
export const SEARCH_JS = `(function () {
  'use strict';
  var input = document.getElementById('search');
  var list = document.getElementById('search-results');
  var index = window.BANGER_SEARCH_INDEX || [];
  var root = document.body.getAttribute('data-root') || '';
  var active = -1;
  function score(entry, q) {
    var t = entry.t.toLowerCase();
    var k = (entry.k || '').toLowerCase();
    if (t === q || k === q) return 100;
    if (t.indexOf(q) === 0 || k.indexOf(q) === 0) return 80 - Math.min(t.length, 60) / 10;
    if ((' ' + t).indexOf(' ' + q) >= 0) return 60;
    if (t.indexOf(q) >= 0 || k.indexOf(q) >= 0) return 40;
    if ((entry.s || '').toLowerCase().indexOf(q) >= 0) return 10;
    return 0;
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  }
  function render() {
    var q = input.value.trim().toLowerCase();
    list.textContent = '';
    active = -1;
    if (!q) { list.hidden = true; return; }
    var hits = index
      .map(function (e) { return { e: e, s: score(e, q) }; })
      .filter(function (h) { return h.s > 0; })
      .sort(function (a, b) { return b.s - a.s || a.e.t.localeCompare(b.e.t); })
      .slice(0, 12);
    if (hits.length === 0) list.appendChild(el('li', 'none', 'No results'));
    hits.forEach(function (h) {
      var li = el('li');
      var a = el('a');
      a.href = root + h.e.u;
      a.appendChild(el('span', 'kind', h.e.c));
      a.appendChild(el('span', 'title', h.e.t));
      if (h.e.s) a.appendChild(el('span', 'hint', h.e.s));
      li.appendChild(a);
      list.appendChild(li);
    });
    list.hidden = false;
  }
  function move(d) {
    var items = list.querySelectorAll('li a');
    if (items.length === 0) return;
    if (active >= 0) items[active].parentNode.classList.remove('active');
    active = (active + d + items.length) % items.length;
    items[active].parentNode.classList.add('active');
    items[active].scrollIntoView({ block: 'nearest' });
  }
  input.addEventListener('input', render);
  input.addEventListener('keydown', function (ev) {
    if (ev.key === 'ArrowDown') { move(1); ev.preventDefault(); }
    else if (ev.key === 'ArrowUp') { move(-1); ev.preventDefault(); }
    else if (ev.key === 'Escape') { list.hidden = true; }
    else if (ev.key === 'Enter') {
      var items = list.querySelectorAll('li a');
      var pick = items[active >= 0 ? active : 0];
      if (pick) window.location.href = pick.href;
    }
  });
  document.addEventListener('click', function (ev) {
    if (!ev.target.closest || !ev.target.closest('.search')) list.hidden = true;
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.key === '/' && document.activeElement !== input) { input.focus(); ev.preventDefault(); }
  });
})();
`;
