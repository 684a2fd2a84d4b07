// Temporary git repositories for workspace tests (unit and smoke): a committed tree with a text
// file, a nested file, a binary file and a .gitignore; then, uncommitted, a modified tracked file,
// an untracked file and an ignored file.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: 'Host Dev',
      GIT_AUTHOR_EMAIL: 'host@example.com',
      GIT_COMMITTER_NAME: 'Host Dev',
      GIT_COMMITTER_EMAIL: 'host@example.com',
    },
  });
}

export interface TestRepo {
  /** The work tree. */
  dir: string;
  /** The commit HEAD points at. */
  head: string;
  cleanup: () => void;
}

/**
 * A repository on branch `main` with two commits:
 *   README.md, src/app.txt, data.bin (binary), .gitignore (`*.log`, `build/`), run.sh (executable)
 * and, uncommitted: README.md modified, untracked.txt untracked, debug.log and build/out ignored.
 */
export function makeTestRepo(prefix = 'bws'): TestRepo {
  const base = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const dir = join(base, 'repo');
  mkdirSync(join(dir, 'src'), { recursive: true });
  git(base, 'init', '-q', '-b', 'main', dir);
  git(dir, 'config', 'user.name', 'Host Dev');
  git(dir, 'config', 'user.email', 'host@example.com');
  writeFileSync(join(dir, 'README.md'), 'hello from the host\n');
  writeFileSync(join(dir, 'src', 'app.txt'), 'app v1\n');
  writeFileSync(join(dir, 'data.bin'), Buffer.from([0, 1, 2, 255, 0, 10, 13, 0]));
  writeFileSync(join(dir, '.gitignore'), '*.log\nbuild/\n');
  writeFileSync(join(dir, 'run.sh'), '#!/bin/sh\necho ran\n', { mode: 0o755 });
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'first');
  writeFileSync(join(dir, 'src', 'app.txt'), 'app v2\n');
  git(dir, 'commit', '-q', '-am', 'second');
  const head = git(dir, 'rev-parse', 'HEAD').trim();
  writeFileSync(join(dir, 'README.md'), 'hello from the host\nwith a local edit\n');
  writeFileSync(join(dir, 'untracked.txt'), 'not tracked\n');
  writeFileSync(join(dir, 'debug.log'), 'ignored\n');
  mkdirSync(join(dir, 'build'));
  writeFileSync(join(dir, 'build', 'out'), 'ignored too\n');
  return { dir, head, cleanup: () => rmSync(base, { recursive: true, force: true }) };
}
