// handlers.gen.ts: the interfaces hand-written services implement, one per namespace, plus the
// hosts the dispatch tables call into. A method added to the schema and not implemented is a
// compile error in the class that `implements` the interface.
import {
  StructureKind,
  type InterfaceDeclarationStructure,
  type OptionalKind,
  type JSDocStructure,
} from 'ts-morph';
import { methodsOf, type MethodInfo, type Model, type Surface } from '../model.ts';
import { importFrom, jsDoc, printStatements, type Statement } from './ts.ts';

const SERVER: Record<Surface, string> = { daemon: 'bangerd', helper: 'bangerd-root' };

export function methodDoc(m: MethodInfo, model: Model): OptionalKind<JSDocStructure> {
  const tags: [string, string][] = [['since', m.since]];
  if (m.deprecated !== undefined) tags.push(['deprecated', m.deprecated]);
  for (const code of m.errors) {
    const e = model.errors.find((x) => x.code === code);
    tags.push(['throws', `\`${code}\`: ${e?.description ?? ''}`]);
  }
  return jsDoc(`${m.summary}\n\n${m.description}\n\nWire method: \`${m.name}\`.`, tags);
}

function iface(name: string, doc: string, members: InterfaceDeclarationStructure['properties']): Statement {
  return {
    kind: StructureKind.Interface,
    isExported: true,
    name,
    docs: [jsDoc(doc)],
    properties: members ?? [],
  };
}

export function emitHandlers(model: Model): string {
  const statements: Statement[] = [];
  for (const ns of model.namespaces) {
    statements.push({
      kind: StructureKind.Interface,
      isExported: true,
      name: ns.serviceInterface,
      docs: [jsDoc(`Methods of the \`${ns.name}\` namespace, served by ${SERVER[ns.surface]}.`)],
      methods: ns.methods.map((m) => ({
        name: m.serviceMethod ?? '',
        docs: [methodDoc(m, model)],
        parameters: [
          ...(m.params ? [{ name: 'params', type: m.paramsType }] : []),
          { name: 'ctx', type: 'RpcContext' },
        ],
        returnType: `Promise<${m.resultType}>`,
      })),
    });
  }
  const services = (surface: Surface) =>
    model.namespaces
      .filter((n) => n.surface === surface)
      .map((n) => ({ name: n.name, type: n.serviceInterface }));
  const specials = methodsOf(model, 'daemon').filter((m) => m.dispatch === 'special');
  statements.push(
    iface('Services', 'The daemon services, by namespace: what `rpcHandlers` calls.', services('daemon')),
    {
      kind: StructureKind.TypeAlias,
      isExported: true,
      name: 'SpecialHandler',
      docs: [jsDoc('A hand-written handler: it validates its own params and may return a stream.')],
      type: '(ctx: RpcContext, req: RequestEnvelope) => Promise<HandlerResponse>',
    },
    iface(
      'SpecialHandlers',
      'The daemon methods with dispatch "special", by camelCase name.',
      specials.map((m) => ({ name: m.specialKey, type: 'SpecialHandler', docs: [methodDoc(m, model)] })),
    ),
    iface('DaemonHost', 'What the daemon dispatch table calls into.', [
      { name: 'services', type: 'Services' },
      { name: 'specials', type: 'SpecialHandlers' },
    ]),
    iface(
      'HelperServices',
      'The root-helper services, by namespace: what `helperHandlers` calls.',
      services('helper'),
    ),
    iface('HelperHost', 'What the root-helper dispatch table calls into.', [
      { name: 'services', type: 'HelperServices' },
    ]),
  );
  const typeImports = model.methods
    .filter((m) => m.dispatch !== 'special')
    .flatMap((m) => [`type ${m.resultType}`, ...(m.params ? [`type ${m.paramsType}`] : [])]);
  return printStatements([
    ...importFrom('../src/rpc/context.ts', ['type RpcContext']),
    ...importFrom('../src/rpc/envelope.ts', ['type HandlerResponse', 'type RequestEnvelope']),
    ...importFrom('./types.gen.ts', typeImports),
    ...statements,
  ]);
}
