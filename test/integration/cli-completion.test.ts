// `banger completion bash|zsh` as a user loads it: the real bin/banger prints the script, and a
// real bash (and zsh, when installed) runs its completion function on typed words. Needs
// `npm run build` first (the script comes from the built CLI's manifest).
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BANGER = join(ROOT, 'bin', 'banger');
const built = existsSync(join(ROOT, 'dist/src/cli/commands/completion.js'));
const hasShell = (name: string): boolean => spawnSync(name, ['-c', 'exit 0']).status === 0;

describe.skipIf(!built)('banger completion', { timeout: 60_000 }, () => {
  const tmp = shortTempDir('bgcompl');
  afterAll(() => tmp.cleanup());

  function script(shell: 'bash' | 'zsh'): string {
    const r = spawnSync(BANGER, ['completion', shell], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    const file = join(tmp.dir, `banger.${shell}`);
    writeFileSync(file, r.stdout);
    return file;
  }

  it.skipIf(!hasShell('bash'))(
    'bash: source <(banger completion bash) completes commands, flags, choices',
    () => {
      const file = script('bash');
      const complete = (line: string, load = 'source "$0"'): string[] => {
        const r = spawnSync(
          'bash',
          [
            '-c',
            `${load}; COMP_WORDS=(${line}); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); _banger_complete; printf '%s\\n' "\${COMPREPLY[@]}"`,
            file,
          ],
          { encoding: 'utf8', timeout: 30_000 },
        );
        expect(r.stderr).toBe('');
        return r.stdout.split('\n').filter(Boolean);
      };
      // Loaded the way the docs say, through process substitution.
      expect(complete('banger vm st', `source <(${JSON.stringify(BANGER)} completion bash)`)).toEqual([
        'start',
        'stats',
        'stop',
      ]);
      expect(complete('banger vm st')).toEqual(['start', 'stats', 'stop']);
      expect(complete('banger vm create --me')).toEqual(['--memory']);
      expect(complete("banger vm create --network ''")).toEqual(['user', 'bridge']);
      expect(complete('banger --socket /tmp/x vm workspace ex')).toEqual(['export']);
      expect(complete('banger compl')).toEqual(['completion']);
      const top = complete("banger ''");
      for (const c of ['vm', 'image', 'kernel', 'op', 'ping', 'completion']) expect(top).toContain(c);
      // complete -F is registered for the command
      const reg = spawnSync('bash', ['-c', 'source "$0"; complete -p banger', file], {
        encoding: 'utf8',
      });
      expect(reg.stdout.trim()).toBe('complete -F _banger_complete banger');
    },
  );

  it.skipIf(!hasShell('zsh'))('zsh: the script parses and its function completes', () => {
    const file = script('zsh');
    expect(spawnSync('zsh', ['-n', file]).status).toBe(0);
    const complete = (...words: string[]): string[] => {
      const r = spawnSync(
        'zsh',
        [
          '-f',
          '-c',
          [
            'compdef() { :; }; compset() { :; }',
            'compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }',
            'source "$0"',
            'words=(banger "$@"); CURRENT=${#words}; _banger',
          ].join('\n'),
          file,
          ...words,
        ],
        { encoding: 'utf8', timeout: 30_000 },
      );
      expect(r.stderr).toBe('');
      return r.stdout.split('\n').filter(Boolean);
    };
    expect(complete('vm', 'st')).toEqual(['start', 'stats', 'stop']);
    expect(complete('vm', 'create', '--me')).toEqual(['--memory']);
  });

  it('an unknown shell is a usage error', () => {
    const r = spawnSync(BANGER, ['completion', 'fish'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^error: .*fish.*\(see --help\)$/m);
  });
});
