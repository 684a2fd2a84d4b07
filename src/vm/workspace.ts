// Workspaces: a host git work tree copied into a running guest (vm.workspace.prepare), and the
// guest's changes brought back as a binary git patch (vm.workspace.export).
//
// Prepare lists the files with git (tracked; untracked-but-not-ignored on request; ignored never),
// streams them as one tar over ssh together with a shallow .git (HEAD only, fetched from the host
// repository into a temporary directory), and runs a mixed `git reset` in the guest: the index
// becomes HEAD and the copied files show as changes against it, exactly as on the host.
// Export stages everything in the guest into a temporary index (the guest's own index is left
// alone) and diffs it against the base commit, so guest commits, staged, unstaged and new files
// all end up in one patch that `git apply` reproduces on the host.
//
// The host half (listing, refusals, the shallow git state) is in workspace-repo.ts. Everything
// runs by argv (no host shell); the guest side is a POSIX sh script with every interpolated value
// single-quoted.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Workspace } from '../../generated/types.gen.ts';
import { singleQuote } from '../util/shell.ts';
import { VmError } from './errors.ts';
import { sshArgv, type SshPaths, type SshTarget } from './ssh.ts';
import {
  buildShallowGit,
  inspectRepo,
  lastLines,
  spawnWorkspaceTar,
  type WorkspaceMode,
} from './workspace-repo.ts';

export {
  inspectRepo,
  parseStage,
  splitNul,
  type InspectOptions,
  type RepoInfo,
  type WorkspaceMode,
} from './workspace-repo.ts';

export const DEFAULT_GUEST_PATH = '/root/repo';

// ---- guest side ------------------------------------------------------------------------------

export interface GuestResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a POSIX sh script in the guest, optionally feeding it stdin; resolves with its exit code. */
export type GuestRunner = (
  script: string,
  opts?: { stdin?: Readable; timeoutMs?: number; signal?: AbortSignal },
) => Promise<GuestResult>;

/** A runner that spawns `argvFor(script)` (ssh into the guest; `sh -c` in tests). */
export function processRunner(argvFor: (script: string) => [string, string[]]): GuestRunner {
  return (script, opts = {}) =>
    new Promise((resolve, reject) => {
      const [cmd, args] = argvFor(script);
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      let err = '';
      let settled = false;
      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const timeoutMs = opts.timeoutMs ?? 120_000;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        finish(() =>
          reject(new VmError('failed', `guest command timed out after ${Math.round(timeoutMs / 1000)} s`)),
        );
      }, timeoutMs);
      const onAbort = (): void => {
        child.kill('SIGKILL');
        finish(() => reject(new VmError('canceled', 'canceled')));
      };
      if (opts.signal?.aborted) onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => {
        if (err.length < 64 * 1024) err += d.toString('utf8');
      });
      child.stdin.on('error', () => undefined); // the script may exit before reading all of stdin
      if (opts.stdin) opts.stdin.pipe(child.stdin);
      else child.stdin.end();
      child.on('error', (e) =>
        finish(() => reject(new VmError('failed', `cannot run ${cmd}: ${e.message}`))),
      );
      child.on('close', (code, signal) =>
        finish(() =>
          resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out), stderr: err.trim() }),
        ),
      );
    });
}

/** Run guest scripts over banger's ssh (pinned host key, banger's key, batch mode). */
export function sshGuestRunner(paths: SshPaths, target: SshTarget): GuestRunner {
  return processRunner((script) => ['ssh', sshArgv(paths, target, `sh -c ${singleQuote(script)}`)]);
}

/** Guest paths a workspace may not replace (it is removed and rewritten on prepare). */
const SYSTEM_DIRS = /^\/(bin|boot|dev|etc|lib|lib32|lib64|libx32|proc|run|sbin|sys|usr|var)(\/|$)/;

export function checkGuestPath(p: string): string {
  const norm = p.replace(/\/+$/, '');
  if (!norm.startsWith('/') || norm.split('/').some((c) => c === '..' || c === '.'))
    throw new VmError('invalid', `guest path "${p}" must be absolute, without . or .. components`);
  if (norm.split('/').filter(Boolean).length < 2 || SYSTEM_DIRS.test(norm)) {
    throw new VmError(
      'invalid',
      `guest path "${p}" is not a place for a workspace (it is replaced on prepare); use a directory such as ${DEFAULT_GUEST_PATH} or /srv/NAME`,
    );
  }
  return norm;
}

