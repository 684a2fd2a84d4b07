import { describe, expect, it } from 'vitest';
import { hoistGlobalFlags } from '../../src/cli/argv.ts';

describe('hoistGlobalFlags', () => {
  it.each([
    [
      ['daemon', 'status'],
      ['daemon', 'status'],
    ],
    [
      ['--socket', '/s', 'daemon', 'status'],
      ['daemon', 'status', '--socket', '/s'],
    ],
    [
      ['--socket=/s', '--json', 'ping'],
      ['ping', '--socket=/s', '--json'],
    ],
    [
      ['--json', 'vm', 'ssh', 'x', '--', 'ls', '--socket', 'y'],
      ['vm', 'ssh', 'x', '--json', '--', 'ls', '--socket', 'y'],
    ],
    [
      ['vm', 'list', '--socket', '/s'],
      ['vm', 'list', '--socket', '/s'],
    ],
    [['--socket'], ['--socket']],
  ])('%j → %j', (input, want) => {
    expect(hoistGlobalFlags(input)).toEqual(want);
  });
});
