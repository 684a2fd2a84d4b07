import { Flags } from '@oclif/core';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, resolve, sep } from 'node:path';
import { BangerCommand } from '../base.ts';
import { findRepoRoot } from '../../util/repo-root.ts';

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/**
 * Serves the files of `dir` (a directory request gets its index.html) on 127.0.0.1:`port` (0: any
 * free port). Read-only, GET and HEAD only, nothing outside `dir`.
 */
export function serveSite(dir: string, port: number): Promise<Server> {
  const base = resolve(dir);
  const server = createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      res.writeHead(400).end('bad path');
      return;
    }
    let file = resolve(base, `.${path}`);
    if (file !== base && !file.startsWith(base + sep)) {
      res.writeHead(404).end('not found');
      return;
    }
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    if (!existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found');
      return;
    }
    res.writeHead(200, {
      'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-cache',
    });
    res.end(req.method === 'HEAD' ? undefined : readFileSync(file));
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => ok(server));
  });
}

export default class Docs extends BangerCommand {
  static override summary = 'Serve the docs site on 127.0.0.1 and print its URL.';
  static override description = `Serves the site \`npm run docs:build\` writes (guides, the CLI and RPC references, error codes, search) until Ctrl-C. Without --dir it is the checkout's site/ directory, built first when it is missing; --build builds it (or the --dir one) first in any case. Only 127.0.0.1 is listened on; the daemon is not needed.`;
  static override examples = [
    '<%= config.bin %> docs',
    '<%= config.bin %> docs --port 8080 --build',
    '<%= config.bin %> docs --json',
  ];
  static override flags = {
    port: Flags.integer({
      summary: 'Port to listen on (default: a free one).',
      min: 0,
      max: 65535,
      default: 0,
    }),
    dir: Flags.string({
      summary: 'The built site to serve (default: site/ of the checkout).',
      helpValue: '<path>',
    }),
    build: Flags.boolean({ summary: 'Build the site first, even when it exists (npm run docs:build).' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parseWith(Docs);
    const root = findRepoRoot(import.meta.dirname);
    const dir = resolve(flags.dir ?? join(root ?? '.', 'site'));
    const missing = !existsSync(join(dir, 'index.html'));
    // Only the checkout's own site/ is built unasked: a --dir elsewhere is written only with --build.
    if (missing && flags.dir !== undefined && !flags.build) {
      this.error(`no docs site in ${dir} (give --build to build one there, or run npm run docs:build)`, {
        exit: 1,
      });
    }
    if (flags.build || missing) this.buildSite(root, dir);
    const server = await serveSite(dir, flags.port).catch((err: NodeJS.ErrnoException) =>
      this.error(`cannot listen on 127.0.0.1:${flags.port}: ${err.code ?? err.message}`, { exit: 1 }),
    );
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    if (this.jsonEnabled()) this.logJson({ url });
    else this.log(`docs: ${url} (serving ${dir}; Ctrl-C stops)`);
    await new Promise<void>((done) => {
      const stop = (): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        server.closeAllConnections();
        server.close(() => done());
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  }

  /** Runs the checkout's docs build into `dir` (its output goes to stderr: stdout stays the URL). */
  private buildSite(root: string | undefined, dir: string): void {
    const script = root && join(root, 'codegen', 'docs-build.ts');
    const node = root && join(root, 'scripts', 'node');
    if (!script || !node || !existsSync(script) || !existsSync(node)) {
      this.error(`no docs site in ${dir}: build one with \`npm run docs:build\` in a banger checkout`, {
        exit: 1,
      });
    }
    const r = spawnSync(node, [script, '--out', dir], { cwd: root, stdio: ['ignore', 2, 2] });
    if (r.status !== 0)
      this.error(`docs build failed (npm run docs:build, exit ${r.status ?? r.signal})`, { exit: 1 });
  }
}
