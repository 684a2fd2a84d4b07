// errors.gen.ts: the closed set of wire error codes with their CLI exit codes.
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import type { Model } from '../model.ts';
import { jsDoc, literal, objectLiteral, printStatements } from './ts.ts';

export function emitErrors(model: Model): string {
  const entries = model.errors.map((e): [string, string] => [
    e.code,
    literal({ exit: e.exit, universal: e.universal, description: e.description }),
  ]);
  const universal = model.errors.filter((e) => e.universal).map((e) => e.code);
  return printStatements([
    {
      kind: StructureKind.VariableStatement,
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: [
        jsDoc('Every wire error code: when to use it (`description`) and the CLI exit code it maps to.'),
      ],
      declarations: [
        {
          name: 'ERROR_CODES',
          initializer: (w) => {
            objectLiteral(entries)(w);
            w.write(' as const');
          },
        },
      ],
    },
    {
      kind: StructureKind.TypeAlias,
      isExported: true,
      name: 'ErrorCode',
      type: 'keyof typeof ERROR_CODES',
    },
    {
      kind: StructureKind.VariableStatement,
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: [jsDoc('Codes any method may return; method records do not list them.')],
      declarations: [
        { name: 'UNIVERSAL_ERROR_CODES', type: 'readonly ErrorCode[]', initializer: literal(universal) },
      ],
    },
  ]);
}
