// The `bootable` step's dependency: makeBootable from src/image/prepare.ts (boots a short-lived
// prepare VM that installs what the image lacks, and banger's guest bits). The pull service takes
// it as an injectable function so its unit tests and the daemon's integration tests use a fake
// instead of booting a VM.
import type { Accel } from '../../engine/driver.ts';
import { makeBootable } from '../../image/prepare.ts';

export interface BootableOptions {
  /** The raw ext4 root filesystem, written in place. */
  rootfsPath: string;
  kernelPath: string;
  initrdPath: string;
  /** Scratch space of ours (the prepare VM's files and serial log). */
  workDir: string;
  /** Replaces the image's apt sources during the install (config [images] apt_sources). */
  aptSources?: string;
  signal?: AbortSignal;
  onProgress?: (line: string) => void;
  accel?: Accel;
}

export interface BootableResult {
  /** The distribution family found (debian, ...). */
  family: string;
  /** Packages installed. */
  installed: string[];
  /** The prepare VM's log. */
  log: string;
}

export type BootableFn = (o: BootableOptions) => Promise<BootableResult>;

/** The real step (tsc checks that prepare.ts's makeBootable fits the type). */
export const defaultBootable: BootableFn = makeBootable;
