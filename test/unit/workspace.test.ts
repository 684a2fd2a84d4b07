// Workspaces without a VM: the guest half runs in a local `sh -c` (the same scripts the daemon
// sends over ssh), so listing, the tar stream, the shallow git state, the mixed reset and the
// export patch are all exercised for real; only the transport differs.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ErrorResponse } from '../../src/rpc/errors.ts';
import { toErrorResponse } from '../../src/rpc/errors.ts';
import { singleQuote } from '../../src/util/shell.ts';
import { VmError } from '../../src/vm/errors.ts';
import {
  asWorkspace,
  checkGuestPath,
  countPatchFiles,
  exportWorkspace,
  inspectRepo,
  parseStage,
  prepareWorkspace,
  processRunner,
  splitNul,
  type GuestRunner,
} from '../../src/vm/workspace.ts';
import { git, makeTestRepo, type TestRepo } from '../helpers/git-repo.ts';

const local: GuestRunner = processRunner((script) => ['sh', ['-c', script]]);

/** The VM layer's error, as the wire sees it (the one table maps its kind to the code). */
async function rejection(p: Promise<unknown>): Promise<ErrorResponse> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(VmError);
    return toErrorResponse(err, 'op-000000');
  }
  throw new Error('expected a rejection');
}

/** Every file under dir (relative, sorted), .git excluded. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.name === '.git') continue;
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

function sameTrees(a: string, b: string): void {
  expect(tree(a)).toEqual(tree(b));
  for (const f of tree(a)) {
    expect(readFileSync(join(b, f)), f).toEqual(readFileSync(join(a, f)));
    expect(statSync(join(b, f)).mode & 0o111, `${f} exec bits`).toBe(statSync(join(a, f)).mode & 0o111);
  }
}

describe('pure helpers', () => {
  it('splitNul and parseStage split git -z output, dedupe conflict stages, find gitlinks', () => {
    expect(splitNul(Buffer.from('a\0b c\0\0d')).map(String)).toEqual(['a', 'b c', 'd']);
    const stage = Buffer.from(
      [
        '100644 e69de29bb2d1d6434b8b29ae775ad8c2e48c5391 0\tREADME.md',
        '160000 4b825dc642cb6eb9a060e54bf8d69288fbee4904 0\tvendor/lib',
        '100644 e69de29bb2d1d6434b8b29ae775ad8c2e48c5391 1\tconflict.txt',
        '100644 e69de29bb2d1d6434b8b29ae775ad8c2e48c5391 2\tconflict.txt',
        '',
      ].join('\0'),
    );
    const r = parseStage(stage);
    expect(r.files.map(String)).toEqual(['README.md', 'conflict.txt']);
    expect(r.gitlinks.map(String)).toEqual(['vendor/lib']);
  });

  it('singleQuote quotes anything for sh', () => {
    const v = `a 'b' "c" $(id) \`x\` \\ \n`;
    expect(execFileSync('sh', ['-c', `printf %s ${singleQuote(v)}`], { encoding: 'utf8' })).toBe(v);
  });

  it('countPatchFiles counts file headers only', () => {
    expect(countPatchFiles('')).toBe(0);
    expect(countPatchFiles('diff --git a/x b/x\n+diff --git a/y b/y\ndiff --git a/z b/z\n')).toBe(2);
  });

  it('checkGuestPath keeps workspaces out of system directories', () => {
    expect(checkGuestPath('/root/repo')).toBe('/root/repo');
    expect(checkGuestPath('/srv/app/')).toBe('/srv/app');
    for (const bad of ['/', '/root', 'rel/path', '/etc/app', '/usr/src/x', '/root/../etc', '/var/lib/x']) {
      expect(() => checkGuestPath(bad), bad).toThrow(VmError);
    }
  });

  it('asWorkspace accepts a stored workspace and rejects anything else', () => {
    const ws = {
      host_path: '/h',
      guest_path: '/root/repo',
      mode: 'tracked',
      include_untracked: false,
      base_commit: 'abc',
      files: 1,
      bytes: 2,
      prepared_at: '2026-01-01T00:00:00.000Z',
    };
    expect(asWorkspace(ws)).toEqual(ws);
    expect(asWorkspace({ ...ws, branch: 'main' })?.branch).toBe('main');
    expect(asWorkspace(null)).toBeUndefined();
    expect(asWorkspace({ ...ws, mode: 'other' })).toBeUndefined();
    expect(asWorkspace({ ...ws, files: '1' })).toBeUndefined();
  });
});

describe('inspectRepo', () => {
  let repo: TestRepo;
  beforeEach(() => {
    repo = makeTestRepo();
  });
  afterEach(() => repo.cleanup());

  it('lists tracked files, adds untracked ones only on request, never ignored ones', async () => {
    const tracked = await inspectRepo(repo.dir);
    expect(tracked.root).toBe(repo.dir);
    expect(tracked.head).toBe(repo.head);
    expect(tracked.branch).toBe('main');
    expect(tracked.files.map(String).sort()).toEqual([
      '.gitignore',
      'README.md',
      'data.bin',
      'run.sh',
      'src/app.txt',
    ]);
    expect(tracked.untracked).toBe(0);
    expect(tracked.bytes).toBe(
      tracked.files.reduce((n, f) => n + statSync(join(repo.dir, String(f))).size, 0),
    );
    const all = await inspectRepo(repo.dir, { includeUntracked: true });
    expect(all.files.map(String)).toContain('untracked.txt');
    expect(all.files.map(String)).not.toContain('debug.log');
    expect(all.files.map(String)).not.toContain('build/out');
    expect(all.untracked).toBe(1);
  });

  it('a directory inside the work tree means the whole repository; deleted tracked files are skipped', async () => {
    unlinkSync(join(repo.dir, 'run.sh'));
    const info = await inspectRepo(join(repo.dir, 'src'));
    expect(info.root).toBe(repo.dir);
    expect(info.files.map(String)).not.toContain('run.sh');
  });

  it('refuses what it cannot copy, with a message that says what to do', async () => {
    const bare = join(repo.dir, '..', 'bare.git');
    git(repo.dir, 'clone', '-q', '--bare', repo.dir, bare);
    const e1 = await rejection(inspectRepo(bare));
    expect(e1.code).toBe('bad_request');
    expect(e1.message).toMatch(/bare git repository.*clone it/);

    const plain = mkdtempSync(join(tmpdir(), 'bws-plain-'));
    try {
      const e2 = await rejection(inspectRepo(plain));
      expect(e2.message).toMatch(/not inside a git work tree/);
    } finally {
      rmSync(plain, { recursive: true, force: true });
    }

    const e3 = await rejection(inspectRepo(join(repo.dir, 'nope')));
    expect(e3.message).toMatch(/no such directory/);
    const e4 = await rejection(inspectRepo(join(repo.dir, 'README.md')));
    expect(e4.message).toMatch(/not a directory/);

    const empty = join(repo.dir, '..', 'empty');
    git(repo.dir, 'init', '-q', empty);
    const e5 = await rejection(inspectRepo(empty));
    expect(e5.message).toMatch(/has no commit yet/);

    const e6 = await rejection(inspectRepo(join(repo.dir, '.git')));
    expect(e6.code).toBe('bad_request');
  });

  it('refuses submodules unless full_copy, which copies their files', async () => {
    const sub = join(repo.dir, '..', 'sub');
    mkdirSync(sub);
    git(sub, 'init', '-q', '-b', 'main');
    writeFileSync(join(sub, 'lib.txt'), 'from the submodule\n');
    git(sub, 'add', '-A');
    git(sub, 'commit', '-q', '-m', 'sub');
    git(repo.dir, '-c', 'protocol.file.allow=always', 'submodule', 'add', '-q', sub, 'vendor/sub');
    git(repo.dir, 'commit', '-q', '-m', 'add submodule');
    const e = await rejection(inspectRepo(repo.dir));
    expect(e.code).toBe('bad_request');
    expect(e.message).toMatch(/submodules \(vendor\/sub\).*--mode full_copy/);
    const full = await inspectRepo(repo.dir, { mode: 'full_copy' });
    expect(full.files.map(String)).toContain('vendor/sub/lib.txt');
    expect(full.submodules).toEqual(['vendor/sub']);
  });
});

describe('prepare and export through a local "guest"', () => {
  let repo: TestRepo;
  let guestRoot: string;
  let guest: string;
  beforeEach(() => {
    repo = makeTestRepo();
    guestRoot = mkdtempSync(join(tmpdir(), 'bws-guest-'));
    guest = join(guestRoot, 'repo');
  });
  afterEach(() => {
    repo.cleanup();
    rmSync(guestRoot, { recursive: true, force: true });
  });

  it('copies tracked files only, with a shallow git state whose status matches the host', async () => {
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest });
    expect(ws).toMatchObject({
      host_path: repo.dir,
      guest_path: guest,
      mode: 'tracked',
      include_untracked: false,
      base_commit: repo.head,
      branch: 'main',
      files: 5,
    });
    expect(existsSync(join(guest, 'src/app.txt'))).toBe(true);
    expect(existsSync(join(guest, 'untracked.txt'))).toBe(false);
    expect(existsSync(join(guest, 'debug.log'))).toBe(false);
    expect(readFileSync(join(guest, 'README.md'), 'utf8')).toContain('with a local edit');
    expect(statSync(join(guest, 'run.sh')).mode & 0o111).not.toBe(0);
    // Shallow: one commit, on the same branch, no remote; the host's identity for guest commits.
    expect(git(guest, 'rev-parse', 'HEAD').trim()).toBe(repo.head);
    expect(git(guest, 'rev-list', '--count', 'HEAD').trim()).toBe('1');
    expect(git(guest, 'rev-parse', '--is-shallow-repository').trim()).toBe('true');
    expect(git(guest, 'symbolic-ref', '--short', 'HEAD').trim()).toBe('main');
    expect(git(guest, 'remote').trim()).toBe('');
    expect(git(guest, 'config', 'user.email').trim()).toBe('host@example.com');
    // git status in the guest: the host's uncommitted edit, nothing else.
    expect(git(guest, 'status', '--porcelain')).toBe(' M README.md\n');
    expect(git(guest, 'diff')).toContain('+with a local edit');
  });

  it('include_untracked copies untracked files (never ignored ones); they show as untracked', async () => {
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest, includeUntracked: true });
    expect(ws.files).toBe(6);
    expect(readFileSync(join(guest, 'untracked.txt'), 'utf8')).toBe('not tracked\n');
    expect(existsSync(join(guest, 'debug.log'))).toBe(false);
    expect(existsSync(join(guest, 'build'))).toBe(false);
    expect(git(guest, 'status', '--porcelain')).toBe(' M README.md\n?? untracked.txt\n');
  });

  it('odd file names arrive intact (spaces, a leading dash, newlines, symlinks)', async () => {
    writeFileSync(join(repo.dir, '-rf'), 'dash\n');
    writeFileSync(join(repo.dir, 'with space.txt'), 'space\n');
    writeFileSync(join(repo.dir, 'new\nline'), 'nl\n');
    symlinkSync('README.md', join(repo.dir, 'link'));
    git(repo.dir, 'add', '--', '-rf', 'with space.txt', 'new\nline', 'link');
    git(repo.dir, 'commit', '-q', '-m', 'odd names');
    await prepareWorkspace(local, { path: repo.dir, guestPath: guest });
    expect(readFileSync(join(guest, '-rf'), 'utf8')).toBe('dash\n');
    expect(readFileSync(join(guest, 'with space.txt'), 'utf8')).toBe('space\n');
    expect(readFileSync(join(guest, 'new\nline'), 'utf8')).toBe('nl\n');
    expect(readFileSync(join(guest, 'link'), 'utf8')).toContain('hello from the host');
    expect(git(guest, 'status', '--porcelain')).toBe(' M README.md\n');
  });

  it('a detached HEAD stays detached', async () => {
    git(repo.dir, 'checkout', '-q', '--detach');
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest });
    expect(ws.branch).toBeUndefined();
    expect(git(guest, 'rev-parse', 'HEAD').trim()).toBe(repo.head);
  });

  it('refuses a non-empty guest directory that is not its workspace; replaces its own', async () => {
    mkdirSync(guest);
    writeFileSync(join(guest, 'precious'), 'x');
    const e = await rejection(prepareWorkspace(local, { path: repo.dir, guestPath: guest }));
    expect(e.code).toBe('conflict');
    expect(e.message).toMatch(/already exists in the guest and is not empty/);
    expect(existsSync(join(guest, 'precious'))).toBe(true);
    rmSync(guest, { recursive: true });
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest });
    writeFileSync(join(guest, 'stale'), 'x');
    await prepareWorkspace(local, { path: repo.dir, guestPath: guest, current: ws });
    expect(existsSync(join(guest, 'stale'))).toBe(false);
  });

  it('export: guest commits, staged, unstaged, new, deleted, binary and non-UTF-8 changes round-trip through git apply', async () => {
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest, includeUntracked: true });
    // In the guest: a commit, then more changes of every kind on top.
    writeFileSync(join(guest, 'src/app.txt'), 'app v3 from the guest\n');
    git(guest, 'commit', '-q', '-am', 'guest commit');
    writeFileSync(join(guest, 'staged.txt'), 'staged\n');
    git(guest, 'add', 'staged.txt');
    writeFileSync(join(guest, 'README.md'), 'rewritten in the guest\n');
    writeFileSync(join(guest, 'new.bin'), Buffer.from([0, 0xff, 0xfe, 7, 0]));
    writeFileSync(join(guest, 'latin1.txt'), Buffer.from('caf\xe9 cr\xe8me\n', 'latin1'));
    unlinkSync(join(guest, 'data.bin'));
    chmodSync(join(guest, 'run.sh'), 0o644);
    const indexBefore = readFileSync(join(guest, '.git/index'));

    const out = await exportWorkspace(local, ws, undefined);
    expect(out.base_commit).toBe(repo.head);
    expect(out.files_changed).toBe(8);
    expect(out.patch).toContain('GIT binary patch');
    // The guest's own index is untouched.
    expect(readFileSync(join(guest, '.git/index'))).toEqual(indexBefore);

    // On the host: a clean checkout of the base plus the patch is the guest's tree.
    const clean = join(guestRoot, 'clean');
    git(guestRoot, 'clone', '-q', repo.dir, clean);
    git(clean, 'checkout', '-q', repo.head);
    const patchFile = join(guestRoot, 'p.patch');
    writeFileSync(patchFile, out.patch);
    git(clean, 'apply', '--index', patchFile);
    sameTrees(guest, clean);
  });

  it('export with --base-commit HEAD leaves the guest commits out; an unknown base is a bad_request', async () => {
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest });
    writeFileSync(join(guest, 'src/app.txt'), 'committed in the guest\n');
    git(guest, 'commit', '-q', '-am', 'guest');
    writeFileSync(join(guest, 'late.txt'), 'after the commit\n');
    const sinceHead = await exportWorkspace(local, ws, 'HEAD');
    expect(sinceHead.base_commit).toBe(git(guest, 'rev-parse', 'HEAD').trim());
    expect(sinceHead.files_changed).toBe(1);
    expect(sinceHead.patch).toContain('late.txt');
    const e = await rejection(exportWorkspace(local, ws, 'no-such-branch'));
    expect(e.code).toBe('bad_request');
    expect(e.message).toMatch(/no commit no-such-branch/);
    const e2 = await rejection(exportWorkspace(local, ws, '--output=x'));
    expect(e2.code).toBe('bad_request');
  });

  it('an unchanged workspace exports an empty patch', async () => {
    git(repo.dir, 'checkout', '-q', '--', 'README.md');
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest });
    const out = await exportWorkspace(local, ws, undefined);
    expect(out).toEqual({ patch: '', base_commit: repo.head, files_changed: 0 });
  });

  it('a guest without git gets the files (only tar is needed); export then says git is missing', async () => {
    // A PATH with the tools the guest scripts use, git left out (an OCI minbase image has no git).
    const bin = join(guestRoot, 'bin');
    mkdirSync(bin);
    for (const t of ['tar', 'ls', 'rm', 'mkdir', 'mktemp', 'cp']) {
      const at = execFileSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).trim();
      symlinkSync(at, join(bin, t));
    }
    const noGit: GuestRunner = processRunner((script) => [
      'sh',
      ['-c', `PATH=${singleQuote(bin)}\n${script}`],
    ]);
    const ws = await prepareWorkspace(noGit, { path: repo.dir, guestPath: guest });
    expect(readFileSync(join(guest, 'README.md'), 'utf8')).toBe(
      readFileSync(join(repo.dir, 'README.md'), 'utf8'),
    );
    const e = await rejection(exportWorkspace(noGit, ws, undefined));
    expect(e.message).toMatch(/git is not installed in the guest/);
  });

  it('a guest whose workspace directory is gone says so', async () => {
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest });
    rmSync(guest, { recursive: true });
    const e = await rejection(exportWorkspace(local, ws, undefined));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toMatch(/is gone from the guest/);
  });

  it('full_copy brings submodule files along', async () => {
    const sub = join(repo.dir, '..', 'sub');
    mkdirSync(sub);
    git(sub, 'init', '-q', '-b', 'main');
    writeFileSync(join(sub, 'lib.txt'), 'from the submodule\n');
    git(sub, 'add', '-A');
    git(sub, 'commit', '-q', '-m', 'sub');
    git(repo.dir, '-c', 'protocol.file.allow=always', 'submodule', 'add', '-q', sub, 'vendor/sub');
    git(repo.dir, 'commit', '-q', '-m', 'add submodule');
    const ws = await prepareWorkspace(local, { path: repo.dir, guestPath: guest, mode: 'full_copy' });
    expect(ws.mode).toBe('full_copy');
    expect(readFileSync(join(guest, 'vendor/sub/lib.txt'), 'utf8')).toBe('from the submodule\n');
    expect(git(guest, 'status', '--porcelain')).toBe(' M README.md\n');
  });

  it('a canceled prepare stops its processes and reports canceled', async () => {
    const ac = new AbortController();
    const slow: GuestRunner = (script, opts) => local(`sleep 5; ${script}`, { ...opts, signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    const t0 = Date.now();
    const e = await rejection(prepareWorkspace(slow, { path: repo.dir, guestPath: guest }));
    expect(e.code).toBe('canceled');
    expect(Date.now() - t0).toBeLessThan(4000);
  });
});
