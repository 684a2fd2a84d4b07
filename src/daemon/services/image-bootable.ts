// The `bootable` step's dependency: makeBootable from src/image/prepare.ts (boots a short-lived
// prepare VM that installs what the image lacks and banger's guest bits). Typed here by its
// contract and loaded on first use, so the pull service and its tests (which inject a fake) do
// not depend on the prepare module being present.
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BootableOptions {
  /** The raw ext4 root filesystem, writable. */
  rootfsPath: string;
  kernelPath: string;
  initrdPath: string;
  /** Scratch space of ours (the prepare VM's disk and serial log). */
  workDir: string;
  /** Replaces the image's apt sources during the install (config [images] apt_sources). */
  aptSources?: string;
  signal?: AbortSignal;
  onProgress?: (line: string) => void;
  qemu?: string;
}

export interface BootableResult {
  /** The distribution family found (debian, ubuntu, ...). */
  family: string;
  /** Packages installed. */
  installed: string[];
  /** The prepare VM's log. */
  log: string;
}

export type BootableFn = (o: BootableOptions) => Promise<BootableResult>;

let loaded: Promise<BootableFn> | undefined;

/** makeBootable from src/image/prepare.ts (.ts when run from source, .js when built). */
export function loadBootable(): Promise<BootableFn> {
  loaded ??= (async () => {
    const ext = extname(fileURLToPath(import.meta.url));
    const url = new URL(`../../image/prepare${ext}`, import.meta.url).href;
    const m = (await import(url)) as { makeBootable?: unknown };
    if (typeof m.makeBootable !== 'function') throw new Error(`${url} does not export makeBootable`);
    return m.makeBootable as BootableFn;
  })();
  return loaded;
}
