// npm run docs:build [-- --out DIR] → the docs site in DIR (default site/, uncommitted): guides
// (docs/*.md), the CLI reference (from oclif.manifest.json: run `npm run build` first), the RPC
// method reference and the error codes, with a search box. Built from the schema in memory, so it
// matches the schema even when generated/ is stale. `banger docs` serves it.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from './generate.ts';
import { buildSite, SiteInputError } from './site/build.ts';
import { SchemaError } from './validate.ts';

/** The directories the site owns in DIR: emptied first, so pages of removed methods or commands do not linger. */
const OWNED_DIRS = ['rpc', 'cli', 'guides', 'methods'];

export function writeSite(out: string, files: Map<string, string>): void {
  for (const dir of OWNED_DIRS) rmSync(join(out, dir), { recursive: true, force: true });
  for (const [path, text] of files) {
    const dest = join(out, path);
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, text);
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { out: { type: 'string', default: join(REPO_ROOT, 'site') } } });
  const out = resolve(values.out);
  try {
    const files = buildSite(REPO_ROOT);
    writeSite(out, files);
    console.log(
      `docs: ${files.size} files in ${out} (serve it: banger docs; or open ${join(out, 'index.html')})`,
    );
  } catch (err) {
    if (!(err instanceof SiteInputError || err instanceof SchemaError)) throw err;
    console.error(`docs: ${err.message}`);
    process.exitCode = 1;
  }
}
