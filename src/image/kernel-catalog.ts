// The guest kernels a Debian archive offers, read from banger's private apt index (src/image/apt.ts,
// the one the default image build uses), and the fetch of one of them the way the build does it:
// download (cached by exact version), SHA-256 against the index, `dpkg-deb -x` (never installed on
// the host), depmod, and the initramfs from the same generator with the recipe's modules.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { aptSearchNames, aptShowMany, aptUpdate, type AptContext } from './apt.ts';
import { buildInitramfs } from './initramfs.ts';
import {
  downloadPackage,
  extractFromDeb,
  extractKernel,
  firstDependency,
  type ExtractedKernel,
} from './kernel.ts';
import type { ImageRecipe } from './recipe.ts';

export interface CatalogEntry {
  /** The kernel release, e.g. 6.1.0-28-cloud-amd64: what `kernel pull` takes. */
  release: string;
  package: string;
  version: string;
  flavour: string;
  sizeBytes: number;
  installedSizeBytes?: number;
  /** The package's SHA-256 in the index (what the download is checked against). */
  sha256?: string;
  /** The newest of its flavour: what the flavour's meta package depends on. */
  latest: boolean;
  /** Meta packages (without linux-image-) that name this one: `cloud-amd64`, `6.12-cloud-amd64`. */
  aliases: string[];
}

/**
 * `linux-image-<abi>-<flavour>`: abi is the upstream version plus Debian's ABI number
 * (6.1.0-28) or suffix (6.12.118+deb12); the flavour starts with a letter (amd64, cloud-amd64,
 * rt-amd64). Meta packages have no ABI part (linux-image-cloud-amd64, linux-image-6.12-amd64)
 * and do not match.
 */
const KERNEL_PACKAGE = /^linux-image-(\d+\.\d+[\d.]*(?:-\d+|\+[a-z0-9.]+))-([a-z][a-z0-9-]*)$/;

/** Not kernels of their own: debug symbols, the unsigned twin of a signed package, templates. */
const NOT_A_KERNEL = /-(dbg|unsigned|signed-template)$/;

/** The catalog entry of one package's control fields; undefined when it is not a real kernel. */
export function catalogEntry(f: Record<string, string>): CatalogEntry | undefined {
  const pkg = f.Package ?? '';
  const m = KERNEL_PACKAGE.exec(pkg);
  if (!m?.[1] || !m[2] || NOT_A_KERNEL.test(m[2])) return undefined;
  if (f.Architecture !== undefined && f.Architecture !== 'amd64') return undefined;
  if (!f.Version) return undefined;
  const e: CatalogEntry = {
    release: `${m[1]}-${m[2]}`,
    package: pkg,
    version: f.Version,
    flavour: m[2],
    sizeBytes: Number(f.Size ?? 0) || 0,
    latest: false,
    aliases: [],
  };
  const installed = Number(f['Installed-Size']);
  if (Number.isInteger(installed) && installed > 0) e.installedSizeBytes = installed * 1024;
  if (f.SHA256 && /^[0-9a-f]{64}$/.test(f.SHA256)) e.sha256 = f.SHA256;
  return e;
}

/** Compare versions chunk by chunk, digits numerically (6.1.0-9 < 6.1.0-28). */
export function naturalCompare(a: string, b: string): number {
  const pa = a.match(/\d+|\D+/g) ?? [];
  const pb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    if (x === y) continue;
    const nx = /^\d/.test(x) ? Number(x) : NaN;
    const ny = /^\d/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) return nx - ny;
    return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * Entries from the index's paragraphs (kernel packages and the flavours' meta packages): one per
 * release, by flavour then newest first; `latest` from the meta package's Depends (the newest by
 * version when the archive has no meta package for the flavour).
 */
