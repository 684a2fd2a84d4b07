// codegen/model.gen.ts: the TypeScript types of methods.json, generated from the hand-written
// meta-schema (schema/methods.schema.json), so the generator is typed against the real model.
import { compile, type JSONSchema } from 'json-schema-to-typescript';
import { withoutProvenance } from './types.ts';

export async function emitModelTypes(metaSchema: object): Promise<string> {
  const raw = await compile(metaSchema as JSONSchema, 'MethodsFile', {
    bannerComment: '',
    additionalProperties: false,
    unreachableDefinitions: true,
    ignoreMinAndMaxItems: true,
    format: false,
  });
  return withoutProvenance(raw);
}
