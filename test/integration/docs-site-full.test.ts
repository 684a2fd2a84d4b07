// The whole docs site (`npm run docs:build`), built into a temp dir, served by `banger docs`'s own
// server and used in headless Chromium as a reader would: search for a method and follow the
// result, go from a CLI command's page to the RPC method it calls, and crawl every page from the
// home page: no link may lead to a missing page or a missing #anchor, and every page is reachable.
// Needs oclif.manifest.json (written by `npm run build`) for the CLI reference.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSite } from '../../codegen/docs-build.ts';
import { buildSite } from '../../codegen/site/build.ts';
import { serveSite } from '../../src/cli/commands/docs.ts';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = resolve(import.meta.dirname, '../..');
const ARTIFACTS = join(ROOT, 'test-artifacts');

interface Crawl {
  /** Each page reached: its URL and the ids on it. */
  pages: [string, string[]][];
  /** Each link to a page of the site: [from, to] (absolute URLs, to with its #anchor). */
  links: [string, string][];
  /** Pages that did not load: "status url". */
  failed: string[];
}

/**
 * Breadth-first from the home page over every same-origin <a href>, in the browser. Plain JS in a
 * string: this project compiles without the DOM lib.
 */
const CRAWL = `(async () => {
  const origin = location.origin;
  const start = new URL('index.html', location.href).href;
  const pages = new Map();
  const links = [];
  const failed = [];
  const queue = [start];
  while (queue.length > 0) {
    const url = queue.shift();
    if (pages.has(url)) continue;
    const res = await fetch(url);
    if (!res.ok) { failed.push(res.status + ' ' + url); pages.set(url, []); continue; }
    const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
    pages.set(url, [...doc.querySelectorAll('[id]')].map((e) => e.id));
    for (const a of doc.querySelectorAll('a[href]')) {
      const to = new URL(a.getAttribute('href'), url);
      if (to.origin !== origin) continue;
      links.push([url, to.href]);
      const target = to.href.split('#')[0];
      if (!pages.has(target) && !queue.includes(target)) queue.push(target);
    }
  }
  return { pages: [...pages], links, failed };
})()`;

const skipReason = existsSync(CHROMIUM)
  ? ''
  : ` (skipped: ${CHROMIUM} is missing; apt-get install -y --no-install-recommends chromium)`;

