// dispatch.<surface>.gen.ts: one surface's dispatch table, one entry per method, built from the
// generic adapters in src/rpc/adapters.ts, and the error codes each method declares (checked by
// src/rpc/error-check.ts). The mapped types make both keysets exhaustive; the generated tests check
// them at runtime too. Per surface, so bangerd-root loads only the priv.* validators.
// dispatch.gen.ts re-exports both for tests.
import { StructureKind, VariableDeclarationKind, type WriterFunction } from 'ts-morph';
import { methodsOf, type MethodInfo, type Model, type Surface } from '../model.ts';
import { propertyKey } from '../names.ts';
import { importFrom, jsDoc, literal, objectLiteral, printStatements, type Statement } from './ts.ts';
import { validatorNames } from './validators.ts';

interface SurfaceNames {
  module: string;
  handlers: string;
  declared: string;
  host: string;
  methodName: string;
  title: string;
}

function surfaceNames(surface: Surface): SurfaceNames {
  return surface === 'daemon'
    ? {
        module: 'dispatch.daemon.gen.ts',
        handlers: 'rpcHandlers',
        declared: 'rpcDeclaredErrors',
        host: 'DaemonHost',
        methodName: 'DaemonMethodName',
        title: "The daemon's",
      }
    : {
        module: 'dispatch.helper.gen.ts',
        handlers: 'helperHandlers',
        declared: 'helperDeclaredErrors',
        host: 'HelperHost',
        methodName: 'HelperMethodName',
        title: "The root helper's",
      };
}

/** The generic adapter of a method: a stream's frames are framed by streamHandler. */
function adapterOf(m: MethodInfo): 'streamHandler' | 'paramHandler' | 'noParamHandler' {
  if (m.kind === 'stream') return 'streamHandler';
  return m.dispatch === 'param' ? 'paramHandler' : 'noParamHandler';
}

/** The entry of a method: its name, read as a path under the host's services, is its callee. */
function entry(m: MethodInfo, validators: string): string {
  const service = ['h.services', ...m.servicePath, m.serviceMethod].join('.');
  const adapter = adapterOf(m);
  if (adapter === 'noParamHandler') return `noParamHandler((h, ctx) => ${service}(ctx))`;
  return `${adapter}(${validators}[${literal(m.name)}], (h, p, ctx) => ${service}(p, ctx))`;
}

function exportedConst(name: string, doc: string, type: string, initializer: WriterFunction): Statement {
  return {
    kind: StructureKind.VariableStatement,
    isExported: true,
    declarationKind: VariableDeclarationKind.Const,
    docs: [jsDoc(doc)],
    declarations: [{ name, type, initializer }],
  };
}

export function emitSurfaceDispatch(model: Model, surface: Surface): string {
  const methods = methodsOf(model, surface);
  const n = surfaceNames(surface);
  const v = validatorNames(surface);
  const adapters = [...new Set(methods.map(adapterOf))];
  return printStatements([
    ...importFrom('../src/rpc/adapters.ts', ['type Handler', ...adapters]),
    ...importFrom('./errors.gen.ts', ['type ErrorCode']),
    ...importFrom('./handlers.gen.ts', [`type ${n.host}`]),
    ...importFrom('./methods.gen.ts', [`type ${n.methodName}`]),
    ...importFrom(`./${v.module}`, methods.some((m) => m.params) ? [v.params] : []),
    exportedConst(
      n.handlers,
      `${n.title} dispatch table: method name → handler(ctx, host, req).`,
      `{ readonly [M in ${n.methodName}]: Handler<${n.host}> }`,
      objectLiteral(methods.map((m) => [propertyKey(m.name), entry(m, v.params)])),
    ),
    exportedConst(
      n.declared,
      `${n.title} declared error codes per method, beyond the universal ones (UNIVERSAL_ERROR_CODES): a handler that returns any other code breaks the contract (src/rpc/error-check.ts).`,
      `{ readonly [M in ${n.methodName}]: readonly ErrorCode[] }`,
      objectLiteral(methods.map((m) => [propertyKey(m.name), literal(m.errors)])),
    ),
  ]);
}

/** dispatch.gen.ts: both surfaces' tables, for tests and tools (the servers import their own). */
export function emitDispatch(): string {
  const surfaces: Surface[] = ['daemon', 'helper'];
  return printStatements(
    surfaces.map((s) => {
      const n = surfaceNames(s);
      return {
        kind: StructureKind.ExportDeclaration,
        moduleSpecifier: `./${n.module}`,
        namedExports: [n.declared, n.handlers],
      };
    }),
  );
}
