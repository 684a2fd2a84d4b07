// The host half of a workspace: what git says a work tree holds (tracked files; untracked ones on
// request; ignored ones never), the refusals (bare repositories, no commit yet, submodules unless
// full_copy), and a shallow copy of its git state (HEAD only) to send along. Read-only on the
// user's repository; git runs by argv, with no GIT_DIR-style variable leaking in.
// Used by the daemon (vm.workspace.prepare) and by the CLI (vm run's checks and --dry-run plan).
import { execFile, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { lstat, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Workspace } from '../../generated/types.gen.ts';
import { VmError } from './errors.ts';

export type WorkspaceMode = Workspace['mode'];

/** What a host work tree would contribute to a workspace. */
export interface RepoInfo {
  /** The work tree's top level (PATH may be a directory inside it). */
  root: string;
  head: string;
  branch?: string;
  /** Paths relative to root, as git prints them (raw bytes: names need not be UTF-8). */
  files: Buffer[];
  bytes: number;
  /** How many of the files are untracked (include_untracked). */
  untracked: number;
  /** Submodule paths (gitlinks in the index). */
  submodules: string[];
}

export interface InspectOptions {
  includeUntracked?: boolean;
  mode?: WorkspaceMode;
}

/** A git environment free of variables that would point git somewhere else than `-C DIR`. */
function gitEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (
      /^GIT_(DIR|WORK_TREE|INDEX_FILE|OBJECT_DIRECTORY|ALTERNATE_OBJECT_DIRECTORIES|COMMON_DIR|NAMESPACE|CEILING_DIRECTORIES|PREFIX)$/.test(
        k,
      )
    )
      delete env[k];
  }
  return env;
}

interface GitResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Run host git by argv; never throws for a non-zero exit (callers decide what it means). */
function git(args: string[], opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<GitResult> {
  return new Promise((resolve, reject) => {
    execFile(
      'git',
      args,
      {
        encoding: 'buffer',
        env: gitEnv(),
        maxBuffer: 512 * 1024 * 1024,
        timeout: opts.timeoutMs ?? 120_000,
        signal: opts.signal,
      },
      (err, stdout, stderr) => {
        // A non-zero exit leaves the number in err.code; anything else (ENOENT, abort, timeout) a string.
        const code: unknown = err ? (err as { code?: unknown }).code : 0;
        if (err && typeof code !== 'number') {
          if (code === 'ENOENT') reject(new VmError('failed', 'git is not installed on this host'));
          else if (err.name === 'AbortError') reject(new VmError('canceled', 'canceled'));
          else reject(new VmError('failed', `git ${args.join(' ')}: ${err.message}`));
          return;
        }
        resolve({ code: code as number, stdout, stderr: stderr.toString('utf8').trim() });
      },
    );
  });
}

async function gitOk(args: string[], what: string, signal?: AbortSignal): Promise<Buffer> {
  const r = await git(args, { signal });
  if (r.code !== 0) throw new VmError('failed', `${what}: ${lastLines(r.stderr)}`);
  return r.stdout;
}

export function lastLines(s: string, n = 3): string {
  return s.trim().split('\n').slice(-n).join('; ') || 'no output';
}

/** Split `git … -z` output into entries (raw bytes). */
export function splitNul(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] === 0) {
      if (i > start) out.push(buf.subarray(start, i));
      start = i + 1;
    }
  }
  if (start < buf.length) out.push(buf.subarray(start));
  return out;
}

/** Parse `git ls-files -z --stage` into paths and the gitlink (submodule) paths among them. */
export function parseStage(buf: Buffer): { files: Buffer[]; gitlinks: Buffer[] } {
  const files: Buffer[] = [];
  const gitlinks: Buffer[] = [];
  const seen = new Set<string>();
  for (const entry of splitNul(buf)) {
    // "<mode> <object> <stage>\t<path>"
    const tab = entry.indexOf(9);
    if (tab < 0) continue;
    const mode = entry.subarray(0, entry.indexOf(32)).toString('latin1');
    const path = entry.subarray(tab + 1);
    const key = path.toString('latin1');
    if (seen.has(key)) continue; // merge conflicts list a path once per stage
    seen.add(key);
    if (mode === '160000') gitlinks.push(path);
    else files.push(path);
  }
  return { files, gitlinks };
}

