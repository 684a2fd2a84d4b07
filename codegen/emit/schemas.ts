// schemas.gen.ts: the shared $defs once (DEFS_SCHEMA, registered with ajv under its $id) and every
// params/result JSON Schema as a const whose $refs point into it (`banger:defs#/$defs/X`).
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import type { Model } from '../model.ts';
import { propertyKey } from '../names.ts';
import { DEFS_ID, sharedRefs } from '../schema-utils.ts';
import { jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';

function constant(
  name: string,
  doc: string,
  initializer: string | ReturnType<typeof objectLiteral>,
): Statement {
  return {
    kind: StructureKind.VariableStatement,
    isExported: true,
    declarationKind: VariableDeclarationKind.Const,
    docs: [jsDoc(doc)],
    declarations: [
      {
        name,
        initializer: (w) => {
          if (typeof initializer === 'string') w.write(initializer);
          else initializer(w);
          w.write(' as const');
        },
      },
    ],
  };
}

export function emitSchemas(model: Model): string {
  const params = model.methods.flatMap((m): [string, string][] =>
    m.params ? [[propertyKey(m.name), literal(sharedRefs(m.params))]] : [],
  );
  const results = model.methods.map((m): [string, string] => [
    propertyKey(m.name),
    literal(sharedRefs(m.result)),
  ]);
  return printStatements([
    constant(
      'DEFS_SCHEMA',
      `The shared $defs, once: register with \`ajv.addSchema(DEFS_SCHEMA)\` before compiling a schema below (their $refs are \`${DEFS_ID}#/$defs/<Name>\`).`,
      literal({ $id: DEFS_ID, $defs: model.defs }),
    ),
    constant('PARAMS_SCHEMAS', 'The params schema of every method that takes params.', objectLiteral(params)),
    constant('RESULT_SCHEMAS', 'The result schema of every method.', objectLiteral(results)),
  ]);
}