export function buildCatalog(paragraphs: readonly Record<string, string>[]): CatalogEntry[] {
  const byRelease = new Map<string, CatalogEntry>();
  const metaTarget = new Map<string, string>();
  for (const f of paragraphs) {
    const e = catalogEntry(f);
    if (e) {
      const have = byRelease.get(e.release);
      if (!have || naturalCompare(e.version, have.version) > 0) byRelease.set(e.release, e);
      continue;
    }
    const meta = /^linux-image-([a-z0-9][a-z0-9.+-]*)$/.exec(f.Package ?? '');
    const dep = firstDependency(f.Depends ?? '');
    if (meta?.[1] && !NOT_A_KERNEL.test(meta[1]) && dep && KERNEL_PACKAGE.test(dep)) {
      metaTarget.set(meta[1], dep);
    }
  }
  const entries = [...byRelease.values()].sort(
    (a, b) =>
      (a.flavour < b.flavour ? -1 : a.flavour > b.flavour ? 1 : 0) ||
      naturalCompare(b.release, a.release) ||
      naturalCompare(b.version, a.version),
  );
  for (const e of entries) {
    const target = metaTarget.get(e.flavour);
    const sameFlavour = entries.filter((x) => x.flavour === e.flavour);
    e.latest = target !== undefined ? target === e.package : sameFlavour[0] === e;
    e.aliases = [...metaTarget].filter(([, pkg]) => pkg === e.package).map(([alias]) => alias);
    if (e.latest && !e.aliases.includes(e.flavour)) e.aliases.unshift(e.flavour);
  }
  return entries;
}

/** Refresh the private index (strictly: a source that cannot be read is an error) and list it. */
export async function readCatalog(apt: AptContext, signal?: AbortSignal): Promise<CatalogEntry[]> {
  await aptUpdate(apt, signal, { strict: true });
  const names = await aptSearchNames(apt, '^linux-image-', signal);
  // Kernel packages and the meta packages that name them (their Depends give `latest`).
  const wanted = names.filter((n) => !NOT_A_KERNEL.test(n));
  return buildCatalog(await aptShowMany(apt, wanted, signal));
}

export type FindResult = { entry: CatalogEntry } | { entry?: undefined; suggestions: string[] };

/**
 * A catalog name (release), package name, or meta package name (flavour, e.g. cloud-amd64, or
 * series, e.g. 6.12-cloud-amd64; with or without linux-image-) → its entry.
 */
export function findInCatalog(entries: readonly CatalogEntry[], name: string): FindResult {
  const bare = name.replace(/^linux-image-/, '');
  const hit =
    entries.find((e) => e.release === name || e.package === name) ??
    entries.find((e) => e.aliases.includes(bare));
  if (hit) return { entry: hit };
  return { suggestions: closeMatches(name, entries) };
}

/**
 * Up to five catalog names near `name`: by edit distance, less half the length of the shared
 * prefix (a release mistyped near its end, 6.12.118-cloud-amd64, is nearer 6.12.118+deb12-…
 * than 6.1.0-48-…), within a third of the name's length.
 */
export function closeMatches(name: string, entries: readonly CatalogEntry[]): string[] {
  const bare = name.replace(/^linux-image-/, '');
  const limit = Math.max(3, Math.floor(bare.length / 3));
  const prefix = (a: string, b: string): number => {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    return i;
  };
  const scored = entries
    .map((e) => ({ name: e.release, d: editDistance(bare, e.release), p: prefix(bare, e.release) }))
    .filter((s) => s.d <= limit || s.p >= Math.min(bare.length, 8))
    .sort((a, b) => a.d - a.p / 2 - (b.d - b.p / 2) || naturalCompare(b.name, a.name));
  return [...new Set(scored.map((s) => s.name))].slice(0, 5);
}

export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

export async function sha256File(path: string, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, signal ? { signal } : {})) h.update(chunk as Buffer);
  return h.digest('hex');
}

export type PullStep = 'download' | 'verify' | 'extract' | 'initramfs';

export interface FetchKernelOptions {
  apt: AptContext;
  entry: CatalogEntry;
  /** The busybox package's candidate (from the same index), for the initramfs. */
  busybox: CatalogEntry | { package: string; version: string; sha256?: string };
  /** .deb cache shared with the image builder (files named by exact version). */
  debsDir: string;
  /** Scratch directory: the package is unpacked here. */
  workDir: string;
  /** The initramfs: where it is written. */
  initrdOut: string;
  recipe: ImageRecipe;
  onStep?: (step: PullStep, phase: 'start' | 'done', detail?: string) => void;
  signal?: AbortSignal;
}

export interface FetchedKernel extends ExtractedKernel {
  /** The kernel's .deb was in the download cache already. */
  cached: boolean;
  initrd: { size: number; modules: string[]; missing: string[] };
}

