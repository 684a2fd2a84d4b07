// validators.gen.ts: one ajv instance; every params and result validator compiled once, at load.
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import type { Model, MethodInfo } from '../model.ts';
import { propertyKey } from '../names.ts';
import { AJV_OPTIONS } from '../schema-utils.ts';
import { importFrom, jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';

export function emitValidators(model: Model): string {
  const withParams = model.methods.filter((m) => m.params);
  const table = (name: string, doc: string, methods: MethodInfo[], which: 'params' | 'result'): Statement => {
    const typeOf = (m: MethodInfo): string => (which === 'params' ? m.paramsType : m.resultType);
    const schemas = which === 'params' ? 'PARAMS_SCHEMAS' : 'RESULT_SCHEMAS';
    return {
      kind: StructureKind.VariableStatement,
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: [jsDoc(doc)],
      declarations: [
        {
          name,
          type: `{ ${methods.map((m) => `readonly ${propertyKey(m.name)}: ValidateFunction<${typeOf(m)}>`).join('; ')} }`,
          initializer: objectLiteral(
            methods.map((m) => [
              propertyKey(m.name),
              `ajv.compile<${typeOf(m)}>(${schemas}[${literal(m.name)}])`,
            ]),
          ),
        },
      ],
    };
  };
  return printStatements([
    ...importFrom('ajv', ['Ajv', 'type ValidateFunction']),
    ...importFrom('./schemas.gen.ts', [
      ...(withParams.length > 0 ? ['PARAMS_SCHEMAS'] : []),
      'RESULT_SCHEMAS',
    ]),
    ...importFrom(
      './types.gen.ts',
      model.methods.flatMap((m) => [`type ${m.resultType}`, ...(m.params ? [`type ${m.paramsType}`] : [])]),
    ),
    {
      kind: StructureKind.VariableStatement,
      declarationKind: VariableDeclarationKind.Const,
      docs: [jsDoc('Strict: unknown keywords are schema bugs; no coercion, no defaults, no silent removal.')],
      declarations: [{ name: 'ajv', initializer: `new Ajv(${literal(AJV_OPTIONS)})` }],
    },
    table(
      'paramValidators',
      'Params validators (unknown fields are refused), by method.',
      withParams,
      'params',
    ),
    table(
      'resultValidators',
      'Result validators, by method (used by tests and careful clients).',
      model.methods,
      'result',
    ),
  ]);
}
