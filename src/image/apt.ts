// A private apt setup under the cache directory: its own sources.list, lists and package cache,
// so `apt-get update` and `apt-get download` work for an unprivileged user and never touch (or
// depend on) the host's apt state. Packages are downloaded, never installed on the host.
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './exec.ts';

export interface AptContext {
  dir: string;
  /** `-o` options that point apt at the private state. */
  options: string[];
}

export async function prepareApt(dir: string, sourcesListText: string): Promise<AptContext> {
  const etc = join(dir, 'etc');
  const state = join(dir, 'state');
  const cache = join(dir, 'cache');
  await mkdir(join(etc, 'sources.list.d'), { recursive: true });
  await mkdir(join(etc, 'preferences.d'), { recursive: true });
  await mkdir(join(state, 'lists', 'partial'), { recursive: true });
  await mkdir(join(cache, 'archives', 'partial'), { recursive: true });
  await writeFile(join(etc, 'sources.list'), sourcesListText);
  await writeFile(join(state, 'status'), '');
  const options = [
    `Dir::Etc::SourceList=${join(etc, 'sources.list')}`,
    `Dir::Etc::SourceParts=${join(etc, 'sources.list.d')}`,
    `Dir::Etc::Preferences=${join(etc, 'preferences')}`,
    `Dir::Etc::PreferencesParts=${join(etc, 'preferences.d')}`,
    `Dir::State=${state}`,
    `Dir::State::status=${join(state, 'status')}`,
    `Dir::Cache=${cache}`,
    'APT::Architecture=amd64',
    'APT::Architectures=amd64',
    'Acquire::Languages=none',
    'Acquire::Retries=3',
  ];
  // As root apt drops to _apt for downloads, which cannot write a private root-owned cache.
  if (process.getuid?.() === 0) options.push('APT::Sandbox::User=root');
  return { dir, options: options.flatMap((o) => ['-o', o]) };
}

export async function aptUpdate(
  ctx: AptContext,
  signal?: AbortSignal,
  opts: { strict?: boolean } = {},
): Promise<void> {
  // apt-get update exits 0 when a source cannot be fetched (it warns and keeps the old lists);
  // strict makes that an error, for callers whose answer is only as good as the fresh index.
  const strict = opts.strict === true ? ['--error-on=any'] : [];
  await run(['apt-get', ...ctx.options, '-q', ...strict, 'update'], { signal });
}

/** Names of the packages in the index whose names match an extended regex. */
export async function aptSearchNames(
  ctx: AptContext,
  pattern: string,
  signal?: AbortSignal,
): Promise<string[]> {
  const { stdout } = await run(['apt-cache', ...ctx.options, 'search', '--names-only', pattern], {
    signal,
  });
  return [...new Set(stdout.split('\n').flatMap((l) => /^(\S+) - /.exec(l)?.[1] ?? []))].sort();
}

/** The candidate versions' control fields of several packages (one `apt-cache show` call). */
export async function aptShowMany(
  ctx: AptContext,
  pkgs: readonly string[],
  signal?: AbortSignal,
): Promise<Record<string, string>[]> {
  if (pkgs.length === 0) return [];
  const { stdout } = await run(['apt-cache', ...ctx.options, 'show', '--no-all-versions', ...pkgs], {
    signal,
  });
  return parseParagraphs(stdout);
}

/** Every deb822 paragraph of a text (blank-line separated), each parsed like parseControl. */
export function parseParagraphs(text: string): Record<string, string>[] {
  return text
    .split(/\n\s*\n/)
    .filter((p) => p.trim() !== '')
    .map(parseControl)
    .filter((f) => Object.keys(f).length > 0);
}

/** The candidate version's control fields (`apt-cache show --no-all-versions`). */
export async function aptShow(
  ctx: AptContext,
  pkg: string,
  signal?: AbortSignal,
): Promise<Record<string, string>> {
  const { stdout } = await run(['apt-cache', ...ctx.options, 'show', '--no-all-versions', pkg], { signal });
  return parseControl(stdout);
}

/** Parse one deb822 paragraph (the first) into field → value. */
export function parseControl(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  let key: string | undefined;
  for (const line of text.split('\n')) {
    if (line === '') {
      if (key !== undefined) break;
      continue;
    }
    if (/^\s/.test(line) && key !== undefined) {
      fields[key] = `${fields[key] ?? ''}\n${line.trim()}`;
      continue;
    }
    const m = /^([\w.-]+):\s*(.*)$/.exec(line);
    if (m?.[1] !== undefined) {
      key = m[1];
      fields[key] = m[2] ?? '';
    }
  }
  return fields;
}

/** The file name apt-get download gives a package version (the epoch's colon is escaped). */
export function debFileName(pkg: string, version: string, arch: string): string {
  return `${pkg}_${version.replaceAll(':', '%3a')}_${arch}.deb`;
}

/**
 * Download pkg=version into debsDir unless that exact file is there already; returns its path.
 * apt-get download verifies the checksum from the signed index and writes the file only when
 * complete, so a present file is a good one.
 */
export async function aptDownload(
  ctx: AptContext,
  pkg: string,
  version: string,
  arch: string,
  debsDir: string,
  signal?: AbortSignal,
): Promise<{ path: string; cached: boolean }> {
  await mkdir(debsDir, { recursive: true });
  const name = debFileName(pkg, version, arch);
  const have = await readdir(debsDir);
  if (have.includes(name)) return { path: join(debsDir, name), cached: true };
  await run(['apt-get', ...ctx.options, '-q', 'download', `${pkg}=${version}`], { cwd: debsDir, signal });
  const after = await readdir(debsDir);
  if (!after.includes(name)) throw new Error(`apt-get download ${pkg}=${version} did not produce ${name}`);
  return { path: join(debsDir, name), cached: false };
}
