// tests/methods.gen.test.ts: the documented-method tests, grown from the schema. Only the
// EXAMPLES table is data; the checks are the same for every method.
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import type { Model } from '../model.ts';
import { propertyKey } from '../names.ts';
import { importFrom, literal, objectLiteral, printStatements } from './ts.ts';

const BODY = `
const OP_ID = 'op-0123456789ab';
const ctx = (method: string): RpcContext => ({
  opId: OP_ID,
  method,
  startedAt: 0,
  signal: new AbortController().signal,
  log: pino({ enabled: false }),
});
type AnyHost = DaemonHost & HelperHost;

/** A host whose every service, at any depth (services.vm.create.begin), answers with \`reply\`. */
function fakeHost(reply: unknown): AnyHost {
  const node: unknown = new Proxy(function fake() {}, {
    get: (_t, prop) => (prop === 'then' ? undefined : node),
    apply: async () => reply,
  });
  return { services: node } as unknown as AnyHost;
}

/** The error code a handler call ends with, or 'ok'. */
async function outcome(p: Promise<HandlerResponse>): Promise<string> {
  try {
    const r = await p;
    return 'ok' in r && r.ok === false ? r.error.code : 'ok';
  } catch (err) {
    return err instanceof ErrorResponse ? err.code : \`threw \${String(err)}\`;
  }
}

const keys = (o: object): string[] => Object.keys(o).sort();
const ofSurface = (s: 'daemon' | 'helper'): string[] =>
  keys(METHODS).filter((n) => METHODS[n as MethodName].surface === s);
const docsDir = new URL('../docs/', import.meta.url);
const docPages = readdirSync(new URL('methods/', docsDir))
  .map((f) => f.replace(/\\.html$/, ''))
  .sort();
const indexLinks = [
  ...new Set(
    [...readFileSync(new URL('index.html', docsDir), 'utf8').matchAll(/href="methods\\/([^"]+)\\.html"/g)].map(
      (m) => m[1] as string,
    ),
  ),
].sort();

describe('dispatch tables', () => {
  it('rpcHandlers matches documented methods', () => {
    expect(keys(rpcHandlers)).toEqual(ofSurface('daemon'));
    expect(keys(rpcHandlers)).toEqual([...DAEMON_METHOD_NAMES]);
    for (const name of keys(rpcHandlers)) {
      expect(docPages).toContain(name);
      expect(indexLinks).toContain(name);
    }
  });

  it('rpcHandlers all non-null', () => {
    for (const [name, handler] of Object.entries(rpcHandlers)) expect(typeof handler, name).toBe('function');
  });

  it('helperHandlers matches documented methods', () => {
    expect(keys(helperHandlers)).toEqual(ofSurface('helper'));
    expect(keys(helperHandlers)).toEqual([...HELPER_METHOD_NAMES]);
    for (const name of keys(helperHandlers)) {
      expect(docPages).toContain(name);
      expect(indexLinks).toContain(name);
    }
  });

  it('helperHandlers all non-null', () => {
    for (const [name, handler] of Object.entries(helperHandlers)) expect(typeof handler, name).toBe('function');
  });

  it('docs: one page per method, all linked from the index, and no extra pages', () => {
    expect(docPages).toEqual(keys(METHODS));
    expect(indexLinks).toEqual(keys(METHODS));
  });

  it('SocketTransport is a client Transport', () => {
    const transport: Transport = new SocketTransport('/nonexistent/bangerd.sock');
    expect(new BangerClient(transport).transport).toBe(transport);
    expect(new HelperClient(transport).transport).toBe(transport);
  });
});

describe.each(keys(METHODS) as MethodName[])('%s', (method) => {
  const info = METHODS[method];
  const examples = EXAMPLES[method];
  const handler = (
    info.surface === 'daemon' ? rpcHandlers[method as DaemonMethodName] : helperHandlers[method as HelperMethodName]
  ) as Handler<AnyHost>;
  const validateParams = (paramValidators as Partial<Record<MethodName, ValidateFunction>>)[method];
  const validateResult = (resultValidators as Record<MethodName, ValidateFunction>)[method];
  const first = examples[0] as Example;
  const request = (params: unknown): RequestEnvelope => ({ version: PROTOCOL_VERSION, method, params });

  it('examples pass the params and result validators', () => {
    for (const ex of examples) {
      if (ex.params !== undefined) {
        expect(validateParams, 'params validator').toBeTypeOf('function');
        expect(validateParams?.(ex.params), JSON.stringify(validateParams?.errors)).toBe(true);
      }
      expect(validateResult(ex.result), JSON.stringify(validateResult.errors)).toBe(true);
    }
  });

  it('an example call through the handler answers with the example result', async () => {
    for (const ex of examples) {
      // A stream method's service returns its result (and no frames: a plain response).
      const reply = info.kind === 'stream' ? { result: ex.result } : ex.result;
      const response = await handler(ctx(method), fakeHost(reply), request(ex.params));
      expect(response).toEqual({ ok: true, result: ex.result, op_id: OP_ID });
    }
  });

  it('the client stub sends the method name and params', async () => {
    const calls: unknown[][] = [];
    const transport: Transport = { call: async (...args) => (calls.push(args), first.result) };
    const client: unknown = info.surface === 'daemon' ? new BangerClient(transport) : new HelperClient(transport);
    const path = method.split('.');
    const owner = path.slice(0, -1).reduce((o, seg) => (o as Record<string, unknown>)[seg], client);
    const stub = (owner as Record<string, (...a: unknown[]) => Promise<unknown>>)[path.at(-1) as string];
    const args = first.params !== undefined ? [first.params] : [];
    await expect(stub?.apply(owner, args)).resolves.toEqual(first.result);
    expect(calls).toEqual([[method, first.params, undefined]]);
  });

  it('an unknown param is refused with bad_request', async () => {
    const params = { ...(first.params ?? {}), zz_not_a_param: 1 };
    expect(await outcome(handler(ctx(method), fakeHost(first.result), request(params)))).toBe('bad_request');
  });

  const required = (PARAMS_SCHEMAS as Partial<Record<MethodName, { required?: readonly string[] }>>)[method]?.required;
  if (required && required.length > 0) {
    it('a missing required param is refused with bad_request', async () => {
      const params: Record<string, unknown> = { ...(first.params ?? {}) };
      delete params[required[0] as string];
      expect(await outcome(handler(ctx(method), fakeHost(first.result), request(params)))).toBe('bad_request');
    });
  }
});
`;

