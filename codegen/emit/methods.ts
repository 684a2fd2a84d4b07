// methods.gen.ts: the protocol version, the METHODS table, method-name unions and MethodMap.
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import { methodsOf, type Model } from '../model.ts';
import { propertyKey } from '../names.ts';
import { importFrom, jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';

const union = (names: string[]): string =>
  names.length === 0 ? 'never' : names.map((n) => `'${n}'`).join(' | ');

export function emitMethods(model: Model): string {
  const daemon = methodsOf(model, 'daemon').map((m) => m.name);
  const helper = methodsOf(model, 'helper').map((m) => m.name);
  const typeImports = model.methods.flatMap((m) => [
    `type ${m.resultType}`,
    ...(m.params ? [`type ${m.paramsType}`] : []),
  ]);
  const table = model.methods.map((m): [string, string] => {
    const entry: Record<string, unknown> = {
      surface: m.surface,
      dispatch: m.dispatch,
      kind: m.kind,
      summary: m.summary,
      errors: m.errors,
      since: m.since,
    };
    if (m.deprecated !== undefined) entry.deprecated = m.deprecated;
    return [propertyKey(m.name), literal(entry)];
  });
  const constant = (name: string, doc: string, initializer: string, type?: string): Statement => ({
    kind: StructureKind.VariableStatement,
    isExported: true,
    declarationKind: VariableDeclarationKind.Const,
    docs: [jsDoc(doc)],
    declarations: [{ name, initializer, ...(type ? { type } : {}) }],
  });
  return printStatements([
    ...importFrom('./types.gen.ts', typeImports),
    constant(
      'PROTOCOL_VERSION',
      'The wire protocol version requests carry and servers accept.',
      String(model.protocolVersion),
    ),
    {
      kind: StructureKind.VariableStatement,
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: [
        jsDoc(
          'Every method, sorted by name: who serves it, how it is dispatched, and the errors it declares.',
        ),
      ],
      declarations: [
        {
          name: 'METHODS',
          initializer: (w) => {
            objectLiteral(table)(w);
            w.write(' as const');
          },
        },
      ],
    },
    { kind: StructureKind.TypeAlias, isExported: true, name: 'MethodName', type: 'keyof typeof METHODS' },
    {
      kind: StructureKind.TypeAlias,
      isExported: true,
      name: 'DaemonMethodName',
      docs: [jsDoc('Methods served by the daemon (bangerd).')],
      type: union(daemon),
    },
    {
      kind: StructureKind.TypeAlias,
      isExported: true,
      name: 'HelperMethodName',
      docs: [jsDoc('Methods served by the root helper (bangerd-root).')],
      type: union(helper),
    },
    constant(
      'DAEMON_METHOD_NAMES',
      'Daemon method names, sorted.',
      literal(daemon),
      'readonly DaemonMethodName[]',
    ),
    constant(
      'HELPER_METHOD_NAMES',
      'Root-helper method names, sorted.',
      literal(helper),
      'readonly HelperMethodName[]',
    ),
    {
      kind: StructureKind.Interface,
      isExported: true,
      name: 'MethodMap',
      docs: [
        jsDoc('Params, result and declared error codes of every method (`undefined` params: takes none).'),
      ],
      properties: model.methods.map((m) => ({
        name: propertyKey(m.name),
        type: `{ params: ${m.params ? m.paramsType : 'undefined'}; result: ${m.resultType}; errors: ${union(m.errors)} }`,
      })),
    },
  ]);
}