/** Where git gave up on a path, in words a user can act on. */
function notARepo(path: string, stderr: string): VmError {
  if (/dubious ownership/.test(stderr)) {
    return new VmError(
      'invalid',
      `${path}: git refuses to read this repository because it belongs to another user (${lastLines(stderr, 1)}); run banger as the repository's owner`,
    );
  }
  return new VmError(
    'invalid',
    `${path} is not inside a git work tree: a workspace is copied from a git repository (run git init there first, or give the repository's directory)`,
  );
}

/**
 * Look at a host work tree the way prepare will copy it: refuse bare repositories, repositories
 * without a commit, and submodules (unless mode is full_copy), with messages that say what to do;
 * list the files and count their bytes.
 */
export async function inspectRepo(
  path: string,
  opts: InspectOptions = {},
  signal?: AbortSignal,
): Promise<RepoInfo> {
  const mode = opts.mode ?? 'tracked';
  const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EACCES' || err.code === 'EPERM')
      throw new VmError(
        'invalid',
        `${path}: permission denied for the daemon (it runs as uid ${process.getuid?.() ?? '?'}; the work tree must be readable by that user)`,
      );
    return undefined;
  });
  if (!st) throw new VmError('invalid', `${path}: no such directory`);
  if (!st.isDirectory()) throw new VmError('invalid', `${path}: not a directory (give a git work tree)`);

  const bare = await git(['-C', path, 'rev-parse', '--is-bare-repository'], { signal });
  if (bare.code !== 0) throw notARepo(path, bare.stderr);
  if (bare.stdout.toString().trim() === 'true') {
    throw new VmError(
      'invalid',
      `${path} is a bare git repository: it has no work tree to copy; clone it (git clone ${path} DIR) and give the clone`,
    );
  }
  const top = await git(['-C', path, 'rev-parse', '--show-toplevel'], { signal });
  const root = top.stdout.toString('utf8').trim();
  if (top.code !== 0 || root === '') {
    throw new VmError(
      'invalid',
      `${path} is inside a git directory, not a work tree; give the work tree (the directory that contains .git)`,
    );
  }
  const head = await git(['-C', root, 'rev-parse', '--verify', '-q', 'HEAD^{commit}'], { signal });
  if (head.code !== 0) {
    throw new VmError(
      'invalid',
      `${root} has no commit yet: a workspace starts from a commit (git add -A && git commit -m initial)`,
    );
  }
  const branch = await git(['-C', root, 'symbolic-ref', '-q', '--short', 'HEAD'], { signal });

  const staged = parseStage(await gitOk(['-C', root, 'ls-files', '-z', '--stage'], 'git ls-files', signal));
  const submodules = staged.gitlinks.map((b) => b.toString('utf8'));
  let tracked = staged.files;
  if (submodules.length > 0) {
    if (mode !== 'full_copy') {
      throw new VmError(
        'invalid',
        `${root} has submodules (${submodules.join(', ')}): only git-tracked files are copied, so they would arrive empty; use --mode full_copy to copy their files too`,
      );
    }
    tracked = splitNul(
      await gitOk(
        ['-C', root, 'ls-files', '-z', '--recurse-submodules'],
        'git ls-files --recurse-submodules',
        signal,
      ),
    );
  }
  let untracked: Buffer[] = [];
  if (opts.includeUntracked) {
    untracked = splitNul(
      await gitOk(
        ['-C', root, 'ls-files', '-z', '--others', '--exclude-standard'],
        'git ls-files --others',
        signal,
      ),
    ).filter((b) => b[b.length - 1] !== 0x2f); // `dir/`: an untracked nested repository, not copied
  }

  // Tracked files deleted in the work tree are not copied (they show as deleted in the guest).
  const candidates = [...tracked, ...untracked];
  const present = await presentFiles(root, candidates);
  let bytes = 0;
  const files: Buffer[] = [];
  let untrackedCount = 0;
  for (let i = 0; i < candidates.length; i++) {
    const size = present[i];
    if (size === undefined) continue;
    files.push(candidates[i]!);
    bytes += size;
    if (i >= tracked.length) untrackedCount++;
  }
  const info: RepoInfo = {
    root,
    head: head.stdout.toString().trim(),
    files,
    bytes,
    untracked: untrackedCount,
    submodules,
  };
  if (branch.code === 0) info.branch = branch.stdout.toString('utf8').trim();
  return info;
}

