// client.gen.ts: the typed client SDK. One generic `call()` plus nested namespace stubs
// (`client.daemon.operations.list(params)`), on an injected Transport. No node modules, no async
// context: the transport (src/rpc/transport.ts) owns sockets and op-id forwarding.
import {
  StructureKind,
  type ClassDeclarationStructure,
  type MethodSignatureStructure,
  type OptionalKind,
  type PropertySignatureStructure,
  type WriterFunction,
} from 'ts-morph';
import { methodsOf, type MethodInfo, type Model, type Surface } from '../model.ts';
import { apiInterfaceName, propertyKey } from '../names.ts';
import { methodDoc } from './handlers.ts';
import { importFrom, jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';

interface ApiNode {
  path: string[];
  children: Map<string, ApiNode | MethodInfo>;
}

const isMethod = (x: ApiNode | MethodInfo): x is MethodInfo => 'name' in x;

/** Group a surface's methods by name segments; bare names (ping) sit at the root. */
function tree(methods: MethodInfo[]): ApiNode {
  const root: ApiNode = { path: [], children: new Map() };
  for (const m of methods) {
    let node = root;
    for (const seg of m.segments.slice(0, -1)) {
      const next = node.children.get(seg);
      if (next && isMethod(next)) throw new Error(`client: ${m.name} clashes with ${next.name}`);
      const child = next ?? { path: [...node.path, seg], children: new Map() };
      node.children.set(seg, child);
      node = child;
    }
    node.children.set(m.segments.at(-1) as string, m);
  }
  return root;
}

/** Every stub is (params, options): methods without params take `undefined` first, like call(). */
function signature(m: MethodInfo, paramsName = 'params') {
  return {
    parameters: [
      m.params
        ? { name: 'params', type: m.paramsType, hasQuestionToken: m.paramsOptional }
        : { name: paramsName, type: 'undefined', hasQuestionToken: true },
      { name: 'options', type: 'CallOptionsLike', hasQuestionToken: true },
    ],
    returnType: `Promise<${m.resultType}>`,
  };
}

const invoke = (m: MethodInfo): string =>
  `invoke<${m.resultType}>(this.transport, ${literal(m.name)}, ${m.params ? 'params' : 'undefined'}, options)`;

/** The Api interfaces of every namespace object below `node`, depth first. */
function apiInterfaces(node: ApiNode, model: Model): Statement[] {
  const out: Statement[] = [];
  const methods: OptionalKind<MethodSignatureStructure>[] = [];
  const properties: OptionalKind<PropertySignatureStructure>[] = [];
  for (const [seg, child] of node.children) {
    if (isMethod(child))
      methods.push({ name: propertyKey(seg), docs: [methodDoc(child, model)], ...signature(child) });
    else {
      properties.push({ name: propertyKey(seg), isReadonly: true, type: apiInterfaceName(child.path) });
      out.push(...apiInterfaces(child, model));
    }
  }
  if (node.path.length > 0) {
    out.unshift({
      kind: StructureKind.Interface,
      isExported: true,
      name: apiInterfaceName(node.path),
      docs: [jsDoc(`Client stubs for \`${node.path.join('.')}.*\`.`)],
      properties,
      methods,
    });
  }
  return out;
}

/** The runtime object behind an Api interface: arrows that call invoke(). */
function apiObject(node: ApiNode): WriterFunction {
  return objectLiteral(
    [...node.children].map(([seg, child]): [string, string | WriterFunction] => [
      propertyKey(seg),
      isMethod(child)
        ? `(${child.params ? 'params' : '_params'}, options) => ${invoke(child)}`
        : apiObject(child),
    ]),
  );
}

function clientClass(name: string, doc: string, surface: Surface, model: Model): ClassDeclarationStructure {
  const root = tree(methodsOf(model, surface));
  const namespaces = [...root.children].filter((e): e is [string, ApiNode] => !isMethod(e[1]));
  const bare = [...root.children].flatMap(([, c]) => (isMethod(c) ? [c] : []));
  const nameType = surface === 'daemon' ? 'DaemonMethodName' : 'HelperMethodName';
  return {
    kind: StructureKind.Class,
    isExported: true,
    name,
    docs: [jsDoc(doc)],
    properties: [
      { name: 'transport', type: 'Transport', isReadonly: true },
      ...namespaces.map(([seg, node]) => ({
        name: propertyKey(seg),
        type: apiInterfaceName(node.path),
        isReadonly: true,
      })),
    ],
    ctors: [
      {
        parameters: [{ name: 'transport', type: 'Transport' }],
        statements: [
          'this.transport = transport;',
          ...namespaces.map(([seg, node]): WriterFunction => (w) => {
            w.write(`this.${seg} = `);
            apiObject(node)(w);
            w.write(';');
          }),
        ],
      },
    ],
    methods: [
      {
        name: 'call',
        docs: [jsDoc('Call any method by name, typed by MethodMap.')],
        typeParameters: [{ name: 'M', constraint: nameType }],
        parameters: [
          { name: 'method', type: 'M' },
          { name: 'args', type: 'CallArgs<M>', isRestParameter: true },
        ],
        returnType: "Promise<MethodMap[M]['result']>",
        statements: [
          'const [params, options] = args;',
          "return invoke<MethodMap[M]['result']>(this.transport, method, params, options);",
        ],
      },
      ...bare.map((m) => ({
        name: m.name,
        docs: [methodDoc(m, model)],
        ...signature(m, '_params'),
        statements: [`return ${invoke(m)};`],
      })),
    ],
  };
}

export function emitClient(model: Model): string {
  const daemonRoot = tree(methodsOf(model, 'daemon'));
  const helperRoot = tree(methodsOf(model, 'helper'));
  return printStatements([
    ...importFrom('./methods.gen.ts', ['type DaemonMethodName', 'type HelperMethodName', 'type MethodMap']),
    ...importFrom(
      './types.gen.ts',
      model.methods.flatMap((m) => [`type ${m.resultType}`, ...(m.params ? [`type ${m.paramsType}`] : [])]),
    ),
    {
      kind: StructureKind.Interface,
      isExported: true,
      name: 'CallOptionsLike',
      docs: [jsDoc("Per-call options handed to the transport (a subset of SocketTransport's CallOptions).")],
      properties: [
        { name: 'timeoutMs', type: 'number', hasQuestionToken: true, docs: ['Give up after this long.'] },
        {
          name: 'opId',
          type: 'string',
          hasQuestionToken: true,
          docs: ["Send this op id instead of the transport's."],
        },
        {
          name: 'signal',
          type: 'AbortSignal',
          hasQuestionToken: true,
          docs: ['Abandon the call when aborted.'],
        },
        {
          name: 'onFrame',
          type: '(frame: unknown) => void',
          hasQuestionToken: true,
          docs: ['Receives each frame of a streaming method.'],
        },
      ],
    },
    {
      kind: StructureKind.Interface,
      isExported: true,
      name: 'Transport',
      docs: [
        jsDoc(
          'Sends one request and resolves with its result, or rejects (with ErrorResponse for wire errors).',
        ),
      ],
      methods: [
        {
          name: 'call',
          parameters: [
            { name: 'method', type: 'string' },
            { name: 'params', type: 'unknown', hasQuestionToken: true },
            { name: 'options', type: 'CallOptionsLike', hasQuestionToken: true },
          ],
          returnType: 'Promise<unknown>',
        },
      ],
    },
    {
      kind: StructureKind.TypeAlias,
      isExported: true,
      name: 'CallArgs',
      docs: [
        jsDoc('The arguments after the method name: params (omitted for methods without any), then options.'),
      ],
      typeParameters: [{ name: 'M', constraint: 'keyof MethodMap' }],
      type: "MethodMap[M]['params'] extends undefined ? [params?: undefined, options?: CallOptionsLike] : [params: MethodMap[M]['params'], options?: CallOptionsLike]",
    },
    {
      kind: StructureKind.Function,
      name: 'invoke',
      typeParameters: ['R'],
      parameters: [
        { name: 'transport', type: 'Transport' },
        { name: 'method', type: 'string' },
        { name: 'params', type: 'unknown' },
        { name: 'options', type: 'CallOptionsLike | undefined' },
      ],
      returnType: 'Promise<R>',
      statements: ['return transport.call(method, params, options) as Promise<R>;'],
    },
    ...apiInterfaces(daemonRoot, model),
    ...apiInterfaces(helperRoot, model),
    clientClass(
      'BangerClient',
      'Typed client of the daemon (bangerd): `new BangerClient(new SocketTransport(path)).daemon.status()`.',
      'daemon',
      model,
    ),
    clientClass(
      'HelperClient',
      'Typed client of the root helper (bangerd-root): `new HelperClient(transport).priv.ping()`.',
      'helper',
      model,
    ),
  ]);
}
