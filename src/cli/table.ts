// Plain column tables for list commands: a header row, columns padded to their widest cell,
// two spaces between columns, no trailing spaces. Cells may carry ANSI colour.
import { stripAnsi } from './format.ts';

export type Align = 'left' | 'right';

export interface Column<T> {
  header: string;
  get: (row: T) => string;
  align?: Align;
}

/** Visible width of a cell (ANSI escapes do not count). */
function width(s: string): number {
  return [...stripAnsi(s)].length;
}

function pad(s: string, w: number, align: Align): string {
  const fill = ' '.repeat(Math.max(0, w - width(s)));
  return align === 'right' ? fill + s : s + fill;
}

/** Lay out rows of cells under headers; returns the lines (header first). */
export function renderTable(
  headers: readonly string[],
  rows: readonly string[][],
  align: Align[] = [],
): string[] {
  const widths = headers.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const line = (cells: readonly string[]): string =>
    headers
      .map((_, i) => {
        const a = align[i] ?? 'left';
        const last = i === headers.length - 1;
        const cell = cells[i] ?? '';
        // The last left-aligned column needs no padding (no trailing spaces).
        return last && a === 'left' ? cell : pad(cell, widths[i]!, a);
      })
      .join('  ');
  return [line(headers), ...rows.map(line)];
}

/** renderTable over typed rows with column definitions. */
export function renderRows<T>(columns: readonly Column<T>[], rows: readonly T[]): string[] {
  return renderTable(
    columns.map((c) => c.header),
    rows.map((r) => columns.map((c) => c.get(r))),
    columns.map((c) => c.align ?? 'left'),
  );
}

/** Key/value lines for a detail view: keys padded to one width. Entries with undefined values are left out. */
export function renderFields(fields: readonly [string, string | undefined][]): string[] {
  const shown = fields.filter((f): f is [string, string] => f[1] !== undefined);
  const w = Math.max(0, ...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${k.padEnd(w)}  ${v}`);
}
