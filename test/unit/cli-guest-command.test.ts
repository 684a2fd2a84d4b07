import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  entrypointCommand,
  envFromOci,
  envWord,
  guestCommandLine,
  isRootUser,
  mergeEnv,
  runAsPrefix,
  type EnvEntry,
} from '../../src/cli/guest-command.ts';

const lit = (name: string, text: string): EnvEntry => ({ name, value: [{ text }] });

/** Run a remote line in a real sh, with a fake `runuser` that logs its options and runs the rest. */
function runLine(line: string, env: Record<string, string> = {}): { out: string; runuser: string } {
  const dir = mkdtempSync(join(tmpdir(), 'banger-gc-'));
  const log = join(dir, 'runuser.log');
  writeFileSync(
    join(dir, 'runuser'),
    `#!/bin/sh\nlog=${log}\nwhile [ "$1" != "--" ]; do printf '%s ' "$1" >>"$log"; shift; done\nshift\nexec "$@"\n`,
  );
  chmodSync(join(dir, 'runuser'), 0o755);
  const out = execFileSync('sh', ['-c', line], {
    encoding: 'utf8',
    env: { PATH: `${dir}:${process.env.PATH ?? '/usr/bin:/bin'}`, HOME: dir, ...env },
  });
  let runuser = '';
  try {
    runuser = readFileSync(log, 'utf8').trim();
  } catch {
    // never called
  }
  return { out, runuser };
}

describe('guestCommandLine', () => {
  it('is the plain quoted command without env, user or cwd (as banger always ran it)', () => {
    expect(guestCommandLine({ command: ['ls', '-la'] })).toBe('ls -la');
    expect(guestCommandLine({ command: [] })).toBeUndefined();
    expect(guestCommandLine({ command: [], cwd: '/root/repo' })).toBe(
      'cd /root/repo && exec "${SHELL:-/bin/sh}" -l',
    );
  });

  it('exports the env to the command, every value intact, in the directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'banger-gc-cwd '));
    const env = [lit('A', "it's $HOME `id`"), lit('EMPTY', ''), lit('PATH', '/usr/bin:/bin')];
    const line = guestCommandLine({
      command: ['sh', '-c', 'printf "%s|%s|%s|" "$A" "$EMPTY" "$PWD"'],
      cwd: dir,
      env,
    })!;
    expect(line.startsWith(`cd '${dir}' && exec env -- `)).toBe(true);
    expect(runLine(line).out).toBe(`it's $HOME \`id\`||${dir}|`);
  });

  it('expands guest variables in the guest (${containerEnv:VAR} left to the guest)', () => {
    const env: EnvEntry[] = [{ name: 'P', value: [{ text: '/opt/x:' }, { guestVar: 'MYPATH' }] }];
    expect(envWord(env[0]!)).toBe(`P=/opt/x:"\${MYPATH}"`);
    const line = guestCommandLine({ command: ['sh', '-c', 'echo "$P"'], env })!;
    expect(runLine(line, { MYPATH: '/a b' }).out.trim()).toBe('/opt/x:/a b');
  });

  it('runs as another user through runuser, a numeric id looked up in the guest', () => {
    expect(runAsPrefix('dev')).toBe('runuser -u dev -- ');
    expect(runAsPrefix('dev:staff')).toBe('runuser -u dev -g staff -- ');
    expect(runAsPrefix('1000:1000')).toBe(
      'runuser -u "$(getent passwd 1000 | cut -d: -f1)" -g "$(getent group 1000 | cut -d: -f1)" -- ',
    );
    expect(runAsPrefix("we'ird")).toBe(`runuser -u 'we'\\''ird' -- `);
    const line = guestCommandLine({ command: ['echo', 'hi there'], user: '0:0', env: [lit('X', '1')] })!;
    // root is no switch at all
    expect(line).toBe("exec env -- X=1 echo 'hi there'");
    const asDev = guestCommandLine({
      command: ['sh', '-c', 'echo "$X"'],
      user: 'dev',
      env: [lit('X', 'v')],
    })!;
    const r = runLine(asDev);
    expect(r.out.trim()).toBe('v');
    expect(r.runuser).toBe('-u dev');
    // uid 0 exists in every passwd: the lookup gives its name
    expect(runLine(guestCommandLine({ command: ['true'], user: '0:1' })!).runuser).toBe(
      `-u root -g ${execFileSync('getent', ['group', '1'], { encoding: 'utf8' }).split(':')[0]}`,
    );
  });

  it('an interactive shell with an environment is not a login shell (the image PATH stays)', () => {
    const line = guestCommandLine({ command: [], env: [lit('A', '1')], user: 'dev', cwd: '/w' })!;
    expect(line).toBe(`cd /w && exec runuser -u dev -- env -- A=1 sh -c 'exec "\${SHELL:-/bin/sh}"'`);
    expect(guestCommandLine({ command: [], user: 'dev' })).toBe(
      `exec runuser -u dev -- sh -c 'exec "\${SHELL:-/bin/sh}" -l'`,
    );
  });

  it('a command word starting with - is not an option of env', () => {
    const line = guestCommandLine({ command: ['-x'], env: [lit('A', '1')] })!;
    expect(line).toBe('exec env -- A=1 -x');
  });
});

describe('image config helpers', () => {
  it('reads OCI Env, skipping malformed entries; later layers win', () => {
    const e = envFromOci(['PATH=/usr/local/bin:/usr/bin', 'EQ=a=b', 'NOEQ', '=x', '1BAD=y', 'E=']);
    expect(e.map(envWord)).toEqual(['PATH=/usr/local/bin:/usr/bin', "EQ='a=b'", "E=''"]);
    const m = mergeEnv(e, [lit('EQ', 'c')]);
    expect(m.map(envWord)).toEqual(['PATH=/usr/local/bin:/usr/bin', 'EQ=c', "E=''"]);
  });

  it('root is root whatever the spelling', () => {
    for (const u of [undefined, '', 'root', '0', '0:0', 'root:root']) expect(isRootUser(u)).toBe(true);
    for (const u of ['dev', '1000', 'root:dev', '0:5']) expect(isRootUser(u)).toBe(false);
  });

  it('Entrypoint + Cmd', () => {
    expect(entrypointCommand(undefined)).toEqual([]);
    expect(entrypointCommand({ env: [], cmd: ['bash'] })).toEqual(['bash']);
    expect(entrypointCommand({ env: [], entrypoint: ['/init', '-v'], cmd: ['serve'] })).toEqual([
      '/init',
      '-v',
      'serve',
    ]);
  });
});
