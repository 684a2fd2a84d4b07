// dispatch.gen.ts: the dispatch tables, one entry per method, built from the generic adapters in
// src/rpc/adapters.ts. The mapped type makes the keyset exhaustive; the generated tests check it
// at runtime too.
import { StructureKind, VariableDeclarationKind, type WriterFunction } from 'ts-morph';
import { methodsOf, type MethodInfo, type Model } from '../model.ts';
import { propertyKey } from '../names.ts';
import { importFrom, jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';

function entry(m: MethodInfo): string | WriterFunction {
  const service = `h.services.${m.namespace}.${m.serviceMethod}`;
  if (m.dispatch === 'param') {
    return `paramHandler(paramValidators[${literal(m.name)}], (h, p, ctx) => ${service}(p, ctx))`;
  }
  if (m.dispatch === 'noParam') return `noParamHandler((h, ctx) => ${service}(ctx))`;
  return (w) => {
    w.write(`function ${m.specialKey}Handler(ctx, host, req) {`).newLine();
    w.indent(() => w.write(`return host.specials.${m.specialKey}(ctx, req);`).newLine());
    w.write('}');
  };
}

function table(name: string, doc: string, methods: MethodInfo[], nameType: string, host: string): Statement {
  return {
    kind: StructureKind.VariableStatement,
    isExported: true,
    declarationKind: VariableDeclarationKind.Const,
    docs: [jsDoc(doc)],
    declarations: [
      {
        name,
        type: `{ readonly [M in ${nameType}]: Handler<${host}> }`,
        initializer: objectLiteral(methods.map((m) => [propertyKey(m.name), entry(m)])),
      },
    ],
  };
}

export function emitDispatch(model: Model): string {
  const used = (d: MethodInfo['dispatch']) => model.methods.some((m) => m.dispatch === d);
  return printStatements([
    ...importFrom('../src/rpc/adapters.ts', [
      'type Handler',
      ...(used('noParam') ? ['noParamHandler'] : []),
      ...(used('param') ? ['paramHandler'] : []),
    ]),
    ...importFrom('./handlers.gen.ts', ['type DaemonHost', 'type HelperHost']),
    ...importFrom('./methods.gen.ts', ['type DaemonMethodName', 'type HelperMethodName']),
    ...importFrom('./validators.gen.ts', used('param') ? ['paramValidators'] : []),
    table(
      'rpcHandlers',
      "The daemon's dispatch table: method name → handler(ctx, host, req).",
      methodsOf(model, 'daemon'),
      'DaemonMethodName',
      'DaemonHost',
    ),
    table(
      'helperHandlers',
      "The root helper's dispatch table: method name → handler(ctx, host, req).",
      methodsOf(model, 'helper'),
      'HelperMethodName',
      'HelperHost',
    ),
  ]);
}
