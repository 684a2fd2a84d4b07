// The "did you mean" of an unknown command, against a fixed command list.
import { describe, expect, it } from 'vitest';
import { editDistance, suggestCommand, unknownCommandMessage } from '../../src/cli/not-found.ts';

const COMMANDS = [
  'ping',
  'version',
  'doctor',
  'daemon:status',
  'vm:list',
  'vm:ssh',
  'vm:show',
  'vm:stop',
  'vm:start',
  'vm:workspace:prepare',
  'vm:workspace:export',
  'image:build',
];
const TOPICS = ['daemon', 'vm', 'vm:workspace', 'image'];
const say = (id: string): string => unknownCommandMessage(suggestCommand(id, COMMANDS, TOPICS), 'banger');

describe('unknown commands', () => {
  it('edit distance counts a transposition as one edit', () => {
    expect(editDistance('list', 'list')).toBe(0);
    expect(editDistance('lst', 'list')).toBe(1);
    expect(editDistance('lsit', 'list')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
  });

  it.each([
    ['vm:lst', 'unknown command "vm lst"; did you mean "vm list"?'],
    ['vm:lsit', 'unknown command "vm lsit"; did you mean "vm list"?'],
    // "ls" is as close to "ssh" as to "list": the command it abbreviates wins.
    ['vm:ls', 'unknown command "vm ls"; did you mean "vm list"?'],
    ['vmm:list', 'unknown command "vmm list"; did you mean "vm list"?'],
    // Positional words after the command stay out of the message.
    ['vm:lst:calm-otter', 'unknown command "vm lst"; did you mean "vm list"?'],
    ['vm:workspace:prep', 'unknown command "vm workspace prep"; did you mean "vm workspace prepare"?'],
    ['daemon:stauts', 'unknown command "daemon stauts"; did you mean "daemon status"?'],
    ['pnig', 'unknown command "pnig"; did you mean "ping"?'],
  ])('%s: %s', (id, message) => expect(say(id)).toBe(message));

  it('nothing close: points at the help of the deepest known topic', () => {
    expect(say('frobnicate')).toBe('unknown command "frobnicate"; see banger --help');
    expect(say('vm:frobnicate')).toBe('unknown command "vm frobnicate"; see banger vm --help');
    expect(say('vm:workspace:zzzzzz:x')).toBe(
      'unknown command "vm workspace zzzzzz"; see banger vm workspace --help',
    );
  });
});
