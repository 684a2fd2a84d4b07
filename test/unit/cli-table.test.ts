import { describe, expect, it } from 'vitest';
import { renderFields, renderRows, renderTable } from '../../src/cli/table.ts';

describe('renderTable', () => {
  it('pads columns to the widest cell, two spaces apart, no trailing spaces', () => {
    expect(
      renderTable(
        ['NAME', 'VCPU', 'NETWORK'],
        [
          ['calm-otter', '2', 'user 127.0.0.1:42022'],
          ['x', '16', 'bridge'],
        ],
        ['left', 'right', 'left'],
      ),
    ).toEqual([
      'NAME        VCPU  NETWORK',
      'calm-otter     2  user 127.0.0.1:42022',
      'x             16  bridge',
    ]);
  });

  it('ignores ANSI colour when measuring, and pads a right-aligned last column', () => {
    const red = '\x1b[31merror\x1b[0m';
    const lines = renderTable(
      ['STATE', 'N'],
      [
        [red, '1'],
        ['running', '10'],
      ],
      ['left', 'right'],
    );
    expect(lines).toEqual(['STATE     N', `${red}     1`, 'running  10']);
  });

  it('a header-only table', () => {
    expect(renderTable(['A', 'B'], [])).toEqual(['A  B']);
  });

  it('renderRows over typed rows', () => {
    const rows = [{ n: 'a', v: 1 }];
    expect(
      renderRows(
        [
          { header: 'N', get: (r: { n: string; v: number }) => r.n },
          { header: 'VALUE', get: (r) => String(r.v), align: 'right' },
        ],
        rows,
      ),
    ).toEqual(['N  VALUE', 'a      1']);
  });
});

describe('renderFields', () => {
  it('aligns keys and leaves out undefined values', () => {
    expect(
      renderFields([
        ['name', 'calm-otter'],
        ['last error', undefined],
        ['id', 'a1'],
      ]),
    ).toEqual(['name  calm-otter', 'id    a1']);
  });
});