/** Download, verify, unpack and build the initramfs of one catalog kernel (steps as the build's). */
export async function fetchKernel(o: FetchKernelOptions): Promise<FetchedKernel> {
  const { signal } = o;
  const step = async <T>(name: PullStep, fn: () => Promise<T>, done: (r: T) => string): Promise<T> => {
    o.onStep?.(name, 'start');
    const r = await fn();
    o.onStep?.(name, 'done', done(r));
    return r;
  };
  const debs = await step(
    'download',
    async () => {
      const kernel = await downloadPackage(
        o.apt,
        { name: o.entry.package, version: o.entry.version },
        o.debsDir,
        signal,
      );
      const busybox = await downloadPackage(
        o.apt,
        { name: o.busybox.package, version: o.busybox.version },
        o.debsDir,
        signal,
      );
      return { kernel, busybox };
    },
    (r) => `${o.entry.package} ${o.entry.version} ${r.kernel.cached ? '(cached .deb)' : '(downloaded)'}`,
  );
  await step(
    'verify',
    async () => {
      // apt-get download checks against the index already; this keeps a cached file honest too.
      for (const [what, path, want] of [
        [o.entry.package, debs.kernel.path, o.entry.sha256],
        [o.busybox.package, debs.busybox.path, o.busybox.sha256],
      ] as const) {
        if (want === undefined) continue;
        const got = await sha256File(path, signal);
        if (got !== want) {
          throw new Error(`${what}: ${path} has SHA-256 ${got}, the archive's index says ${want}`);
        }
      }
    },
    () => 'SHA-256 matches the archive index',
  );
  const kernel = await step(
    'extract',
    () => extractKernel(debs.kernel.path, join(o.workDir, 'pkg'), signal),
    (k) => `kernel ${k.version}`,
  );
  if (kernel.version !== o.entry.release) {
    throw new Error(`${o.entry.package} holds kernel ${kernel.version}, not ${o.entry.release}`);
  }
  const busybox = await extractFromDeb(debs.busybox.path, 'bin/busybox', join(o.workDir, 'busybox'), signal);
  const initrd = await step(
    'initramfs',
    () =>
      buildInitramfs({
        kernelRoot: kernel.root,
        kernelVersion: kernel.version,
        busybox,
        wantedModules: o.recipe.initramfsModules,
        requiredModules: o.recipe.requiredModules,
        rootLabel: o.recipe.rootLabel,
        seedLabel: o.recipe.seedLabel,
        workDir: join(o.workDir, 'initramfs-work'),
        out: o.initrdOut,
        signal,
      }),
    (r) =>
      `${r.modules.length} modules, ${Math.round(r.size / 1024)} KiB` +
      (r.missing.length ? `; not available: ${r.missing.join(', ')}` : ''),
  );
  return { ...kernel, cached: debs.kernel.cached, initrd };
}

/** A package's candidate version and index checksum (busybox-static for the initramfs). */
export async function resolveWithChecksum(
  apt: AptContext,
  name: string,
  signal?: AbortSignal,
): Promise<{ package: string; version: string; sha256?: string }> {
  const f = (await aptShowMany(apt, [name], signal))[0];
  if (!f?.Version) throw new Error(`${name}: not in the archive's index`);
  const r: { package: string; version: string; sha256?: string } = { package: name, version: f.Version };
  if (f.SHA256 && /^[0-9a-f]{64}$/.test(f.SHA256)) r.sha256 = f.SHA256;
  return r;
}

/** The archive URIs of sources.list text (`deb [options] URI suite components`). */
export function sourceUris(sourcesListText: string): string[] {
  const uris = sourcesListText
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('deb '))
    .flatMap((l) => /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/.exec(l)?.[1] ?? []);
  return [...new Set(uris)];
}

/**
 * An index refresh that failed, reworded: which archive, and apt's own error lines (Failed to
 * fetch URL, connection refused, ...) rather than the whole command line with its -o options.
 */
export function archiveError(err: unknown, sourcesListText: string): Error {
  const stderr = (err as { stderr?: unknown }).stderr;
  const text = typeof stderr === 'string' ? stderr : err instanceof Error ? err.message : String(err);
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^(E|Err|W):/.test(l))
    .slice(0, 6);
  const why = lines.length > 0 ? lines.join('\n') : text.trim().split('\n').slice(-3).join('\n');
  return new Error(`cannot read the Debian archive ${sourceUris(sourcesListText).join(', ')}:\n${why}`, {
    cause: err,
  });
}

/**
 * The default name of a pulled kernel: its release, made a valid resource name (a `+`, as in
 * 6.12.118+deb12-amd64, becomes `-`).
 */
export function defaultKernelName(release: string): string {
  return release.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
}
