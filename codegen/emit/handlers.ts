// handlers.gen.ts: the interfaces hand-written services implement, one per service path
// (VmService, and under it VmCreateService for vm.create.*), nested as the method names are, plus
// the hosts the dispatch tables call into. A method added to the schema and not implemented is a
// compile error in the class that `implements` the interface.
import { StructureKind, type OptionalKind, type JSDocStructure } from 'ts-morph';
import type { MethodInfo, Model, ServiceNode, Surface } from '../model.ts';
import { serviceInterfaceName } from '../names.ts';
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

/** The name of a service node's interface: the surface's root, or e.g. VmCreateService. */
export function serviceNodeInterface(node: ServiceNode): string {
  return serviceInterfaceName(node.path) ?? ROOT[node.surface];
}

const ROOT: Record<Surface, string> = { daemon: 'Services', helper: 'HelperServices' };

/** What a service method returns: its result, or for a stream its frames and then its result. */
export function serviceReturnType(m: MethodInfo): string {
  return m.kind === 'stream'
    ? `Promise<StreamReply<${m.frameType}, ${m.resultType}>>`
    : `Promise<${m.resultType}>`;
}

function nodeDoc(node: ServiceNode): string {
  if (node.path.length > 0)
    return `The \`${node.path.join('.')}.*\` methods, served by ${SERVER[node.surface]}: \`${node.path.join('.')}.x\` is \`services.${node.path.join('.')}.x\`.`;
  return `The ${SERVER[node.surface]} services: a method's name is its path here (\`vm.create.begin\` → \`services.vm.create.begin\`), which the dispatch table follows.`;
}

function nodeInterface(node: ServiceNode, model: Model): Statement {
  return {
    kind: StructureKind.Interface,
    isExported: true,
    name: serviceNodeInterface(node),
    docs: [jsDoc(nodeDoc(node))],
    properties: node.children.map((seg) => ({
      name: seg,
      isReadonly: true,
      type: serviceInterfaceName([...node.path, seg]) ?? '',
    })),
    methods: node.methods.map((m) => ({
      name: m.serviceMethod,
      docs: [methodDoc(m, model)],
      parameters: [
        ...(m.params ? [{ name: 'params', type: m.paramsType }] : []),
        { name: 'ctx', type: 'RpcContext' },
      ],
      returnType: serviceReturnType(m),
    })),
  };
}

function hostInterface(name: string, surface: Surface): Statement {
  return {
    kind: StructureKind.Interface,
    isExported: true,
    name,
    docs: [jsDoc(`What the ${SERVER[surface]} dispatch table calls into.`)],
    properties: [{ name: 'services', isReadonly: true, type: ROOT[surface] }],
  };
}

export function emitHandlers(model: Model): string {
  // Sub-services first, then each surface's root, so a reader meets the leaves before the tree.
  const nodes = [...model.services].sort((a, b) => Number(a.path.length === 0) - Number(b.path.length === 0));
  const typeImports = model.methods.flatMap((m) => [
    `type ${m.resultType}`,
    ...(m.params ? [`type ${m.paramsType}`] : []),
    ...(m.kind === 'stream' ? [`type ${m.frameType}`] : []),
  ]);
  return printStatements([
    ...importFrom(
      '../src/rpc/adapters.ts',
      model.methods.some((m) => m.kind === 'stream') ? ['type StreamReply'] : [],
    ),
    ...importFrom('../src/rpc/context.ts', ['type RpcContext']),
    ...importFrom('./types.gen.ts', typeImports),
    ...nodes.map((n) => nodeInterface(n, model)),
    hostInterface('DaemonHost', 'daemon'),
    hostInterface('HelperHost', 'helper'),
  ]);
}
