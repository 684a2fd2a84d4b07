// Booting a VM's VMM and waiting until its guest is ready: shared by create and start.
import { appendFile } from 'node:fs/promises';
import type { Accel, VmLaunchSpec } from '../engine/index.ts';
import type { Logger } from '../log/logger.ts';
import { currentOpId } from '../rpc/context.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import type { KernelRow, VmRow } from '../store/index.ts';
import { waitForAgentReady } from './agent.ts';
import { vmFiles } from './layout.ts';
import { releasePort, reservePort } from './ports.ts';
import type { VmRuntime } from './runtime.ts';
import { hostKeyAlias, sshExec, type SshPaths, type SshTarget } from './ssh.ts';

/** Pause between `ssh true` attempts once the agent said sshd is up. */
export const READY_POLL_MS = 300;

export interface MachineDeps {
  stateDir: string;
  runtime: VmRuntime;
  log: Logger;
  ssh: SshPaths;
  accel: () => Promise<Accel>;
  /** How long a guest may take from VMM start to SSH answering. */
  readyTimeoutMs: number;
}

/** The guest kernel command line for a VM (the engine adds console, TSC and panic settings). */
export function guestCmdline(vm: Pick<VmRow, 'name' | 'networkMode'>): string {
  // loglevel=6 keeps the kernel banner (KERN_NOTICE) on the console for `vm logs`, and hides
  // the chatter; systemd reports only slow or failed units there.
  const parts = ['root=LABEL=banger-root', 'rw', 'net.ifnames=0', 'loglevel=6', 'systemd.show_status=auto'];
  if (vm.networkMode === 'user') {
    // QEMU's user-mode network is always 10.0.2.0/24 with the host at .2 and DNS at .3.
    parts.push(`ip=10.0.2.15::10.0.2.2:255.255.255.0:${vm.name}:eth0:off:10.0.2.3`);
  }
  return parts.join(' ');
}

export function launchSpec(
  vm: VmRow,
  kernel: KernelRow,
  stateDir: string,
  accel: Accel,
  sshHostPort: number,
): VmLaunchSpec {
  const f = vmFiles(stateDir, vm.id);
  const spec: VmLaunchSpec = {
    id: vm.id,
    vmDir: f.dir,
    kernel: kernel.kernelPath,
    cmdline: guestCmdline(vm),
    vcpus: vm.vcpus,
    memoryMiB: vm.memoryMib,
    disks: [
      { path: f.overlay, format: 'qcow2' },
      { path: f.seed, format: 'raw', readOnly: true },
    ],
    net: { mode: 'user', sshHostPort, mac: vm.mac },
    serialLog: f.serialLog,
    agentSocket: f.agentSocket,
    accel,
  };
  if (kernel.initrdPath) spec.initrd = kernel.initrdPath;
  return spec;
}

/** Write a host-side marker into the VM's console log, so the console shows where an op began. */
export async function markSerial(stateDir: string, vm: VmRow, what: string): Promise<void> {
  const opId = currentOpId() ?? 'op-none';
  await appendFile(vmFiles(stateDir, vm.id).serialLog, `\nbanger: ${opId} ${what} begins\n`).catch(
    () => undefined,
  );
}

/** Start the VMM for a VM; returns once it runs (not yet ready). */
export async function bootVmm(d: MachineDeps, vm: VmRow, kernel: KernelRow, what: string): Promise<void> {
  const accel = await d.accel();
  const port = await reservePort();
  try {
    const plan = d.runtime.driver.prepare(launchSpec(vm, kernel, d.stateDir, accel, port));
    await markSerial(d.stateDir, vm, what);
    const handle = await d.runtime.driver.start(plan, { logger: d.log });
    d.runtime.attach(vm.id, handle);
  } finally {
    releasePort(port);
  }
}

export function sshTarget(d: MachineDeps, vm: VmRow): SshTarget | undefined {
  const h = d.runtime.get(vm.id);
  const port = h?.record.sshHostPort;
  if (!port) return undefined;
  return { host: '127.0.0.1', port, user: 'root', alias: hostKeyAlias(vm.name) };
}

/**
 * When the guest reached each readiness stage, in ms since the wait began (the VMM had just
 * started): the agent's `banger-userspace` line, its `banger-ready` line (sshd accepts
 * connections), and the first `ssh true` that succeeded.
 */
export interface ReadyTimes {
  userspaceMs?: number;
  sshdMs?: number;
  sshMs: number;
}

