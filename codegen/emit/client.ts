// client.gen.ts: the typed client SDK. One generic `call()` plus nested namespace stubs
// (`client.daemon.operations.list(params)`), on an injected Transport; a `<name>Stream` iterator
// for each stream method; a `wait()` for each `<x>.begin`/`<x>.status` pair; the error codes each
// method may reject with, as types. No node modules, no async context: the transport owns sockets
// and op-id forwarding (src/rpc/transport.ts for banger's processes, src/sdk.ts for everyone else).
import {
  StructureKind,
  VariableDeclarationKind,
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

const invoke = (m: MethodInfo, transport = 'transport'): string =>
  `invoke<${m.resultType}>(${transport}, ${literal(m.name)}, ${m.params ? 'params' : 'undefined'}, options)`;

/** The status method of an asynchronous operation begun by `<x>.begin`, when `node` is `<x>`. */
function statusOf(node: ApiNode): MethodInfo | undefined {
  const begin = node.children.get('begin');
  const status = node.children.get('status');
  if (!begin || !status || !isMethod(begin) || !isMethod(status)) return undefined;
  return status.result.properties?.operation !== undefined ? status : undefined;
}

const streamName = (seg: string): string => propertyKey(`${seg}Stream`);

function streamSignature(m: MethodInfo) {
  return {
    ...signature(m),
    returnType: `FrameStream<${m.frameType}, ${m.resultType}>`,
  };
}

function streamDoc(m: MethodInfo) {
  return jsDoc(
    `\`${m.name}\` as an async iterator of its frames; \`.result\` is the final result. Breaking out of the loop ends the call.`,
  );
}

function waitSignature(status: MethodInfo) {
  return {
    parameters: [
      { name: 'operationId', type: 'string' },
      { name: 'options', type: `WaitOptions<${status.resultType}>`, hasQuestionToken: true },
    ],
    returnType: `Promise<${status.resultType}>`,
  };
}

function waitDoc(status: MethodInfo) {
  return jsDoc(
    `Poll \`${status.name}\` until the operation ends: resolves with the last status when it succeeded, rejects with ErrorResponse (the operation's code and id) when it failed or was canceled.`,
  );
}

/** The Api interfaces of every namespace object below `node`, depth first. */
function apiInterfaces(node: ApiNode, model: Model): Statement[] {
  const out: Statement[] = [];
  const methods: OptionalKind<MethodSignatureStructure>[] = [];
  const properties: OptionalKind<PropertySignatureStructure>[] = [];
  for (const [seg, child] of node.children) {
    if (isMethod(child)) {
      methods.push({ name: propertyKey(seg), docs: [methodDoc(child, model)], ...signature(child) });
      if (child.frame)
        methods.push({ name: streamName(seg), docs: [streamDoc(child)], ...streamSignature(child) });
    } else {
      properties.push({ name: propertyKey(seg), isReadonly: true, type: apiInterfaceName(child.path) });
      out.push(...apiInterfaces(child, model));
    }
  }
  const status = statusOf(node);
  if (status) methods.push({ name: 'wait', docs: [waitDoc(status)], ...waitSignature(status) });
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

const streamInvoke = (m: MethodInfo): string =>
  `frameStream<${m.frameType}, ${m.resultType}>(options?.signal, (onFrame, signal) => transport.call(${literal(m.name)}, ${m.params ? 'params' : 'undefined'}, { ...options, onFrame, signal }))`;

const waitInvoke = (status: MethodInfo): string =>
  `waitForOperation((signal) => invoke<${status.resultType}>(transport, ${literal(status.name)}, { operation_id: operationId }, signal ? { signal } : undefined), options)`;

/** The runtime object behind an Api interface: arrows that call invoke(). */
function apiObject(node: ApiNode): WriterFunction {
  const entries: [string, string | WriterFunction][] = [];
  for (const [seg, child] of node.children) {
    if (!isMethod(child)) {
      entries.push([propertyKey(seg), apiObject(child)]);
      continue;
    }
    const params = child.params ? 'params' : '_params';
    entries.push([propertyKey(seg), `(${params}, options) => ${invoke(child)}`]);
    if (child.frame) entries.push([streamName(seg), `(${params}, options) => ${streamInvoke(child)}`]);
  }
  const status = statusOf(node);
  if (status) entries.push(['wait', `(operationId, options) => ${waitInvoke(status)}`]);
  return objectLiteral(entries);
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
        statements: [`return ${invoke(m, 'this.transport')};`],
      })),
    ],
  };
}

