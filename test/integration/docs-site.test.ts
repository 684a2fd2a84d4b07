// The generated docs site, served as plain static files and read in headless Chromium: every
// schema method is on the index, each link leads to a page with params, result and errors, and
// the page needs nothing but its own files (no build step, no network).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, resolve, sep } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { METHODS, type MethodName } from '../../generated/methods.gen.ts';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = resolve(import.meta.dirname, '../..');
const DOCS = join(ROOT, 'generated/docs');
const ARTIFACTS = join(ROOT, 'test-artifacts');
const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};
const methods = Object.keys(METHODS).sort() as MethodName[];

function serveStatic(dir: string): Promise<Server> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = resolve(dir, `.${path.endsWith('/') ? `${path}index.html` : path}`);
    if (!file.startsWith(dir + sep) || !existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

const skipReason = existsSync(CHROMIUM)
  ? ''
  : ` (skipped: ${CHROMIUM} is missing; apt-get install -y --no-install-recommends chromium)`;

describe.skipIf(!existsSync(CHROMIUM))(`docs site in headless Chromium${skipReason}`, () => {
  let server: Server;
  let browser: Browser;
  let page: Page;
  let base: string;
  const problems: string[] = [];

  beforeAll(async () => {
    server = await serveStatic(DOCS);
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
    page = await browser.newPage();
    // Offline: anything outside the docs server is a bug in the generated pages.
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
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await new Promise((ok) => (server ? server.close(ok) : ok(undefined)));
  });

  it('lists every schema method and the error codes on the index', async () => {
    await page.goto(base);
    expect(await page.locator('h1').textContent()).toBe('banger RPC reference');
    for (const name of methods) {
      expect(await page.locator(`a[href="methods/${name}.html"]`).count(), name).toBe(1);
    }
    expect(await page.locator('#errors tbody tr').count()).toBe(10);
    // The browser's getComputedStyle: typed by hand, since this project compiles without the DOM lib.
    type Css = { getComputedStyle(el: unknown): { maxWidth: string } };
    const maxWidth = await page
      .locator('main')
      .evaluate((el) => (globalThis as unknown as Css).getComputedStyle(el).maxWidth);
    expect(maxWidth, 'style.css applied').not.toBe('none');
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'docs-index.png'), fullPage: true });
    expect(problems).toEqual([]);
  });

  it('follows each link to a page with params, result, errors and examples', async () => {
    for (const name of methods) {
      await page.goto(base);
      await Promise.all([
        page.waitForURL(`**/methods/${name}.html`),
        page.click(`a[href="methods/${name}.html"]`),
      ]);
      expect(await page.locator('h1').textContent(), name).toBe(name);
      for (const section of ['params', 'result', 'errors', 'examples']) {
        expect(await page.locator(`section#${section} h2`).isVisible(), `${name} #${section}`).toBe(true);
      }
      expect(await page.locator('section#errors').textContent(), name).toContain('bad_request');
      const example = (await page.locator('section#examples pre').first().textContent()) ?? '';
      const [request, response] = example
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(request).toMatchObject({
        version: 1,
        method: name,
        op_id: expect.stringMatching(/^op-[0-9a-f]{6,32}$/),
      });
      expect(response).toMatchObject({ ok: true, op_id: request?.op_id });
    }
    expect(problems).toEqual([]);
  }, 60_000);
});
