// The completion scripts' generator (src/cli/completion.ts): the table it builds from oclif's
// manifest, and the scripts run in a real bash (and zsh when installed) on a small command set.
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  bashCompletion,
  completionTable,
  zshCompletion,
  type CompletionCommand,
} from '../../src/cli/completion.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const COMMANDS: CompletionCommand[] = [
  {
    id: 'vm:create',
    summary: "Create a VM | it's quick",
    flags: {
      json: { name: 'json', type: 'boolean' },
      memory: { name: 'memory', type: 'option', char: 'm' },
      network: { name: 'network', type: 'option', options: ['user', 'bridge'] },
      start: { name: 'start', type: 'boolean', allowNo: true },
      secret: { name: 'secret', type: 'boolean', hidden: true },
    },
  },
  { id: 'vm:list', aliases: ['ps'], flags: {} },
  { id: 'vm:start', flags: {} },
  { id: 'vm:stats', flags: {} },
  { id: 'vm:stop', flags: {} },
  { id: 'vm:workspace:export', flags: {} },
  { id: 'internal', hidden: true, flags: {} },
];

const table = completionTable(COMMANDS, [{ name: 'vm', description: 'VMs' }]);
const tmp = shortTempDir('bgcomp');
const BASH_SCRIPT = join(tmp.dir, 'banger.bash');
const ZSH_SCRIPT = join(tmp.dir, 'banger.zsh');
writeFileSync(BASH_SCRIPT, bashCompletion(table));
writeFileSync(ZSH_SCRIPT, zshCompletion(table));
afterAll(() => tmp.cleanup());

function hasShell(name: string): boolean {
  return spawnSync(name, ['-c', 'exit 0']).status === 0;
}

/** Candidates from the bash script for the words typed (the last is being completed). */
function bash(words: string[]): string[] {
  const r = spawnSync(
    'bash',
    [
      '-c',
      'source "$0"; COMP_WORDS=(banger "$@"); COMP_CWORD=$#; _banger_complete; printf "%s\\n" "${COMPREPLY[@]}"',
      BASH_SCRIPT,
      ...words,
    ],
    { encoding: 'utf8' },
  );
  expect(r.stderr).toBe('');
  return r.stdout.split('\n').filter(Boolean);
}

/** The same through the zsh script, with zsh's completion builtins replaced by printers. */
function zsh(words: string[]): string[] {
  const r = spawnSync(
    'zsh',
    [
      '-f',
      '-c',
      [
        'compdef() { :; }; compset() { :; }',
        'compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }',
        '_files() { print -r -- "<files>"; }',
        'source "$0"',
        'words=(banger "$@"); CURRENT=${#words}; _banger',
      ].join('\n'),
      ZSH_SCRIPT,
      ...words,
    ],
    { encoding: 'utf8' },
  );
  expect(r.stderr).toBe('');
  return r.stdout.split('\n').filter(Boolean);
}

describe('completionTable', () => {
  it('lists commands, aliases, implicit topics, and visible flags with kinds and choices', () => {
    const lines = table.split('\n');
    expect(lines).toContain("c|vm create|Create a VM / it's quick");
    expect(lines).toContain('c|ps|');
    expect(lines).toContain('c|vm workspace|'); // a parent the manifest names no topic for
    expect(lines).toContain('c|vm|VMs');
    expect(lines).toContain('f|vm create|--memory|v|');
    expect(lines).toContain('f|vm create|-m|v|');
    expect(lines).toContain('f|vm create|--network|v|user bridge');
    expect(lines).toContain('f|vm create|--no-start|b|');
    expect(lines).toContain('f|vm create|--help|b|');
    expect(lines).toContain('f||--socket|v|');
    expect(table).not.toMatch(/internal|secret/);
  });
});

describe.each([
  ['bash', bash],
  ['zsh', zsh],
] as const)('the %s script', (shell, complete) => {
  it.skipIf(!hasShell(shell))('completes commands, flags and choices', () => {
    expect(complete(['vm', 'st'])).toEqual(['start', 'stats', 'stop']);
    expect(complete([''])).toEqual(['ps', 'vm']);
    expect(complete(['vm', 'workspace', ''])).toEqual(['export']);
    expect(complete(['vm', 'create', '--me'])).toEqual(['--memory']);
    expect(complete(['vm', 'create', '--n'])).toEqual(['--network', '--no-start']);
    expect(complete(['vm', 'create', '--network', ''])).toEqual(['user', 'bridge']);
    // flags and their values before the word being completed are skipped
    expect(complete(['--socket', '/s', 'vm', '-m', '2G', 'create', '--st'])).toEqual(['--start']);
    expect(complete(['vm', 'create', '--json', '--ne'])).toEqual(['--network']);
    // after --, nothing
    expect(complete(['vm', 'create', '--', 'vm'])).toEqual([]);
  });
});

describe.skipIf(!hasShell('bash'))('bash specifics', () => {
  it('joins --flag=value that bash splits at "=", and completes paths for free-form values', () => {
    expect(bash(['vm', 'create', '--network', '=', 'b'])).toEqual(['bridge']);
    expect(bash(['vm', 'create', '--network', '='])).toEqual(['user', 'bridge']);
    const paths = bash(['--socket', '/et']);
    expect(paths).toContain('/etc');
  });
});