/** Exit codes of the guest scripts, chosen to be distinct from what tar, git and ssh return. */
const EXIT_NOT_EMPTY = 17;
const EXIT_NO_TOOL = 18;
const EXIT_NO_WORKSPACE = 20;
const EXIT_BAD_BASE = 21;

/** The guest half of prepare: check the target, unpack stdin, make the index match HEAD. */
export function prepareScript(guestPath: string, replace: boolean): string {
  return [
    'set -eu',
    `d=${singleQuote(guestPath)}`,
    // Only tar is needed to copy: an image without git (an OCI minbase) still gets the work tree;
    // git is needed later, by export (which says so).
    `command -v tar >/dev/null 2>&1 || { echo "banger: tar is not installed in the guest" >&2; exit ${EXIT_NO_TOOL}; }`,
    `if [ -e "$d" ] && [ ! -d "$d" ]; then echo "banger: $d exists and is not a directory" >&2; exit ${EXIT_NOT_EMPTY}; fi`,
    replace
      ? ':'
      : `if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then echo "banger: $d already exists in the guest and is not empty" >&2; exit ${EXIT_NOT_EMPTY}; fi`,
    'rm -rf "$d"',
    'mkdir -p "$d"',
    'tar -x -f - -C "$d" --no-same-owner',
    'cd "$d"',
    // Mixed reset: the index becomes HEAD, the copied files stay as they are.
    'if command -v git >/dev/null 2>&1; then git reset -q; fi',
  ].join('\n');
}

/**
 * The guest half of export: stage everything into a temporary index and diff it against the base.
 * Prints the resolved base commit on the first line, then the patch.
 */
export function exportScript(guestPath: string, base: string, forceBinary: boolean): string {
  return [
    'set -eu',
    `d=${singleQuote(guestPath)}`,
    `b=${singleQuote(base)}`,
    `cd "$d" 2>/dev/null || { echo "banger: the workspace directory $d is gone from the guest" >&2; exit ${EXIT_NO_WORKSPACE}; }`,
    `command -v git >/dev/null 2>&1 || { echo "banger: git is not installed in the guest: export diffs the workspace with it (add it to the image, e.g. image build --from IMAGE --packages git)" >&2; exit ${EXIT_NO_TOOL}; }`,
    `base=$(git rev-parse --verify -q "$b^{commit}") || { echo "banger: no commit $b in the guest workspace's history (it is shallow: it starts at the prepared commit)" >&2; exit ${EXIT_BAD_BASE}; }`,
    'idx=$(mktemp -u /tmp/banger-export-index.XXXXXX)',
    'attr=$(mktemp /tmp/banger-export-attr.XXXXXX)',
    `trap 'rm -f "$idx" "$attr"' EXIT`,
    forceBinary ? `echo '* binary' > "$attr"` : ':',
    'cur=$(git rev-parse --git-path index)',
    'if [ -f "$cur" ]; then cp "$cur" "$idx"; fi',
    'GIT_INDEX_FILE=$idx git add -A',
    'printf "%s\\n" "$base"',
    'GIT_INDEX_FILE=$idx git -c core.attributesFile="$attr" diff --cached --binary --no-color --no-ext-diff --no-textconv --no-relative --src-prefix=a/ --dst-prefix=b/ "$base" --',
  ].join('\n');
}

function guestFailure(what: string, r: GuestResult): VmError {
  const msg = lastLines(r.stderr.replace(/^banger: /gm, ''));
  if (r.code === 255) return new VmError('failed', `${what}: ssh to the guest failed (${msg})`);
  if (r.code === EXIT_NOT_EMPTY) return new VmError('conflict', `${what}: ${msg}`);
  if (r.code === EXIT_BAD_BASE) return new VmError('invalid', `${what}: ${msg}`);
  return new VmError('failed', `${what}: ${msg} (exit ${r.code})`);
}

export interface PrepareRequest {
  path: string;
  guestPath?: string;
  includeUntracked?: boolean;
  mode?: WorkspaceMode;
  /** The VM's current workspace: its directory may be replaced without asking. */
  current?: Workspace;
}

