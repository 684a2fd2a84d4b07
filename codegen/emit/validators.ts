// validators.<surface>.gen.ts: one ajv instance per surface, the shared $defs registered once, and
// that surface's params and result validators compiled once, at load: bangerd-root imports only
// the helper's (priv.*). validators.gen.ts merges both for tests and tools that want every method.
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import { methodsOf, type MethodInfo, type Model, type Surface } from '../model.ts';
import { propertyKey } from '../names.ts';
import { AJV_OPTIONS } from '../schema-utils.ts';
import { importFrom, jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';

/** The module and export names of one surface's validators. */
export function validatorNames(surface: Surface): { module: string; params: string; results: string } {
  return {
    module: `validators.${surface}.gen.ts`,
    params: `${surface}ParamValidators`,
    results: `${surface}ResultValidators`,
  };
}

function table(name: string, doc: string, methods: MethodInfo[], which: 'params' | 'result'): Statement {
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
}

export function emitSurfaceValidators(model: Model, surface: Surface): string {
  const methods = methodsOf(model, surface);
  const withParams = methods.filter((m) => m.params);
  const names = validatorNames(surface);
  return printStatements([
    ...importFrom('ajv', ['Ajv', 'type ValidateFunction']),
    ...importFrom('./schemas.gen.ts', [
      'DEFS_SCHEMA',
      ...(withParams.length > 0 ? ['PARAMS_SCHEMAS'] : []),
      'RESULT_SCHEMAS',
    ]),
    ...importFrom(
      './types.gen.ts',
      methods.flatMap((m) => [`type ${m.resultType}`, ...(m.params ? [`type ${m.paramsType}`] : [])]),
    ),
    {
      kind: StructureKind.VariableStatement,
      declarationKind: VariableDeclarationKind.Const,
      docs: [jsDoc('Strict: unknown keywords are schema bugs; no coercion, no defaults, no silent removal.')],
      declarations: [{ name: 'ajv', initializer: `new Ajv(${literal(AJV_OPTIONS)})` }],
    },
    '// The shared $defs, once; the schemas below $ref into it.\najv.addSchema(DEFS_SCHEMA);',
    table(
      names.params,
      `Params validators of the ${surface}'s methods (unknown fields are refused).`,
      withParams,
      'params',
    ),
    table(
      names.results,
      `Result validators of the ${surface}'s methods (used by tests and careful clients).`,
      methods,
      'result',
    ),
  ]);
}

export function emitValidators(): string {
  const surfaces: Surface[] = ['daemon', 'helper'];
  const all = surfaces.map(validatorNames);
  const merged = (name: string, doc: string, which: 'params' | 'results'): Statement => ({
    kind: StructureKind.VariableStatement,
    isExported: true,
    declarationKind: VariableDeclarationKind.Const,
    docs: [jsDoc(doc)],
    declarations: [{ name, initializer: `{ ${all.map((n) => `...${n[which]}`).join(', ')} }` }],
  });
  return printStatements([
    ...all.flatMap((n) => importFrom(`./${n.module}`, [n.params, n.results])),
    merged('paramValidators', 'Params validators of every method, both surfaces (tests, tools).', 'params'),
    merged('resultValidators', 'Result validators of every method, both surfaces (tests, tools).', 'results'),
  ]);
}
