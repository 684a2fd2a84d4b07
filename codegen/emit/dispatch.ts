// dispatch.gen.ts: the dispatch tables, one entry per method, built from the generic adapters in
// src/rpc/adapters.ts. The mapped type makes the keyset exhaustive; the generated tests check it
// at runtime too.
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import { methodsOf, type MethodInfo, type Model } from '../model.ts';
import { propertyKey } from '../names.ts';
import { importFrom, jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';

/** The generic adapter of a method: a stream's frames are framed by streamHandler. */
function adapterOf(m: MethodInfo): 'streamHandler' | 'paramHandler' | 'noParamHandler' {
  if (m.kind === 'stream') return 'streamHandler';
  return m.dispatch === 'param' ? 'paramHandler' : 'noParamHandler';
}

/** The entry of a method: its name, read as a path under the host's services, is its callee. */
function entry(m: MethodInfo): string {
  const service = ['h.services', ...m.servicePath, m.serviceMethod].join('.');
  const adapter = adapterOf(m);
  if (adapter === 'noParamHandler') return `noParamHandler((h, ctx) => ${service}(ctx))`;
  return `${adapter}(paramValidators[${literal(m.name)}], (h, p, ctx) => ${service}(p, ctx))`;
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
  const adapters = [...new Set(model.methods.map(adapterOf))];
  return printStatements([
    ...importFrom('../src/rpc/adapters.ts', ['type Handler', ...adapters]),
    ...importFrom('./handlers.gen.ts', ['type DaemonHost', 'type HelperHost']),
    ...importFrom('./methods.gen.ts', ['type DaemonMethodName', 'type HelperMethodName']),
    ...importFrom('./validators.gen.ts', model.methods.some((m) => m.params) ? ['paramValidators'] : []),
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