/** Copy a host work tree into the guest; returns the workspace to record on the VM. */
export async function prepareWorkspace(
  run: GuestRunner,
  req: PrepareRequest,
  opts: { signal?: AbortSignal; tmpDir?: string; timeoutMs?: number } = {},
): Promise<Workspace> {
  const guestPath = checkGuestPath(req.guestPath ?? DEFAULT_GUEST_PATH);
  if (!req.path.startsWith('/')) throw new VmError('invalid', `path "${req.path}" must be absolute`);
  const mode = req.mode ?? 'tracked';
  const info = await inspectRepo(
    req.path,
    { includeUntracked: req.includeUntracked ?? false, mode },
    opts.signal,
  );
  const tmp = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'banger-ws-'));
  try {
    const gitDir = await buildShallowGit(info, join(tmp, 'git'), opts.signal);
    const tar = spawnWorkspaceTar(info, gitDir);
    const replace = req.current?.guest_path === guestPath;
    const r = await run(prepareScript(guestPath, replace), {
      stdin: tar.stdout,
      timeoutMs: opts.timeoutMs ?? 15 * 60_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    }).catch((err: unknown) => {
      tar.kill();
      throw err;
    });
    if (r.code !== 0) {
      tar.kill();
      throw guestFailure(`copying ${info.root} to ${guestPath}`, r);
    }
    const t = await tar.done;
    if (t.code !== 0 && t.code !== 1) {
      throw new VmError('failed', `tar of ${info.root} failed (exit ${t.code}): ${lastLines(t.stderr)}`);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const ws: Workspace = {
    host_path: info.root,
    guest_path: guestPath,
    mode,
    include_untracked: req.includeUntracked ?? false,
    base_commit: info.head,
    files: info.files.length,
    bytes: info.bytes,
    prepared_at: new Date().toISOString(),
  };
  if (info.branch) ws.branch = info.branch;
  return ws;
}

export interface ExportResult {
  patch: string;
  base_commit: string;
  files_changed: number;
}

/** Count the files a git patch touches. */
export function countPatchFiles(patch: string): number {
  let n = 0;
  for (const line of patch.split('\n')) if (line.startsWith('diff --git ')) n++;
  return n;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The guest workspace's changes since `base` (default: its base commit) as a binary git patch. */
export async function exportWorkspace(
  run: GuestRunner,
  ws: Workspace,
  base: string | undefined,
  opts: { signal?: AbortSignal } = {},
): Promise<ExportResult> {
  const rev = base ?? ws.base_commit;
  if (rev.startsWith('-')) throw new VmError('invalid', `base commit "${rev}" must not start with -`);
  const once = async (forceBinary: boolean): Promise<{ base: string; patch: string } | undefined> => {
    const r = await run(exportScript(ws.guest_path, rev, forceBinary), {
      timeoutMs: 5 * 60_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (r.code !== 0) throw guestFailure(`exporting ${ws.guest_path}`, r);
    const nl = r.stdout.indexOf(10);
    const resolved = r.stdout
      .subarray(0, nl < 0 ? r.stdout.length : nl)
      .toString('latin1')
      .trim();
    const body = nl < 0 ? Buffer.alloc(0) : r.stdout.subarray(nl + 1);
    try {
      return { base: resolved, patch: utf8.decode(body) };
    } catch {
      return undefined; // text that is not UTF-8 cannot travel in JSON as is
    }
  };
  // Text files that are not UTF-8 go as binary hunks (ASCII), which survive JSON intact.
  const out = (await once(false)) ?? (await once(true));
  if (!out) throw new VmError('failed', 'the patch could not be encoded as text');
  return { patch: out.patch, base_commit: out.base, files_changed: countPatchFiles(out.patch) };
}

const WORKSPACE_MODES: readonly string[] = ['tracked', 'full_copy'];

/** The workspace stored on a VM row (the store keeps it as opaque JSON), when it is one. */
export function asWorkspace(v: unknown): Workspace | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const w = v as Record<string, unknown>;
  const ok =
    typeof w.host_path === 'string' &&
    typeof w.guest_path === 'string' &&
    typeof w.mode === 'string' &&
    WORKSPACE_MODES.includes(w.mode) &&
    typeof w.include_untracked === 'boolean' &&
    typeof w.base_commit === 'string' &&
    typeof w.files === 'number' &&
    typeof w.bytes === 'number' &&
    typeof w.prepared_at === 'string' &&
    (w.branch === undefined || typeof w.branch === 'string');
  if (!ok) return undefined;
  const ws: Workspace = {
    host_path: w.host_path as string,
    guest_path: w.guest_path as string,
    mode: w.mode as WorkspaceMode,
    include_untracked: w.include_untracked as boolean,
    base_commit: w.base_commit as string,
    files: w.files as number,
    bytes: w.bytes as number,
    prepared_at: w.prepared_at as string,
  };
  if (typeof w.branch === 'string') ws.branch = w.branch;
  return ws;
}
