// The parts of `banger vm run` that decide what it says and plans (the spec line, the --dry-run
// steps; pure), and the signal guard that keeps banger alive until --rm is done.
import type { VmCreatePlanResult, Vm, Workspace } from '../../generated/types.gen.ts';
import { DEFAULT_GUEST_PATH } from '../vm/workspace.ts';
import type { RepoInfo } from '../vm/workspace-repo.ts';
import { formatBytes } from './format.ts';
import { shellQuote } from '../util/shell.ts';
import { formatEgress } from '../egress/rules.ts';

/** `4G`, `512M`, or a byte count when it is neither. */
export function compactSize(bytes: number): string {
  const G = 1024 ** 3;
  const M = 1024 ** 2;
  if (bytes >= G && bytes % G === 0) return `${bytes / G}G`;
  if (bytes >= M && bytes % M === 0) return `${bytes / M}M`;
  return formatBytes(bytes);
}

/** The first line vm run prints: `spec: 2 vcpu · 1024 MiB · 4G disk · image debian-bookworm`. */
export function specLine(p: VmCreatePlanResult): string {
  const parts = [
    `${p.vcpus} vcpu`,
    `${p.memory_mib} MiB`,
    `${compactSize(p.disk_size_bytes)} disk`,
    `image ${p.image}${p.image_ready ? '' : ' (built first)'}`,
  ];
  if (p.network !== 'user') parts.push(`${p.network} network`);
  if (p.nat) parts.push('nat');
  // Only a restriction is news: `all` is what every VM had before egress policies.
  if (p.egress.mode !== 'all') parts.push(`egress ${formatEgress(p.egress)}`);
  return `spec: ${parts.join(' · ')}`;
}

export interface RunPlanInput {
  plan: VmCreatePlanResult;
  repo?: RepoInfo & { mode: Workspace['mode']; includeUntracked: boolean };
  command: readonly string[];
  rm: boolean;
  detach: boolean;
  bin: string;
  /** Where the work tree goes (default /root/repo; a devcontainer's workspaceFolder). */
  guestPath?: string;
  /** An image a devcontainer.json names that is not here yet: pulled first. */
  pull?: { reference: string; name: string };
  /** What a devcontainer.json adds after the copy (users, lifecycle commands, forwards), in words. */
  extraSteps?: readonly string[];
  /** The user commands run as, when not root. */
  runAs?: string;
}

/** The steps `vm run` would take, in words (the --dry-run output). */
export function planSteps(i: RunPlanInput): string[] {
  const p = i.plan;
  const steps: string[] = [];
  const guestPath = i.guestPath ?? DEFAULT_GUEST_PATH;
  if (i.pull) steps.push(`pull ${i.pull.reference} as image ${i.pull.name} (once; cached afterwards)`);
  else if (!p.image_ready) steps.push(`build the default image ${p.image} (once; a few minutes)`);
  steps.push(
    `create VM ${p.name}${p.name_generated ? ' (a random name; --name picks one)' : ''} from image ${p.image}: ${p.vcpus} vCPU, ${p.memory_mib} MiB, ${compactSize(p.disk_size_bytes)} disk, ${p.network} network${p.nat ? ' with NAT' : ''}`,
  );
  steps.push('boot it and wait until SSH answers');
  if (i.repo) {
    const r = i.repo;
    const kinds =
      r.mode === 'full_copy'
        ? 'files (tracked, submodules included)'
        : r.untracked > 0 || r.includeUntracked
          ? `files (${r.files.length - r.untracked} tracked, ${r.untracked} untracked)`
          : 'tracked files';
    steps.push(
      `copy ${r.files.length} ${kinds}, ${formatBytes(r.bytes)}, of ${r.root} at ${r.head.slice(0, 12)}${r.branch ? ` (${r.branch})` : ''} to ${guestPath}, with a shallow git history`,
    );
  }
  steps.push(...(i.extraSteps ?? []));
  const where = `${i.repo ? ` in ${guestPath}` : ''}${i.runAs !== undefined ? ` as ${i.runAs}` : ''}`;
  if (i.detach)
    steps.push(`return, leaving ${p.name} running (run things in it: ${i.bin} vm exec ${p.name} -- CMD)`);
  else if (i.command.length > 0)
    steps.push(`run ${shellQuote(i.command)}${where} and exit with its exit code`);
  else steps.push(`open an interactive shell${where}`);
  if (!i.detach) {
    steps.push(
      i.rm
        ? `delete ${p.name} when it ends (also on Ctrl-C)`
        : `leave ${p.name} running afterwards (delete it with: ${i.bin} vm delete ${p.name})`,
    );
  }
  return steps;
}

export interface VmRunDryRun {
  dry_run: true;
  spec: VmCreatePlanResult;
  workspace?: {
    host_path: string;
    guest_path: string;
    mode: Workspace['mode'];
    include_untracked: boolean;
    base_commit: string;
    branch?: string;
    files: number;
    untracked_files: number;
    bytes: number;
  };
  command: string[];
  steps: string[];
}

export interface VmRunDetached {
  vm: Vm;
  workspace?: Workspace;
  /** Ports a devcontainer.json forwards, held by ssh processes that outlive banger. */
  forwards?: { host_port: number; guest_host: string; guest_port: number; pid?: number }[];
}

/**
 * While the VM exists, SIGINT/SIGTERM/SIGHUP are recorded instead of killing banger (so --rm can
 * still delete it), and abort whatever call is in flight.
 */
export class SignalGuard {
  received: NodeJS.Signals | undefined;
  private readonly ac = new AbortController();
  private readonly handlers: [NodeJS.Signals, () => void][] = [];

  constructor(signals: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    for (const sig of signals) {
      const h = (): void => {
        this.received ??= sig;
        this.ac.abort();
      };
      process.on(sig, h);
      this.handlers.push([sig, h]);
    }
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  dispose(): void {
    for (const [sig, h] of this.handlers) process.off(sig, h);
  }
}