export function emitTests(model: Model): string {
  return printStatements([
    ...importFrom('node:fs', ['readdirSync', 'readFileSync']),
    ...importFrom('ajv', ['type ValidateFunction']),
    { kind: StructureKind.ImportDeclaration, moduleSpecifier: 'pino', defaultImport: 'pino' },
    ...importFrom('vitest', ['describe', 'expect', 'it']),
    ...importFrom('../../src/rpc/adapters.ts', ['type Handler']),
    ...importFrom('../../src/rpc/context.ts', ['type RpcContext']),
    ...importFrom('../../src/rpc/envelope.ts', ['type HandlerResponse', 'type RequestEnvelope']),
    ...importFrom('../../src/rpc/errors.ts', ['ErrorResponse']),
    ...importFrom('../../src/rpc/transport.ts', ['SocketTransport']),
    ...importFrom('../client.gen.ts', ['BangerClient', 'HelperClient', 'type Transport']),
    ...importFrom('../dispatch.gen.ts', ['helperHandlers', 'rpcHandlers']),
    ...importFrom('../handlers.gen.ts', ['type DaemonHost', 'type HelperHost']),
    ...importFrom('../methods.gen.ts', [
      'DAEMON_METHOD_NAMES',
      'HELPER_METHOD_NAMES',
      'METHODS',
      'PROTOCOL_VERSION',
      'type DaemonMethodName',
      'type HelperMethodName',
      'type MethodName',
    ]),
    ...importFrom('../schemas.gen.ts', ['PARAMS_SCHEMAS']),
    ...importFrom('../validators.gen.ts', ['paramValidators', 'resultValidators']),
    {
      kind: StructureKind.Interface,
      name: 'Example',
      properties: [
        { name: 'params', type: 'Record<string, unknown>', hasQuestionToken: true },
        { name: 'result', type: 'unknown' },
      ],
    },
    {
      kind: StructureKind.VariableStatement,
      declarationKind: VariableDeclarationKind.Const,
      docs: ['The examples of every method, from schema/methods.json.'],
      declarations: [
        {
          name: 'EXAMPLES',
          type: '{ readonly [M in MethodName]: readonly Example[] }',
          initializer: objectLiteral(model.methods.map((m) => [propertyKey(m.name), literal(m.examples)])),
        },
      ],
    },
    BODY,
  ]);
}
