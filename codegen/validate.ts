// Fail fast on a broken methods.json: first the meta-schema (shape, typos, unknown codes), then the
// cross-checks a JSON Schema cannot express (duplicates, dangling $refs, name clashes, examples
// that do not match their schemas). Every problem names the place it was found.
import { Ajv, type ErrorObject } from 'ajv';
import type { Method, MethodsFile, Schema } from './model.gen.ts';
import { methodNames, serviceInterfaceName } from './names.ts';
import { AJV_OPTIONS, DEFS_PREFIX, refName, selfContained, walk } from './schema-utils.ts';

export class SchemaError extends Error {
  readonly problems: string[];
  constructor(file: string, problems: string[]) {
    super(`${file} is invalid:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'SchemaError';
    this.problems = problems;
  }
}

/** Names the generated modules export; a $def with one of these names would collide in the barrel. */
const RESERVED_TYPE_NAMES = new Set([
  'BangerClient',
  'CallArgs',
  'CallOptionsLike',
  'DaemonHost',
  'DaemonMethodName',
  'ErrorCode',
  'HelperClient',
  'HelperHost',
  'HelperMethodName',
  'HelperServices',
  'MethodMap',
  'MethodName',
  'Services',
  'Transport',
]);
/** Members of the generated client classes that a namespace or bare method must not shadow. */
// 'operations' is the SDK's waiter (src/sdk.ts), which extends the generated client.
const RESERVED_CLIENT_MEMBERS = new Set(['call', 'transport', 'constructor', 'operations']);

/** Validate a parsed methods.json; returns the problems found (empty when it is fine). */
export function checkMethodsFile(doc: unknown, metaSchema: object): string[] {
  const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false, strictTypes: false });
  const validate = ajv.compile(metaSchema);
  if (!validate(doc)) return formatAjvErrors(validate.errors ?? [], doc);
  return crossCheck(doc as MethodsFile);
}

function crossCheck(doc: MethodsFile): string[] {
  const problems: string[] = [];
  const defs = doc.$defs;
  const universal = new Set(Object.entries(doc.errors).flatMap(([code, e]) => (e.universal ? [code] : [])));

  for (const [name, def] of Object.entries(defs)) {
    if (def.title !== name) problems.push(`$defs.${name}: title must be "${name}" (it names the type)`);
    if (RESERVED_TYPE_NAMES.has(name) || /(Service|Api|Params|Result)$/.test(name)) {
      problems.push(`$defs.${name}: the name is reserved for generated code; pick another`);
    }
    problems.push(...schemaProblems(def, `$defs.${name}`, defs, true));
  }

  const firstIndex = new Map<string, number>();
  const typeNames = new Map<string, string>(Object.keys(defs).map((n) => [n, `$defs.${n}`]));
  const namespaceSurface = new Map<string, { surface: string; at: string }>();
  // Service interface name → the path it serves: vm_create.x and vm.create.x would share one.
  const servicePaths = new Map<string, string>();
  const names = new Set(doc.methods.map((m) => m.name));

  doc.methods.forEach((m, i) => {
    const at = `methods[${i}] "${m.name}"`;
    const n = methodNames(m.name);
    const seen = firstIndex.get(m.name);
    if (seen !== undefined) problems.push(`${at}: duplicate name (first defined at methods[${seen}])`);
    else firstIndex.set(m.name, i);

    if (m.params) problems.push(...schemaProblems(m.params, `${at}.params`, defs));
    problems.push(...schemaProblems(m.result, `${at}.result`, defs));
    if (m.frame) problems.push(...schemaProblems(m.frame, `${at}.frame`, defs));
    problems.push(...dispatchProblems(m, at));

    for (const code of m.errors) {
      if (universal.has(code)) problems.push(`${at}.errors: "${code}" is universal; do not list it`);
    }
    for (const other of names) {
      if (other.startsWith(`${m.name}.`)) {
        problems.push(
          `${at}: "${m.name}" is both a method and a prefix of "${other}" (client stubs would clash)`,
        );
      }
    }
    const top = n.segments[0] as string;
    if (RESERVED_CLIENT_MEMBERS.has(top))
      problems.push(`${at}: "${top}" is reserved by the generated client`);
    if (n.namespace !== undefined) {
      const prev = namespaceSurface.get(n.namespace);
      if (prev && prev.surface !== m.surface) {
        problems.push(
          `${at}: namespace "${n.namespace}" is served by both ${prev.surface} (${prev.at}) and ${m.surface}`,
        );
      } else if (!prev) namespaceSurface.set(n.namespace, { surface: m.surface, at });
    }
    n.servicePath.forEach((_, k) => {
      const path = n.servicePath.slice(0, k + 1);
      const iface = serviceInterfaceName(path) as string;
      const owner = servicePaths.get(iface);
      if (owner !== undefined && owner !== path.join('.'))
        problems.push(
          `${at}: service interface ${iface} would serve both ${owner}.* and ${path.join('.')}.*`,
        );
      servicePaths.set(iface, path.join('.'));
    });
    for (const t of [n.resultType, ...(m.params ? [n.paramsType] : []), ...(m.frame ? [n.frameType] : [])]) {
      const owner = typeNames.get(t);
      if (owner !== undefined && owner !== at) problems.push(`${at}: type name ${t} collides with ${owner}`);
      typeNames.set(t, at);
    }
  });
  if (problems.length > 0) return problems;
  return exampleProblems(doc);
}

function dispatchProblems(m: Method, at: string): string[] {
  const problems: string[] = [];
  if (m.dispatch === 'noParam' && m.params)
    problems.push(`${at}: dispatch "noParam" but params are declared`);
  if (m.dispatch === 'param' && !m.params) problems.push(`${at}: dispatch "param" needs a params schema`);
  // The generated stream adapter validates params like paramHandler; no stream takes none yet.
  if (m.kind === 'stream' && m.dispatch !== 'param')
    problems.push(`${at}: kind "stream" needs dispatch "param"`);
  // The frame schema types the SDK's stream iterator, so a stream must say what it yields.
  if (m.kind === 'stream' && !m.frame) problems.push(`${at}: kind "stream" needs a frame schema`);
  if (m.kind !== 'stream' && m.frame) problems.push(`${at}: a frame schema is only for kind "stream"`);
  m.examples.forEach((ex, j) => {
    if (!m.params && ex.params !== undefined)
      problems.push(`${at}.examples[${j}]: params given, but the method takes none`);
    if (m.params && ex.params === undefined)
      problems.push(`${at}.examples[${j}]: params missing (use {} for none)`);
  });
  return problems;
}

/** Dangling $refs, `required` names that are not properties, titles outside $defs. */
function schemaProblems(schema: Schema, at: string, defs: Record<string, Schema>, isDef = false): string[] {
  const problems: string[] = [];
  walk(schema, at, (s, path) => {
    if (s.title !== undefined && !(isDef && path === at)) {
      problems.push(`${path}.title: only $defs have a title (it names a type); use description here`);
    }
    if (s.$ref !== undefined && (!s.$ref.startsWith(DEFS_PREFIX) || !(refName(s.$ref) in defs))) {
      problems.push(`${path}.$ref: no such type "${s.$ref}"`);
    }
    for (const r of s.required ?? []) {
      if (!s.properties || !(r in s.properties))
        problems.push(`${path}.required: "${r}" is not in properties`);
    }
  });
  return problems;
}

/** Compile every schema with the runtime's ajv options and check every example against them. */
function exampleProblems(doc: MethodsFile): string[] {
  const problems: string[] = [];
  const ajv = new Ajv(AJV_OPTIONS);
  doc.methods.forEach((m, i) => {
    const at = `methods[${i}] "${m.name}"`;
    const compile = (schema: Schema, where: 'params' | 'result'): ((v: unknown) => string | null) | null => {
      try {
        const v = ajv.compile(selfContained(schema, doc.$defs));
        return (x) =>
          v(x)
            ? null
            : (v.errors ?? [])
                .map((e) => `${where}${e.instancePath.replaceAll('/', '.')} ${e.message ?? ''}`)
                .join('; ');
      } catch (err) {
        problems.push(`${at}.${where}: ajv refuses the schema: ${(err as Error).message}`);
        return null;
      }
    };
    const params = m.params ? compile(m.params, 'params') : null;
    const result = compile(m.result, 'result');
    m.examples.forEach((ex, j) => {
      const p = params && ex.params !== undefined ? params(ex.params) : null;
      if (p) problems.push(`${at}.examples[${j}]: ${p}`);
      const r = result ? result(ex.result) : null;
      if (r) problems.push(`${at}.examples[${j}]: ${r}`);
    });
  });
  return problems;
}

export function formatAjvErrors(errors: ErrorObject[], doc: unknown): string[] {
  const out = new Set<string>();
  for (const e of errors) {
    if (e.keyword === 'if' || e.keyword === 'anyOf') continue;
    const where = place(e.instancePath, doc);
    const p = e.params as Record<string, unknown>;
    let what: string;
    if (e.keyword === 'additionalProperties') what = `unknown property "${String(p.additionalProperty)}"`;
    else if (e.keyword === 'required') what = `missing property "${String(p.missingProperty)}"`;
    else if (e.keyword === 'enum') what = `must be one of: ${(p.allowedValues as unknown[]).join(', ')}`;
    else if (e.keyword === 'const') what = `must be ${JSON.stringify(p.allowedValue)}`;
    else if (e.keyword === 'propertyNames') what = `bad name "${String(p.propertyName)}"`;
    else what = e.message ?? `fails ${e.keyword}`;
    out.add(`${where}: ${what}`);
  }
  return [...out];
}

/** '/methods/3/params/properties/limit' → 'methods[3] "daemon.operations.list".params.properties.limit'. */
function place(pointer: string, doc: unknown): string {
  const parts = pointer
    .split('/')
    .slice(1)
    .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
  if (parts.length === 0) return '(top level)';
  let out = '';
  let node: unknown = doc;
  for (const part of parts) {
    const isIndex = Array.isArray(node) && /^\d+$/.test(part);
    out += isIndex ? `[${part}]` : `${out === '' ? '' : '.'}${part}`;
    node = (node as Record<string, unknown> | undefined)?.[part];
    if (isIndex && out.startsWith('methods[') && !out.includes('"')) {
      const name = (node as { name?: unknown } | undefined)?.name;
      if (typeof name === 'string') out += ` "${name}"`;
    }
  }
  return out;
}