const READY_DETAIL_PREFIX = 'since VMM start:';

/** The wait_ready step's closing detail, e.g. `since VMM start: userspace 9.81 s, sshd 14.20 s, ssh 15.05 s`. */
export function formatReadyTimes(t: ReadyTimes): string {
  const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
  const parts: string[] = [];
  if (t.userspaceMs !== undefined) parts.push(`userspace ${s(t.userspaceMs)}`);
  if (t.sshdMs !== undefined) parts.push(`sshd ${s(t.sshdMs)}`);
  parts.push(`ssh ${s(t.sshMs)}`);
  return `${READY_DETAIL_PREFIX} ${parts.join(', ')}`;
}

/** The inverse of formatReadyTimes (10 ms resolution); undefined for any other detail. */
export function parseReadyTimes(detail: string | undefined): ReadyTimes | undefined {
  if (!detail?.startsWith(READY_DETAIL_PREFIX)) return undefined;
  const found = new Map<string, number>();
  for (const m of detail.matchAll(/\b(userspace|sshd|ssh) (\d+(?:\.\d+)?) s\b/g)) {
    found.set(m[1]!, Math.round(Number(m[2]) * 1000));
  }
  const sshMs = found.get('ssh');
  if (sshMs === undefined) return undefined;
  const t: ReadyTimes = { sshMs };
  const u = found.get('userspace');
  if (u !== undefined) t.userspaceMs = u;
  const r = found.get('sshd');
  if (r !== undefined) t.sshdMs = r;
  return t;
}

/**
 * Wait until the guest is ready: the agent says sshd is up, then `ssh true` succeeds with the
 * pinned host key. Fails early when the VMM exits. Returns when each stage was reached.
 */
export async function waitReady(
  d: MachineDeps,
  vm: VmRow,
  signal: AbortSignal,
  onProgress?: (detail: string) => void,
): Promise<{ bootId?: string; times: ReadyTimes }> {
  const deadline = Date.now() + d.readyTimeoutMs;
  const t0 = performance.now();
  const since = (): number => Math.round(performance.now() - t0);
  let userspaceMs: number | undefined;
  const files = vmFiles(d.stateDir, vm.id);
  const agent = await waitForAgentReady(files.agentSocket, {
    timeoutMs: d.readyTimeoutMs,
    signal,
    alive: () => d.runtime.isRunning(vm.id),
    onLine: (l) => {
      if (l === 'banger-userspace' && userspaceMs === undefined) {
        userspaceMs = since();
        onProgress?.('guest userspace is up');
      }
    },
  });
  const sshdMs = since();
  if (signal.aborted) throw new ErrorResponse('canceled', `waiting for ${vm.name} was canceled`);
  if (!d.runtime.isRunning(vm.id)) {
    throw new ErrorResponse(
      'operation_failed',
      `the VMM of ${vm.name} exited during boot; read the console with: banger vm logs ${vm.name}`,
    );
  }
  if (!agent.ready) {
    const stage = agent.userspace ? 'userspace up, sshd not ready' : 'kernel booting, userspace not up';
    throw new ErrorResponse(
      'operation_failed',
      `${vm.name} was not ready within ${Math.round(d.readyTimeoutMs / 1000)} s (${stage}); read the console with: banger vm logs ${vm.name}`,
    );
  }
  onProgress?.('sshd is up; checking ssh');
  let last = '';
  while (Date.now() < deadline) {
    const t = sshTarget(d, vm);
    if (!t) break;
    const r = await sshExec(d.ssh, t, 'true', { timeoutMs: 15_000, signal });
    if (r.code === 0) {
      const times: ReadyTimes = { sshdMs, sshMs: since() };
      if (userspaceMs !== undefined) times.userspaceMs = userspaceMs;
      return agent.bootId ? { bootId: agent.bootId, times } : { times };
    }
    last = r.stderr.trim();
    if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/.test(last)) {
      throw new ErrorResponse(
        'operation_failed',
        `${vm.name}: host key does not match the pinned key (${last})`,
      );
    }
    if (signal.aborted) throw new ErrorResponse('canceled', `waiting for ${vm.name} was canceled`);
    await new Promise((r2) => setTimeout(r2, READY_POLL_MS));
  }
  throw new ErrorResponse(
    'operation_failed',
    `${vm.name}: ssh did not answer (${last || 'timeout'}); see banger vm logs ${vm.name}`,
  );
}
