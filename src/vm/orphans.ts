// VMM processes the daemon does not know: after a crash, a VMM may run whose VM record is gone
// or was never written (a create or template build killed between spawn and handles.json). They
// are found by what they run (qemu-system-* / firecracker), whom they belong to (this daemon's
// uid) and what their argv names (a path inside the state dir), never by name alone.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface VmmProcess {
  pid: number;
  argv: string[];
  /** The first argument under the state dir: tells which VM or template directory it belongs to. */
  dir: string;
}

const VMM_COMMS = /^(qemu-system-|firecracker)/;

/** Processes of `uid` running a VMM whose argv names a path under `stateDir`. */
export function findStateDirVmms(stateDir: string, uid: number, proc = '/proc'): VmmProcess[] {
  const prefix = stateDir.endsWith('/') ? stateDir : `${stateDir}/`;
  const out: VmmProcess[] = [];
  for (const name of readdirSync(proc)) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    try {
      const status = readFileSync(join(proc, name, 'status'), 'utf8');
      const owner = /^Uid:\s+(\d+)/m.exec(status)?.[1];
      const state = /^State:\s+(\S)/m.exec(status)?.[1];
      if (Number(owner) !== uid || state === 'Z') continue;
      const comm = readFileSync(join(proc, name, 'comm'), 'utf8').trim();
      if (!VMM_COMMS.test(comm)) continue;
      const argv = readFileSync(join(proc, name, 'cmdline'), 'utf8')
        .split('\0')
        .filter((a) => a !== '');
      const hit = argv.map((a) => pathIn(a, prefix)).find((p) => p !== undefined);
      if (hit !== undefined) out.push({ pid, argv, dir: hit });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out;
}

/**
 * The VM or template directory an argument names: `<state>/vms/<id>`, `<state>/forks/<id>` or
 * `<state>/images/<image>/warm/<hash>` (QEMU options carry paths after `path=`/`file=` etc.).
 */
function pathIn(arg: string, prefix: string): string | undefined {
  const i = arg.indexOf(prefix);
  if (i < 0) return undefined;
  const rest = arg.slice(i + prefix.length).split(/[,:]/)[0] ?? '';
  const parts = rest.split('/');
  if (parts[0] === 'vms' && parts[1]) return `${prefix}vms/${parts[1]}`;
  // A fork's loader VMM (src/vm/fork.ts) runs in the fork's directory.
  if (parts[0] === 'forks' && parts[1]) return `${prefix}forks/${parts[1]}`;
  const w = parts.indexOf('warm');
  if (w > 0 && parts[w + 1]) return prefix + parts.slice(0, w + 2).join('/');
  return prefix + rest;
}