/** lstat every path (in batches); the size of each one that exists, undefined for the others. */
async function presentFiles(root: string, paths: Buffer[]): Promise<(number | undefined)[]> {
  const rootBuf = Buffer.from(`${root}/`);
  const out: (number | undefined)[] = new Array(paths.length);
  const BATCH = 256;
  for (let i = 0; i < paths.length; i += BATCH) {
    const part = paths.slice(i, i + BATCH);
    const sizes = await Promise.all(
      part.map((p) =>
        lstat(Buffer.concat([rootBuf, p])).then(
          (s) => (s.isDirectory() ? undefined : s.size),
          () => undefined,
        ),
      ),
    );
    sizes.forEach((s, j) => (out[i + j] = s));
  }
  return out;
}

/**
 * A shallow copy of the repository's git state in `dir`: HEAD's commit and its objects only
 * (depth 1), HEAD on the same branch as on the host (or detached), no remote, and the host's
 * git identity so commits made in the guest have an author.
 */
export async function buildShallowGit(info: RepoInfo, dir: string, signal?: AbortSignal): Promise<string> {
  await gitOk(['init', '-q', '--template=', dir], 'git init', signal);
  // A plain path (not a file:// URL) still goes through upload-pack, so --depth is honoured.
  await gitOk(
    [
      '-C',
      dir,
      '-c',
      'protocol.version=2',
      'fetch',
      '-q',
      '--depth=1',
      '--no-tags',
      '--no-write-fetch-head',
      info.root,
      info.head,
    ],
    `fetching ${info.head.slice(0, 12)} from ${info.root}`,
    signal,
  );
  if (info.branch) {
    await gitOk(['-C', dir, 'update-ref', `refs/heads/${info.branch}`, info.head], 'git update-ref', signal);
    await gitOk(['-C', dir, 'symbolic-ref', 'HEAD', `refs/heads/${info.branch}`], 'git symbolic-ref', signal);
  } else {
    await gitOk(['-C', dir, 'update-ref', '--no-deref', 'HEAD', info.head], 'git update-ref', signal);
  }
  for (const key of ['user.name', 'user.email']) {
    const v = await git(['-C', info.root, 'config', '--get', key], { signal });
    const value = v.stdout.toString('utf8').trim();
    if (v.code === 0 && value) await gitOk(['-C', dir, 'config', key, value], 'git config', signal);
  }
  return join(dir, '.git');
}

/** A running tar of a workspace (spawnWorkspaceTar). */
export interface WorkspaceTar {
  stdout: Readable;
  /** tar's exit code (127 when it could not start) and the first 16 KiB of its stderr. */
  done: Promise<{ code: number; stderr: string }>;
  kill(): void;
}

/**
 * One archive of a workspace on stdout: the listed files of the work tree, then the shallow .git
 * (buildShallowGit's dir). -C is relative to the previous -C, so both are absolute;
 * --verbatim-files-from keeps a name like `-x` a name. Exit 1 is GNU tar's "a file changed while
 * it was read": the copy is complete, if not a snapshot (callers accept 0 and 1).
 */
export function spawnWorkspaceTar(info: RepoInfo, gitDir: string): WorkspaceTar {
  const tar = spawn(
    'tar',
    [
      '-c',
      '-f',
      '-',
      '--null',
      '--verbatim-files-from',
      '--ignore-failed-read',
      '-C',
      info.root,
      '-T',
      '-',
      '-C',
      join(gitDir, '..'),
      '.git',
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  tar.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 16 * 1024) stderr += d.toString('utf8');
  });
  const done = new Promise<{ code: number; stderr: string }>((resolve) => {
    tar.on('error', () => resolve({ code: 127, stderr }));
    tar.on('close', (code) => resolve({ code: code ?? 1, stderr }));
  });
  tar.stdin.on('error', () => undefined);
  tar.stdin.end(Buffer.concat(info.files.flatMap((f) => [f, Buffer.from([0])])));
  return { stdout: tar.stdout, done, kill: () => tar.kill('SIGKILL') };
}
