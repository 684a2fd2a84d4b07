// tests/routing.gen.test.ts: every method driven through the real dispatch tables into a recording
// fake of every service (at any depth: services.vm.create.begin). The expected target is derived at test time from the
// wire name alone ('vm.create.begin' → a callee whose path, without separators, is vmcreatebegin),
// not from the generator's naming, so a table that calls the wrong service method fails even
// though the generator and the compiler agree with it. Only PARAMS is data from the schema.
import { StructureKind, VariableDeclarationKind } from 'ts-morph';
import type { Model, MethodInfo } from '../model.ts';
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

interface Call {
  path: string[];
  args: unknown[];
}

/** Containers on the host that hold callees; what follows them names the callee. */
const CONTAINERS = new Set(['services']);
const squash = (parts: readonly string[]): string => parts.join('').replace(/[._]/g, '').toLowerCase();
const calleeKey = (path: readonly string[]): string => {
  let i = 0;
  while (i < path.length - 1 && CONTAINERS.has(path[i] as string)) i++;
  return squash(path.slice(i));
};

/**
 * A host in which every property path is a recording function: \`host.services.vm.start(p, ctx)\`
 * records ['services', 'vm', 'start'] with its arguments and answers with a marker of that path
 * (also under \`result\`, so the stream adapter, which answers with its reply's result, passes it on).
 */
function recordingHost(calls: Call[]): unknown {
  const node = (path: string[]): unknown =>
    new Proxy(function fake() {}, {
      get: (_t, prop) => (typeof prop === 'symbol' || prop === 'then' ? undefined : node([...path, prop])),
      apply: (_t, _this, args: unknown[]) => {
        calls.push({ path, args });
        return Promise.resolve({ routed: path.join('.'), result: { routed: path.join('.') } });
      },
    });
  return node([]);
}

const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Everything wrong with how \`table\` routes \`method\` (empty when it reaches the callee of the same name). */
async function routeProblems(table: Readonly<Record<string, Handler<never>>>, method: MethodName): Promise<string[]> {
  const calls: Call[] = [];
  const c = ctx(method);
  const params = PARAMS[method];
  const req: RequestEnvelope = { version: PROTOCOL_VERSION, method, ...(params ? { params } : {}) };
  let response: unknown;
  try {
    response = await dispatchTable(table, recordingHost(calls) as never, c, req);
  } catch (err) {
    return [\`\${method}: dispatch threw \${String(err)}\`];
  }
  if (calls.length !== 1) return [\`\${method}: \${calls.length} callees were called (\${calls.map((x) => x.path.join('.')).join(', ')})\`];
  const call = calls[0] as Call;
  const problems: string[] = [];
  if (calleeKey(call.path) !== squash([method]))
    problems.push(\`\${method}: routed to \${call.path.join('.')}\`);
  if (!call.args.includes(c)) problems.push(\`\${method}: the call's context was not passed on\`);
  if (params) {
    const got = call.args.some(
      (a) => sameJson(a, params) || (typeof a === 'object' && a !== null && sameJson((a as RequestEnvelope).params, params)),
    );
    if (!got) problems.push(\`\${method}: the callee did not receive the decoded params \${JSON.stringify(params)}\`);
  }
  if (!JSON.stringify(response).includes(JSON.stringify({ routed: call.path.join('.') })))
    problems.push(\`\${method}: the response is not what the callee returned\`);
  return problems;
}

const tableOf = (method: MethodName): Readonly<Record<string, Handler<never>>> =>
  (METHODS[method].surface === 'daemon' ? rpcHandlers : helperHandlers) as unknown as Readonly<
    Record<string, Handler<never>>
  >;

describe('routing: every method reaches the callee of its own name with its params', () => {
  it.each(Object.keys(METHODS) as MethodName[])('%s', async (method) => {
    expect(await routeProblems(tableOf(method), method)).toEqual([]);
  });

  // The mutation this test exists for, tried on a copy of the tree: in the daemon's dispatch table
  // the 'vm.start' entry changed to \`(h, p, ctx) => h.services.vm.stop(p, ctx)\`. tsc accepted it
  // and all 240 tests of methods.gen.test.ts still passed; this file failed, on one test:
  // "vm.start: routed to services.vm.stop". Again with nested services: 'vm.create.begin' changed
  // to \`h.services.vm.create.plan(p, ctx)\` (the params are assignable); tsc accepted it and
  // methods.gen.test.ts passed; this file failed on "vm.create.begin: routed to
  // services.vm.create.plan". The check below keeps that proof running: it swaps two param
  // methods' entries of the real table and expects both to be reported.
  it('catches a mis-wired entry (two handlers swapped)', async () => {
    const [a, b] = (Object.keys(METHODS) as MethodName[]).filter(
      (m) => METHODS[m].surface === 'daemon' && METHODS[m].dispatch === 'param' && PARAMS[m] !== undefined,
    );
    expect(a && b).toBeTruthy();
    const real = tableOf(a as MethodName);
    const mutant = { ...real, [a as string]: real[b as string], [b as string]: real[a as string] } as Readonly<
      Record<string, Handler<never>>
    >;
    expect(await routeProblems(mutant, a as MethodName)).not.toEqual([]);
    expect(await routeProblems(mutant, b as MethodName)).not.toEqual([]);
  });
});
`;

/** The params sent to a method: its example with the most fields (absent when it takes none). */
function paramsOf(m: MethodInfo): Record<string, unknown> | undefined {
  if (!m.params) return undefined;
  const all = m.examples.map((e) => e.params ?? {});
  return all.reduce((best, p) => (Object.keys(p).length > Object.keys(best).length ? p : best), {});
}

export function emitRoutingTest(model: Model): string {
  return printStatements([
    { kind: StructureKind.ImportDeclaration, moduleSpecifier: 'pino', defaultImport: 'pino' },
    ...importFrom('vitest', ['describe', 'expect', 'it']),
    ...importFrom('../../src/rpc/adapters.ts', ['type Handler']),
    ...importFrom('../../src/rpc/context.ts', ['type RpcContext']),
    ...importFrom('../../src/rpc/dispatch.ts', ['dispatchTable']),
    ...importFrom('../../src/rpc/envelope.ts', ['type RequestEnvelope']),
    ...importFrom('../dispatch.gen.ts', ['helperHandlers', 'rpcHandlers']),
    ...importFrom('../methods.gen.ts', ['METHODS', 'PROTOCOL_VERSION', 'type MethodName']),
    {
      kind: StructureKind.VariableStatement,
      declarationKind: VariableDeclarationKind.Const,
      docs: ["The params each method is called with: its fullest example's, from schema/methods.json."],
      declarations: [
        {
          name: 'PARAMS',
          type: '{ readonly [M in MethodName]: Record<string, unknown> | undefined }',
          initializer: objectLiteral(
            model.methods.map((m) => [
              propertyKey(m.name),
              literal(paramsOf(m) ?? null).replace(/^null$/, 'undefined'),
            ]),
          ),
        },
      ],
    },
    BODY,
  ]);
}
