// The one place that turns ts-morph structures into source text.
import {
  IndentationText,
  NewLineKind,
  Project,
  QuoteKind,
  StructureKind,
  type ImportDeclarationStructure,
  type JSDocStructure,
  type OptionalKind,
  type StatementStructures,
  type WriterFunction,
} from 'ts-morph';

const project = new Project({
  useInMemoryFileSystem: true,
  manipulationSettings: {
    indentationText: IndentationText.TwoSpaces,
    newLineKind: NewLineKind.LineFeed,
    quoteKind: QuoteKind.Single,
  },
});

export type Statement = string | WriterFunction | StatementStructures;

function print(statements: Statement[]): string {
  const file = project.createSourceFile('/emit.ts', { statements }, { overwrite: true });
  const text = file.getFullText();
  project.removeSourceFile(file);
  return text;
}

const isImport = (s: Statement): boolean =>
  typeof s === 'object' && s.kind === StructureKind.ImportDeclaration;

/** Print statements with one blank line between declarations (imports stay together). */
export function printStatements(statements: Statement[]): string {
  const blocks: Statement[][] = [];
  for (const s of statements) {
    const last = blocks.at(-1);
    if (last && isImport(s) && isImport(last[0] as Statement)) last.push(s);
    else blocks.push([s]);
  }
  return blocks.map(print).join('\n');
}

/** `import { a, type B } from 'm'`; names starting with `type ` are type-only. Sorted, skipped when empty. */
export function importFrom(moduleSpecifier: string, names: readonly string[]): ImportDeclarationStructure[] {
  if (names.length === 0) return [];
  const specs = [...new Set(names)]
    .map((n) => (n.startsWith('type ') ? { name: n.slice(5), isTypeOnly: true } : { name: n }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const allTypes = specs.every((s) => s.isTypeOnly);
  return [
    {
      kind: StructureKind.ImportDeclaration,
      moduleSpecifier,
      isTypeOnly: allTypes,
      namedImports: allTypes ? specs.map((s) => s.name) : specs,
    },
  ];
}

/** A JSON value as a TypeScript expression (prettier fixes quotes and layout later). */
export function literal(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

/** A JSDoc block: a description plus `@tag text` lines. */
export function jsDoc(description: string, tags: [string, string][] = []): OptionalKind<JSDocStructure> {
  return { description, tags: tags.map(([tagName, text]) => ({ tagName, text })) };
}

/** Write an object literal from ordered entries whose values are already expressions. */
export function objectLiteral(entries: [string, string | WriterFunction][]): WriterFunction {
  return (w) => {
    w.write('{').newLine();
    w.indent(() => {
      for (const [key, value] of entries) {
        w.write(`${key}: `);
        if (typeof value === 'string') w.write(value);
        else value(w);
        w.write(',').newLine();
      }
    });
    w.write('}');
  };
}
