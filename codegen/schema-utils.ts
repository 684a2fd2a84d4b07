// Small helpers over the JSON Schema subset that methods.json uses (see methods.schema.json).
import type { Schema } from './model.gen.ts';

/** The ajv options of the generated validators; codegen compiles with the same ones to fail early. */
export const AJV_OPTIONS = {
  strict: true,
  allErrors: true,
  coerceTypes: false,
  removeAdditional: false,
  useDefaults: false,
} as const;

export const DEFS_PREFIX = '#/$defs/';

/** The $id the shared $defs are registered under, once per ajv instance. */
export const DEFS_ID = 'banger:defs';

export function refName(ref: string): string {
  return ref.slice(DEFS_PREFIX.length);
}

/** Every subschema (including `schema` itself) with its path below the starting point. */
export function walk(schema: Schema, path: string, visit: (s: Schema, path: string) => void): void {
  visit(schema, path);
  for (const [key, sub] of Object.entries(schema.properties ?? {}))
    walk(sub, `${path}.properties.${key}`, visit);
  if (typeof schema.additionalProperties === 'object') {
    walk(schema.additionalProperties, `${path}.additionalProperties`, visit);
  }
  if (schema.items) walk(schema.items, `${path}.items`, visit);
  (schema.oneOf ?? []).forEach((sub, i) => walk(sub, `${path}.oneOf[${i}]`, visit));
}

/** Names of the $defs a schema needs, transitively, sorted. Unknown names are skipped. */
export function referencedDefs(schema: Schema, defs: Readonly<Record<string, Schema>>): string[] {
  const seen = new Set<string>();
  const visit = (s: Schema): void => {
    if (s.$ref === undefined) return;
    const name = refName(s.$ref);
    const def = defs[name];
    if (seen.has(name) || def === undefined) return;
    seen.add(name);
    walk(def, '', visit);
  };
  walk(schema, '', visit);
  return [...seen].sort();
}

export type SelfContainedSchema = Schema & { $defs?: Record<string, Schema> };

/** The schema with just the $defs it references, so ajv (or anyone) can use it on its own. */
export function selfContained(schema: Schema, defs: Readonly<Record<string, Schema>>): SelfContainedSchema {
  const names = referencedDefs(schema, defs);
  if (names.length === 0) return schema;
  const own: Record<string, Schema> = {};
  for (const name of names) own[name] = defs[name] as Schema;
  return { ...schema, $defs: own };
}

/**
 * The schema with every `#/$defs/X` pointing into the shared defs schema (DEFS_ID) instead, so the
 * $defs are emitted and compiled once rather than copied into every schema that uses them.
 */
export function sharedRefs<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v: unknown) => sharedRefs(v)) as T;
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] =
      k === '$ref' && typeof v === 'string' && v.startsWith(DEFS_PREFIX) ? `${DEFS_ID}${v}` : sharedRefs(v);
  }
  return out as T;
}
