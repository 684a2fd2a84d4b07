// The guest kernel comes from Debian: the meta package (linux-image-cloud-amd64) names the current
// ABI package, which is downloaded (cached by exact version), unpacked with dpkg-deb -x into a
// folder (never installed on the host) and given a modules.dep with depmod -b. Security updates
// remove old ABI packages from the mirror, so the ABI is resolved at build time, not pinned.
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { aptDownload, aptShow, type AptContext } from './apt.ts';
import { run } from './exec.ts';

export interface PackageRef {
  name: string;
  version: string;
}

/** `linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)` → the first package named in a Depends field. */
export function firstDependency(depends: string): string | undefined {
  const first = depends.split(',')[0]?.split('|')[0]?.trim();
  const m = first ? /^([a-z0-9][a-z0-9+.-]+)/.exec(first) : null;
  return m?.[1];
}

/** Resolve the kernel meta package to the ABI package and its candidate version. */
export async function resolveKernelPackage(
  apt: AptContext,
  metaPackage: string,
  signal?: AbortSignal,
): Promise<PackageRef> {
  const meta = await aptShow(apt, metaPackage, signal);
  const abi = firstDependency(meta.Depends ?? '');
  if (!abi || !abi.startsWith('linux-image-')) {
    throw new Error(
      `${metaPackage}: cannot find the kernel ABI package in Depends: ${meta.Depends ?? '(none)'}`,
    );
  }
  const fields = await aptShow(apt, abi, signal);
  if (!fields.Version) throw new Error(`${abi}: no candidate version`);
  return { name: abi, version: fields.Version };
}

export async function resolvePackage(
  apt: AptContext,
  name: string,
  signal?: AbortSignal,
): Promise<PackageRef> {
  const fields = await aptShow(apt, name, signal);
  if (!fields.Version) throw new Error(`${name}: no candidate version`);
  return { name, version: fields.Version };
}

export async function downloadPackage(
  apt: AptContext,
  ref: PackageRef,
  debsDir: string,
  signal?: AbortSignal,
): Promise<{ path: string; cached: boolean }> {
  return aptDownload(apt, ref.name, ref.version, 'amd64', debsDir, signal);
}

export interface ExtractedKernel {
  /** Kernel release, e.g. 6.1.0-56-cloud-amd64 (the /lib/modules directory name). */
  version: string;
  /** Where the package was unpacked (boot/, lib/modules/VERSION/). */
  root: string;
  vmlinuz: string;
  modulesDir: string;
}

/** Unpack a linux-image .deb into destDir and run depmod on it. */
export async function extractKernel(
  deb: string,
  destDir: string,
  signal?: AbortSignal,
): Promise<ExtractedKernel> {
  await rm(destDir, { recursive: true, force: true });
  await mkdir(destDir, { recursive: true });
  await run(['dpkg-deb', '-x', deb, destDir], { signal });
  const boot = await readdir(join(destDir, 'boot')).catch(() => [] as string[]);
  const image = boot.find((f) => f.startsWith('vmlinuz-'));
  if (!image) throw new Error(`${deb}: no boot/vmlinuz-* inside`);
  const version = image.slice('vmlinuz-'.length);
  // Debian bookworm ships modules under /lib/modules; newer releases under /usr/lib/modules.
  let base = destDir;
  const modulesDir = join(destDir, 'lib', 'modules', version);
  const hasLib = await readdir(join(destDir, 'lib', 'modules')).then(
    (d) => d.includes(version),
    () => false,
  );
  if (!hasLib) {
    base = join(destDir, 'usr');
    await readdir(join(base, 'lib', 'modules', version));
  }
  await run(['depmod', '-b', base, version], { signal });
  return {
    version,
    root: base,
    vmlinuz: join(destDir, 'boot', image),
    modulesDir: hasLib ? modulesDir : join(base, 'lib', 'modules', version),
  };
}

/** Unpack one file out of a .deb (e.g. bin/busybox from busybox-static) into destDir. */
export async function extractFromDeb(
  deb: string,
  inner: string,
  destDir: string,
  signal?: AbortSignal,
): Promise<string> {
  await rm(destDir, { recursive: true, force: true });
  await mkdir(destDir, { recursive: true });
  await run(['dpkg-deb', '-x', deb, destDir], { signal });
  const path = join(destDir, inner);
  await readdir(join(path, '..'));
  return path;
}
