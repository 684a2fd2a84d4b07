// schemas.gen.ts: every params/result JSON Schema as a self-contained const (the $defs it uses
// travel with it), ready for ajv or any other JSON Schema tool.
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import type { Model } from '../model.ts';
import { propertyKey } from '../names.ts';
import { selfContained } from '../schema-utils.ts';
import { jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';

export function emitSchemas(model: Model): string {
  const table = (name: string, doc: string, entries: [string, string][]): Statement => ({
    kind: StructureKind.VariableStatement,
    isExported: true,
    declarationKind: VariableDeclarationKind.Const,
    docs: [jsDoc(doc)],
    declarations: [
      {
        name,
        initializer: (w) => {
          objectLiteral(entries)(w);
          w.write(' as const');
        },
      },
    ],
  });
  const params = model.methods.flatMap((m): [string, string][] =>
    m.params ? [[propertyKey(m.name), literal(selfContained(m.params, model.defs))]] : [],
  );
  const results = model.methods.map((m): [string, string] => [
    propertyKey(m.name),
    literal(selfContained(m.result, model.defs)),
  ]);
  return printStatements([
    table('PARAMS_SCHEMAS', 'The params schema of every method that takes params.', params),
    table('RESULT_SCHEMAS', 'The result schema of every method.', results),
  ]);
}
