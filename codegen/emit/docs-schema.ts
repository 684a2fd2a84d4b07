// Render the JSON Schema subset as HTML: a type label per schema, and flattened field tables.
import type { Schema } from '../model.gen.ts';
import { refName } from '../schema-utils.ts';

/** Escape text for element content (attribute values here are method and type names, which need none). */
export function esc(s: string): string {
  return s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

/** Escaped prose with `backticks` as <code>. */
export function prose(s: string): string {
  return esc(s).replace(/`([^`]+)`/g, '<code>$1</code>');
}

const json = (v: unknown): string => `<code>${esc(JSON.stringify(v))}</code>`;

function constraints(s: Schema): string[] {
  const c: string[] = [];
  if (s.minimum !== undefined && s.maximum !== undefined) c.push(`${s.minimum}–${s.maximum}`);
  else if (s.minimum !== undefined) c.push(`≥ ${s.minimum}`);
  else if (s.maximum !== undefined) c.push(`≤ ${s.maximum}`);
  if (s.minLength !== undefined) c.push(`length ≥ ${s.minLength}`);
  if (s.maxLength !== undefined) c.push(`length ≤ ${s.maxLength}`);
  if (s.minItems !== undefined) c.push(`≥ ${s.minItems} items`);
  if (s.maxItems !== undefined) c.push(`≤ ${s.maxItems} items`);
  if (s.pattern !== undefined) c.push(`matches <code>${esc(s.pattern)}</code>`);
  return c;
}

/** A short HTML label for a schema's type: `integer (1–1000)`, `Operation[]`, `"kvm" | "tcg"`. */
export function typeLabel(s: Schema): string {
  if (s.$ref !== undefined) {
    const name = refName(s.$ref);
    return `<a href="#type-${name}">${name}</a>`;
  }
  if (s.const !== undefined) return json(s.const);
  if (s.enum !== undefined) return s.enum.map(json).join(' | ');
  if (s.oneOf !== undefined) return s.oneOf.map(typeLabel).join(' | ');
  if (s.type === 'array') return `${s.items ? typeLabel(s.items) : 'unknown'}[]${suffix(constraints(s))}`;
  if (s.type === 'object' && s.properties === undefined && typeof s.additionalProperties === 'object') {
    return `map of ${typeLabel(s.additionalProperties)}`;
  }
  return `${s.type ?? 'any JSON value'}${suffix(constraints(s))}`;
}

const suffix = (c: string[]): string =>
  c.length === 0 ? '' : ` <span class="constraint">(${c.join(', ')})</span>`;

export interface FieldRow {
  name: string;
  type: string;
  required: boolean;
  description: string;
}

/** The fields of an object schema, with nested inline objects flattened to dotted names. */
export function fieldRows(s: Schema, defs: Record<string, Schema>, prefix = ''): FieldRow[] {
  const rows: FieldRow[] = [];
  for (const [key, prop] of Object.entries(s.properties ?? {})) {
    const name = `${prefix}${key}`;
    const inherited = prop.$ref !== undefined ? defs[refName(prop.$ref)]?.description : undefined;
    const nested = prop.type === 'array' && prop.items?.properties ? prop.items : prop;
    rows.push({
      name,
      type: nested !== prop ? 'object[]' : nested.properties ? 'object' : typeLabel(prop),
      required: (s.required ?? []).includes(key),
      description: prose(prop.description ?? inherited ?? ''),
    });
    if (nested.properties) rows.push(...fieldRows(nested, defs, nested === prop ? `${name}.` : `${name}[].`));
  }
  return rows;
}

/** A fields table, or a one-line type when the schema is not an object with properties. */
export function schemaBlock(s: Schema, defs: Record<string, Schema>, empty: string): string {
  if (!s.properties) return `<p>Type: ${typeLabel(s)}</p>`;
  const rows = fieldRows(s, defs);
  if (rows.length === 0) return `<p>${empty}</p>`;
  const body = rows
    .map(
      (r) =>
        `<tr><td><code>${esc(r.name)}</code></td><td>${r.type}</td><td>${r.required ? 'yes' : 'no'}</td><td>${r.description}</td></tr>`,
    )
    .join('\n');
  return `<table class="fields"><thead><tr><th>Name</th><th>Type</th><th>Required</th><th>Description</th></tr></thead><tbody>${body}</tbody></table>`;
}
