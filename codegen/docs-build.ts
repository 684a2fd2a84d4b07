// npm run docs:build [-- --out DIR] → the docs site, built from the schema, in DIR (default site/,
// uncommitted). It is the generator's docs output (the method reference, its index and the
// error-code table), generated in memory so it matches the schema even when generated/ is stale.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { generate, GENERATED_DIR, REPO_ROOT } from './generate.ts';

const { values } = parseArgs({ options: { out: { type: 'string', default: join(REPO_ROOT, 'site') } } });
const out = resolve(values.out);
const prefix = `${GENERATED_DIR}/docs/`;
const files = [...(await generate(REPO_ROOT))].filter(([path]) => path.startsWith(prefix));
// Pages of methods that no longer exist must not linger; nothing else in DIR is touched.
rmSync(join(out, 'methods'), { recursive: true, force: true });
for (const [path, text] of files) {
  const dest = join(out, path.slice(prefix.length));
  mkdirSync(dirname(dest), { recursive: true });
  writeFileSync(dest, text);
}
console.log(`docs: ${files.length} files in ${out} (open ${join(out, 'index.html')})`);
