// Everything codegen emits, in memory: path (relative to the repo root) → final text, with the
// header applied and prettier run over it with the repo's config. Writing and checking are
// separate (check.ts), so generation stays pure and can be run twice to prove idempotence.
import { join, resolve } from 'node:path';
import * as prettier from 'prettier';
import { emitBarrel } from './emit/barrel.ts';
import { emitClient } from './emit/client.ts';
import { emitDispatch, emitSurfaceDispatch } from './emit/dispatch.ts';
import { emitDocs } from './emit/docs.ts';
import { emitErrors } from './emit/errors.ts';
import { emitHandlers } from './emit/handlers.ts';
import { emitMethods } from './emit/methods.ts';
import { emitRoutingTest } from './emit/routing-test.ts';
import { emitModelTypes } from './emit/model.ts';
import { emitSchemas } from './emit/schemas.ts';
import { emitTests } from './emit/tests.ts';
import { emitTypes } from './emit/types.ts';
import { emitSurfaceValidators, emitValidators } from './emit/validators.ts';
import { MODEL_HEADER_TEXT, withHeader } from './header.ts';
import { loadModel } from './model.ts';

/** The checkout codegen lives in: its prettier config formats the output wherever it is written. */
export const REPO_ROOT = resolve(import.meta.dirname, '..');
export const GENERATED_DIR = 'generated';
export const MODEL_TYPES_FILE = 'codegen/model.gen.ts';

export async function generate(root: string = REPO_ROOT): Promise<Map<string, string>> {
  const { model, metaSchema } = loadModel(root);
  const modules = new Map<string, string>([
    ['client.gen.ts', emitClient(model)],
    ['dispatch.gen.ts', emitDispatch()],
    ['errors.gen.ts', emitErrors(model)],
    ['handlers.gen.ts', emitHandlers(model)],
    ['methods.gen.ts', emitMethods(model)],
    ['schemas.gen.ts', emitSchemas(model)],
    ['types.gen.ts', await emitTypes(model)],
    ['validators.gen.ts', emitValidators()],
  ]);
  // One module per surface, so each server loads (and compiles) only its own methods' validators.
  // Left out of the barrel: dispatch.gen.ts and validators.gen.ts re-export them.
  const perSurface = new Map<string, string>();
  for (const surface of ['daemon', 'helper'] as const) {
    perSurface.set(`dispatch.${surface}.gen.ts`, emitSurfaceDispatch(model, surface));
    perSurface.set(`validators.${surface}.gen.ts`, emitSurfaceValidators(model, surface));
  }
  const out = new Map<string, string>();
  for (const [name, text] of [...modules, ...perSurface])
    out.set(`${GENERATED_DIR}/${name}`, withHeader(name, text));
  out.set(`${GENERATED_DIR}/index.ts`, withHeader('index.ts', emitBarrel([...modules.keys()])));
  out.set(`${GENERATED_DIR}/tests/methods.gen.test.ts`, withHeader('test.ts', emitTests(model)));
  out.set(`${GENERATED_DIR}/tests/routing.gen.test.ts`, withHeader('test.ts', emitRoutingTest(model)));
  for (const [path, text] of emitDocs(model)) out.set(`${GENERATED_DIR}/${path}`, withHeader(path, text));
  out.set(
    MODEL_TYPES_FILE,
    withHeader(MODEL_TYPES_FILE, await emitModelTypes(metaSchema), MODEL_HEADER_TEXT),
  );

  const config = (await prettier.resolveConfig(join(REPO_ROOT, '.prettierrc.json'))) ?? {};
  const formatted = new Map<string, string>();
  for (const path of [...out.keys()].sort()) {
    const text = out.get(path) as string;
    formatted.set(path, await prettier.format(text, { ...config, filepath: join(REPO_ROOT, path) }));
  }
  return formatted;
}
