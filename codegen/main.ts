// npm run codegen            → validate schema/methods.json, regenerate generated/ (and codegen/model.gen.ts)
// npm run codegen -- --check → generate in memory, compare with disk, exit 1 when stale
// --root DIR                 → work on another checkout (tests use a temp copy)
import { parseArgs } from 'node:util';
import { compareWithDisk, isClean, writeGenerated, type Drift } from './check.ts';
import { generate, REPO_ROOT } from './generate.ts';
import { SchemaError } from './validate.ts';

function report(d: Drift): string[] {
  return [
    ...d.changed.map((p) => `  changed: ${p}`),
    ...d.missing.map((p) => `  missing: ${p}`),
    ...d.orphans.map((p) => `  orphan:  ${p}`),
  ];
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { check: { type: 'boolean', default: false }, root: { type: 'string', default: REPO_ROOT } },
  });
  const root = values.root;
  let files: Map<string, string>;
  try {
    files = await generate(root);
  } catch (err) {
    if (err instanceof SchemaError) {
      console.error(err.message);
      return 1;
    }
    throw err;
  }
  if (values.check) {
    const drift = compareWithDisk(root, files);
    if (isClean(drift)) {
      console.log(`codegen: generated/ is up to date (${files.size} files)`);
      return 0;
    }
    console.error(['codegen: generated/ is stale: run npm run codegen', ...report(drift)].join('\n'));
    return 1;
  }
  const drift = writeGenerated(root, files);
  const lines = report(drift);
  console.log(
    lines.length === 0
      ? `codegen: ${files.size} files, all up to date`
      : [`codegen: ${files.size} files`, ...lines].join('\n'),
  );
  return 0;
}

process.exitCode = await main();
