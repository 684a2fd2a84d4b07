// types.gen.ts: json-schema-to-typescript over ONE synthetic root whose $defs hold the shared
// types plus every method's Params/Result, so each type is declared once under a stable name.
import { compile, type JSONSchema } from 'json-schema-to-typescript';
import { Project } from 'ts-morph';
import type { Schema } from '../model.gen.ts';
import type { Model } from '../model.ts';

const ROOT = 'BangerRpcTypes';

/** `{$ref, description}` → `{allOf: [{$ref}], description}`: keeps the doc without a `Foo1` copy of the type. */
function forTypes(schema: Schema): JSONSchema {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'properties') {
      out[key] = Object.fromEntries(
        Object.entries(value as Record<string, Schema>).map(([k, s]) => [k, forTypes(s)]),
      );
    } else if (key === 'items' || (key === 'additionalProperties' && typeof value === 'object')) {
      out[key] = forTypes(value as Schema);
    } else if (key === 'oneOf') {
      out[key] = (value as Schema[]).map(forTypes);
    } else out[key] = value;
  }
  if (schema.$ref !== undefined && Object.keys(schema).length > 1) {
    delete out.$ref;
    out.allOf = [{ $ref: schema.$ref }];
  }
  return out as JSONSchema;
}

export async function emitTypes(model: Model): Promise<string> {
  const defs: Record<string, JSONSchema> = {};
  for (const [name, def] of Object.entries(model.defs)) defs[name] = forTypes(def);
  /** A method's params/result as a named def; a bare $ref becomes an alias (`type VmStartResult = Vm`). */
  const named = (schema: Schema, title: string, description: string): JSONSchema =>
    schema.$ref !== undefined
      ? { title, description, allOf: [{ $ref: schema.$ref }] }
      : { ...forTypes(schema), title, description };
  for (const m of model.methods) {
    if (m.params) defs[m.paramsType] = named(m.params, m.paramsType, `Params of \`${m.name}\`.`);
    defs[m.resultType] = named(m.result, m.resultType, `Result of \`${m.name}\`.`);
    if (m.frame) defs[m.frameType] = named(m.frame, m.frameType, `One frame of \`${m.name}\`'s stream.`);
  }
  const root = { title: ROOT, type: 'object', additionalProperties: false, properties: {}, $defs: defs };
  const raw = await compile(root as JSONSchema, ROOT, {
    bannerComment: '',
    additionalProperties: false,
    unreachableDefinitions: true,
    ignoreMinAndMaxItems: true,
    format: false,
  });
  return sortDeclarations(withoutProvenance(raw));
}

/** Drop json-schema-to-typescript's "This interface was referenced by …" notes (whole blocks or trailers). */
export function withoutProvenance(text: string): string {
  const note = String.raw` \* This interface was referenced by \`\w+\`'s JSON-Schema\n \* via the \`definition\` "\w+"\.\n`;
  return text
    .replace(new RegExp(String.raw`/\*\*\n${note} \*/\n`, 'g'), '')
    .replace(new RegExp(String.raw` \*\s*\n${note}`, 'g'), '');
}

/** Drop the synthetic root and order the declarations by name. */
function sortDeclarations(text: string): string {
  const file = new Project({ useInMemoryFileSystem: true }).createSourceFile('/types.ts', text);
  const decls = [...file.getInterfaces(), ...file.getTypeAliases()].filter((d) => d.getName() !== ROOT);
  if (decls.length !== file.getStatements().length - 1) {
    throw new Error(
      'types: json-schema-to-typescript emitted something other than interfaces and type aliases',
    );
  }
  return decls
    .map((d) => ({ name: d.getName(), text: d.getFullText().trim() }))
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map((d) => d.text)
    .join('\n\n')
    .concat('\n');
}
