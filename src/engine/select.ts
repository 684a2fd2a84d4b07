// Which VMM driver a daemon runs: the config's `engine` ("qemu", the default, or "firecracker"),
// unless the chosen one cannot run on this host. Firecracker needs its binary and a usable KVM
// (it has no emulation fallback); when either is missing the daemon runs QEMU and says why in
// `daemon status` and `banger doctor`, rather than failing every create.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { DriverName } from './driver.ts';

export type EngineName = DriverName;

export interface EngineHost {
  /** Absolute path of an executable on PATH, or undefined. */
  findBinary(name: string): string | undefined;
  /** Whether /dev/kvm exists and this process may open it read-write (and why not). */
  kvm(): { usable: true } | { usable: false; why: string };
}

export interface EngineSelection {
  driver: EngineName;
  /** The firecracker binary, when it is the driver. */
  binary?: string;
  reason: string;
}

export function selectEngine(want: EngineName, host: EngineHost): EngineSelection {
  if (want === 'qemu') return { driver: 'qemu', reason: 'engine = "qemu" (the default)' };
  const binary = host.findBinary('firecracker');
  if (!binary)
    return {
      driver: 'qemu',
      reason: 'engine = "firecracker" is configured, but no firecracker binary is on PATH; running QEMU',
    };
  const kvm = host.kvm();
  if (!kvm.usable)
    return {
      driver: 'qemu',
      reason: `engine = "firecracker" is configured, but Firecracker needs KVM and ${kvm.why}; running QEMU (TCG works without KVM)`,
    };
  return { driver: 'firecracker', binary, reason: `engine = "firecracker" (${binary})` };
}

export const hostEngine: EngineHost = {
  findBinary(name) {
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      if (!dir) continue;
      const p = join(dir, name);
      try {
        accessSync(p, constants.X_OK);
        return p;
      } catch {
        // not here
      }
    }
    return undefined;
  },
  kvm() {
    try {
      accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
      return { usable: true };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return {
        usable: false,
        why: code === 'ENOENT' ? 'there is no /dev/kvm' : `/dev/kvm cannot be opened (${code ?? 'error'})`,
      };
    }
  },
};
