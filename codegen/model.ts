// Load methods.json, validate it, and normalize it into the model every emitter reads: methods
// sorted by name, $defs and error codes sorted, identifiers precomputed.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ErrorCodeName, Example, Method, MethodsFile, Schema } from './model.gen.ts';
import { methodNames, type MethodNames } from './names.ts';
import { checkMethodsFile, SchemaError } from './validate.ts';

export const METHODS_FILE = 'schema/methods.json';
export const META_SCHEMA_FILE = 'schema/methods.schema.json';

export type Surface = Method['surface'];

export interface ErrorInfo {
  code: ErrorCodeName;
  exit: number;
  description: string;
  universal: boolean;
}

export interface MethodInfo extends MethodNames {
  name: string;
  surface: Surface;
  summary: string;
  description: string;
  dispatch: Method['dispatch'];
  kind: Method['kind'];
  since: string;
  deprecated: string | undefined;
  params: Schema | undefined;
  /** True when params exist but none is required, so clients may omit them. */
  paramsOptional: boolean;
  result: Schema;
  /** The schema of each frame (kind stream only). */
  frame: Schema | undefined;
  /** Declared (non-universal) error codes, sorted. */
  errors: ErrorCodeName[];
  examples: Example[];
}

/**
 * One service interface: the methods and sub-services at one path under a surface's services
 * (path [] is the surface's Services itself, holding the namespaces and any bare method).
 */
export interface ServiceNode {
  surface: Surface;
  path: string[];
  /** The methods whose name is path + one segment. */
  methods: MethodInfo[];
  /** The next segments that lead to sub-services, sorted. */
  children: string[];
}

export interface Model {
  protocolVersion: number;
  errors: ErrorInfo[];
  defs: Record<string, Schema>;
  methods: MethodInfo[];
  /** Every service interface, both surfaces, sorted by surface then path. */
  services: ServiceNode[];
}

export function readJson(path: string): unknown {
  const text = readFileSync(path, 'utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new SchemaError(path, [`not valid JSON: ${(err as Error).message}`]);
  }
}

/** Read and validate `<root>/schema/methods.json`; throws SchemaError naming every problem. */
export function loadModel(root: string): { model: Model; file: MethodsFile; metaSchema: object } {
  const metaSchema = readJson(join(root, META_SCHEMA_FILE)) as object;
  const doc = readJson(join(root, METHODS_FILE));
  const problems = checkMethodsFile(doc, metaSchema);
  if (problems.length > 0) throw new SchemaError(METHODS_FILE, problems);
  const file = doc as MethodsFile;
  return { model: normalize(file), file, metaSchema };
}

const byKey =
  <T>(key: (x: T) => string) =>
  (a: T, b: T) =>
    key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;

export function normalize(file: MethodsFile): Model {
  const errors: ErrorInfo[] = Object.entries(file.errors)
    .map(([code, e]) => ({
      code: code as ErrorCodeName,
      exit: e.exit,
      description: e.description,
      universal: e.universal === true,
    }))
    .sort(byKey((e) => e.code));
  const defs: Record<string, Schema> = {};
  for (const name of Object.keys(file.$defs).sort()) defs[name] = file.$defs[name] as Schema;
  const methods: MethodInfo[] = file.methods
    .map((m) => ({
      ...methodNames(m.name),
      name: m.name,
      surface: m.surface,
      summary: m.summary,
      description: m.description,
      dispatch: m.dispatch,
      kind: m.kind,
      since: m.since,
      deprecated: m.deprecated,
      params: m.params,
      paramsOptional: m.params !== undefined && (m.params.required ?? []).length === 0,
      result: m.result,
      frame: m.frame,
      errors: [...m.errors].sort(),
      examples: m.examples,
    }))
    .sort(byKey((m) => m.name));
  return { protocolVersion: file.protocolVersion, errors, defs, methods, services: serviceTree(methods) };
}

/** The service interfaces the methods' names imply: 'vm.create.begin' → services.vm.create.begin. */
function serviceTree(methods: readonly MethodInfo[]): ServiceNode[] {
  const nodes = new Map<string, ServiceNode>();
  const node = (surface: Surface, path: string[]): ServiceNode => {
    const key = `${surface}:${path.join('.')}`;
    let n = nodes.get(key);
    if (!n) {
      n = { surface, path, methods: [], children: [] };
      nodes.set(key, n);
      if (path.length > 0) {
        const parent = node(surface, path.slice(0, -1));
        parent.children = [...parent.children, path.at(-1) as string].sort();
      }
    }
    return n;
  };
  for (const m of methods) node(m.surface, m.servicePath).methods.push(m);
  return [...nodes.values()].sort(byKey((n) => `${n.surface}:${n.path.join('.')}`));
}

export function methodsOf(model: Model, surface: Surface): MethodInfo[] {
  return model.methods.filter((m) => m.surface === surface);
}