describe.skipIf(!existsSync(CHROMIUM))(`the docs site in headless Chromium${skipReason}`, () => {
  let dir: string;
  let files: Map<string, string>;
  let server: Server;
  let browser: Browser;
  let page: Page;
  let base: string;
  const problems: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'banger-site-'));
    files = buildSite(ROOT);
    writeSite(dir, files);
    server = await serveSite(dir, 0);
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    // Offline: anything outside the site is a bug in the pages.
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(base)) return route.continue();
      problems.push(`external request: ${url}`);
      return route.abort();
    });
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`);
    });
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await new Promise((ok) => (server ? server.close(ok) : ok(undefined)));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('finds a method by search and follows the result to its page', async () => {
    await page.goto(base);
    expect(await page.locator('h1').textContent()).toBe('banger documentation');
    await page.locator('#search').fill('vm.start');
    const first = page.locator('#search-results li a').first();
    await first.waitFor();
    expect(await first.locator('.title').textContent()).toBe('vm.start');
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'docs-site-search.png') });
    await Promise.all([page.waitForURL('**/rpc/methods/vm.start.html'), first.click()]);
    expect(await page.locator('main h1').textContent()).toBe('vm.start');

    // Enter follows the best hit too; a command is found by the words a user types.
    await page.locator('#search').fill('vm workspace export');
    await page.locator('#search-results li a').first().waitFor();
    await Promise.all([
      page.waitForURL('**/cli/vm-workspace-export.html'),
      page.locator('#search').press('Enter'),
    ]);
    expect(await page.locator('main h1').textContent()).toBe('banger vm workspace export');
    expect(problems).toEqual([]);
  });

  it('goes from a CLI command to the RPC method it calls', async () => {
    await page.goto(`${base}cli/vm-start.html`);
    expect(await page.locator('main h1').textContent()).toBe('banger vm start');
    expect(await page.locator('#usage pre').textContent()).toBe('banger vm start NAME...');
    await Promise.all([
      page.waitForURL('**/rpc/methods/vm.start.html'),
      page.locator('a.rpc-method', { hasText: 'vm.start' }).click(),
    ]);
    expect(await page.locator('main h1').textContent()).toBe('vm.start');

    await page.goto(`${base}cli/vm-create.html`);
    const calls = await page.locator('a.rpc-method').allTextContents();
    expect(calls[0]).toBe('vm.create.begin');
    expect(await page.locator('#flags').textContent()).toContain('--[no-]start');
    await page.screenshot({ path: join(ARTIFACTS, 'docs-site-cli.png'), fullPage: true });
    expect(problems).toEqual([]);
  });

  it('shows an error example per declared code, answered with the request op id', async () => {
    await page.goto(`${base}rpc/methods/vm.stop.html`);
    const examples = await page.locator('section#error-examples pre').allTextContents();
    const codes: string[] = [];
    for (const text of examples) {
      const [request, response] = text.split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(request).toMatchObject({ method: 'vm.stop', op_id: expect.stringMatching(/^op-[0-9a-f]+$/) });
      expect(response).toMatchObject({ ok: false, error: { op_id: request?.op_id } });
      codes.push((response?.error as { code: string }).code);
    }
    expect(codes).toEqual(['conflict', 'not_found', 'not_running']);
  });

  it('has no broken link or anchor, and every page is reachable from the home page', async () => {
    // The crawl runs in the page (fetch + DOMParser, so Chromium resolves every href as it would
    // on a click) rather than with one navigation per page: ~120 page loads take minutes on a
    // busy 2-core machine, this takes seconds.
    await page.goto(base);
    const crawl = (await page.evaluate(CRAWL)) as Crawl;
    expect(crawl.failed).toEqual([]);
    const pages = new Map(crawl.pages.map(([url, ids]) => [url, new Set(ids)]));
    const broken = crawl.links.filter(([, to]) => {
      const [target, anchor] = to.split('#') as [string, string | undefined];
      const ids = pages.get(target);
      return !ids || (anchor !== undefined && anchor !== '' && !ids.has(decodeURIComponent(anchor)));
    });
    expect(broken.map(([from, to]) => `${from} → ${to}`)).toEqual([]);
    const htmlFiles = [...files.keys()].filter((p) => p.endsWith('.html')).map((p) => `${base}${p}`);
    expect(htmlFiles.filter((u) => !pages.has(u))).toEqual([]);
    expect(pages.size).toBe(htmlFiles.length);
    expect(crawl.links.length).toBeGreaterThan(1000);
    expect(problems).toEqual([]);
  }, 120_000);
});

// `banger docs` as a user runs it (needs `npm run build`: bin/banger runs dist/): into an empty
// directory (with --build) it builds the site first, prints {url} with --json, serves it, and
// stops on Ctrl-C.
const BANGER = join(ROOT, 'bin', 'banger');
const built = existsSync(join(ROOT, 'dist/src/cli/commands/docs.js'));
describe.skipIf(!built)(`banger docs${built ? '' : ' (skipped: run npm run build)'}`, () => {
  it('builds a missing site, serves it on 127.0.0.1 and stops on SIGINT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'banger-docs-cmd-'));
    try {
      const p = spawn(BANGER, ['docs', '--json', '--build', '--dir', join(dir, 'site')], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((ok) => p.on('exit', (code) => ok(code)));
      const out = await new Promise<string>((ok, fail) => {
        p.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          // oclif's logJson pretty-prints: the output is whole once it parses.
          try {
            JSON.parse(stdout);
            ok(stdout);
          } catch {
            // not yet
          }
        });
        void exited.then((code) => fail(new Error(`banger docs exited ${code}: ${stderr}`)));
      });
      const { url } = JSON.parse(out) as { url: string };
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
      expect(stderr).toContain('docs: '); // the build's own line, kept off stdout
      const home = await fetch(url);
      expect(home.status).toBe(200);
      expect(await home.text()).toContain('<h1>banger documentation</h1>');
      expect((await fetch(`${url}rpc/methods/vm.start.html`)).status).toBe(200);
      expect((await fetch(`${url}..%2F..%2Fetc%2Fpasswd`)).status).toBe(404);
      p.kill('SIGINT');
      expect(await exited).toBe(0);
      await expect(fetch(url)).rejects.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
