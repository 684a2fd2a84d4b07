// index.ts: the barrel of every generated module, sorted.
import { StructureKind } from 'ts-morph';
import { printStatements } from './ts.ts';

export function emitBarrel(modules: readonly string[]): string {
  return printStatements(
    [...modules].sort().map((m) => ({ kind: StructureKind.ExportDeclaration, moduleSpecifier: `./${m}` })),
  );
}