/**
 * The codes a call can reject with, as types callers narrow on: per method its declared codes,
 * the universal ones and, when the schema has it, `canceled` (the client raises it for an
 * aborted call whatever the method declares).
 */
function errorCodeTypes(model: Model): Statement[] {
  const universal = model.errors.filter((e) => e.universal).map((e) => `'${e.code}'`);
  const clientSide = model.errors.some((e) => e.code === 'canceled' && !e.universal) ? " | 'canceled'" : '';
  return [
    {
      kind: StructureKind.TypeAlias,
      isExported: true,
      name: 'UniversalErrorCode',
      docs: [jsDoc('Codes any method may return.')],
      type: universal.length > 0 ? universal.join(' | ') : 'never',
    },
    {
      kind: StructureKind.TypeAlias,
      isExported: true,
      name: 'ErrorCodeOf',
      docs: [
        jsDoc(
          `Every code a call of \`M\` may reject with: its declared codes, the universal ones${clientSide ? ' and `canceled` (an aborted call)' : ''}.`,
        ),
      ],
      typeParameters: [{ name: 'M', constraint: 'keyof MethodMap' }],
      type: `MethodMap[M]['errors'] | UniversalErrorCode${clientSide}`,
    },
    ...model.methods.map((m): Statement => ({
      kind: StructureKind.TypeAlias,
      isExported: true,
      name: `${m.typeBase}ErrorCode`,
      docs: [jsDoc(`The codes \`${m.name}\` may reject with.`)],
      type: `ErrorCodeOf<${literal(m.name)}>`,
    })),
  ];
}

/** The asynchronous operation kinds (`vm.create` for `vm.create.begin`/`.status`) and their status types. */
function operationKinds(model: Model): Statement[] {
  const statuses = model.methods.filter(
    (m) =>
      m.surface === 'daemon' &&
      m.segments.at(-1) === 'status' &&
      m.result.properties?.operation !== undefined &&
      model.methods.some((b) => b.name === m.name.replace(/\.status$/, '.begin')),
  );
  const kind = (m: MethodInfo): string => m.name.replace(/\.status$/, '');
  return [
    {
      kind: StructureKind.VariableStatement,
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: [
        jsDoc('Kinds of asynchronous operation: `<kind>.begin` starts one, `<kind>.status` reports it.'),
      ],
      declarations: [
        {
          name: 'OPERATION_KINDS',
          initializer: `${literal(statuses.map(kind))} as const`,
        },
      ],
    },
    {
      kind: StructureKind.Interface,
      isExported: true,
      name: 'OperationStatusMap',
      docs: [jsDoc('The status (`<kind>.status` result) of each kind of operation.')],
      properties: statuses.map((m) => ({ name: propertyKey(kind(m)), type: m.resultType })),
    },
  ];
}

export function emitClient(model: Model): string {
  const daemonRoot = tree(methodsOf(model, 'daemon'));
  const helperRoot = tree(methodsOf(model, 'helper'));
  const streams = model.methods.some((m) => m.frame !== undefined);
  const waits = model.methods.some((m) => m.segments.at(-1) === 'status' && m.result.properties?.operation);
  return printStatements([
    ...importFrom('../src/rpc/client-stream.ts', streams ? ['frameStream', 'type FrameStream'] : []),
    ...importFrom('../src/rpc/client-wait.ts', waits ? ['waitForOperation', 'type WaitOptions'] : []),
    ...importFrom('./methods.gen.ts', ['type DaemonMethodName', 'type HelperMethodName', 'type MethodMap']),
    ...importFrom(
      './types.gen.ts',
      model.methods.flatMap((m) => [
        `type ${m.resultType}`,
        ...(m.params ? [`type ${m.paramsType}`] : []),
        ...(m.frame ? [`type ${m.frameType}`] : []),
      ]),
    ),
    ...errorCodeTypes(model),
    ...operationKinds(model),
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
