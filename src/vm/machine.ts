// Booting a VM's VMM and waiting until its guest is ready: shared by create and start.
import { statSync } from 'node:fs';
import { appendFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Accel, VmLaunchSpec } from '../engine/index.ts';
import type { Logger } from '../log/logger.ts';
import type { SerialMarks } from '../ops/serial.ts';
import { currentOpId, noteOpVm } from '../rpc/context.ts';
import { VmError } from './errors.ts';
import type { KernelRow, VmRow } from '../store/index.ts';
import { waitForAgentReady } from './agent.ts';
import { vmFiles } from './layout.ts';
import { fileRam, prepareGuestRamDir } from './guest-ram.ts';
import { releasePort, reservePort } from './ports.ts';
import type { VmRuntime } from './runtime.ts';
import { hostKeyAlias, sshExec, type SshPaths, type SshTarget } from './ssh.ts';
import { bridgeIpArg, type GuestNet, type VmNetwork } from './network.ts';
import { proxied, userNetEgress, userRestricted, usesProxy, type EgressHooks } from '../egress/types.ts';
import { relayBuilt } from '../egress/relay.ts';

/** Pause between `ssh true` attempts once the agent said sshd is up. */
export const READY_POLL_MS = 300;
/**
 * A boot whose console shows nothing new for this long before userspace is up is stuck (seen
 * rarely under TCG on a loaded host: the kernel stops early and never resumes). A healthy boot
 * writes to the console every few seconds until userspace, even on a busy 2-core machine.
 */
export const BOOT_STALL_MS = 60_000;

/** The boot made no progress (see BOOT_STALL_MS); callers kill the VMM and boot once more. */
export class BootStalledError extends VmError {
  constructor(vmName: string, ms: number) {
    super(
      'failed',
      `${vmName}: the boot stalled (no console output for ${Math.round(ms / 1000)} s before userspace came up); read the console with: banger vm logs ${vmName}`,
    );
  }
}

export interface MachineDeps {
  stateDir: string;
  runtime: VmRuntime;
  log: Logger;
  ssh: SshPaths;
  accel: () => Promise<Accel>;
  /** How long a guest may take from VMM start to SSH answering. */
  readyTimeoutMs: number;
  /** Told where each op's console window begins (op trace attributes console lines to ops). */
  serialMarks?: SerialMarks;
  /**
   * TEST-ONLY fault injection (env BANGER_TEST_FAIL_STEP, read at daemon start): `boot` fails a
   * boot right after the console marker, before the VMM starts; `wait_ready` fails it once the
   * guest is ready; `reidentify` makes a warm clone's re-identification fail inside the guest
   * (through the guest agent), so the create falls back to a cold boot. The smoke tests use it to get a failed operation with console output.
   */
  testFailStep?: string;
  /** The VMs' network: bridge mode through the root helper; rootless, a null object (rootlessNetwork). */
  network: VmNetwork;
  /** Boot stall threshold (default BOOT_STALL_MS; tests shorten it). */
  bootStallMs?: number;
  /** Egress enforcement of user-mode VMs and the event ring (src/egress/types.ts); none in tests. */
  egress?: EgressHooks;
  /**
   * A tmpfs (normally /dev/shm) where booted VMs keep their RAM in a file (src/vm/guest-ram.ts:
   * what makes a fork's save cheap); absent (tests), anonymous RAM.
   */
  guestRamRoot?: string;
  /** Who owns the VMMs (default this process's uid): whose RAM directory a boot maps. */
  uid?: number;
}

export function injectedFault(d: MachineDeps, step: string): void {
  if (d.testFailStep === step)
    throw new VmError('failed', `injected test fault at ${step} (BANGER_TEST_FAIL_STEP)`);
}

/** The guest kernel command line for a VM (the engine adds console, TSC and panic settings). */
export function guestCmdline(
  vm: Pick<VmRow, 'name' | 'networkMode'> & Partial<Pick<VmRow, 'egress'>>,
  bridged?: GuestNet,
): string {
  // loglevel=6 keeps the kernel banner (KERN_NOTICE) on the console for `vm logs`, and hides
  // the chatter; systemd reports only slow or failed units there.
  const parts = ['root=LABEL=banger-root', 'rw', 'net.ifnames=0', 'loglevel=6', 'systemd.show_status=auto'];
  if (vm.networkMode === 'user') {
    // QEMU's user-mode network is always 10.0.2.0/24 with the host at .2 and DNS at .3. Under a
    // restricted egress policy (restrict=on) the gateway forwards nothing: without a default
    // route a direct connection fails at once (ENETUNREACH) instead of timing out; the proxy
    // (10.0.2.100) is on the link. A root user who adds the route gains nothing: QEMU drops it.
    const gw =
      vm.egress && userRestricted({ networkMode: vm.networkMode, egress: vm.egress }) ? '' : '10.0.2.2';
    parts.push(`ip=10.0.2.15::${gw}:255.255.255.0:${vm.name}:eth0:off:10.0.2.3`);
  } else if (vm.networkMode === 'bridge' && bridged) {
    // Static address on banger's bridge: no DHCP wait; the bridge is gateway and DNS.
    parts.push(bridgeIpArg(vm.name, bridged));
  }
  return parts.join(' ');
}

export function launchSpec(
  vm: VmRow,
  kernel: KernelRow,
  stateDir: string,
  accel: Accel,
  sshHostPort: number,
  bridged?: GuestNet,
  /** The user's RAM directory (guest-ram.ts prepareGuestRamDir): RAM in a file there. */
  ramDir?: string,
): VmLaunchSpec {
  const f = vmFiles(stateDir, vm.id);
  const spec: VmLaunchSpec = {
    id: vm.id,
    vmDir: f.dir,
    kernel: kernel.kernelPath,
    cmdline: guestCmdline(vm, bridged),
    vcpus: vm.vcpus,
    memoryMiB: vm.memoryMib,
    disks: [
      { path: f.overlay, format: 'qcow2' },
      { path: f.seed, format: 'raw', readOnly: true },
    ],
    net: bridged
      ? { mode: 'tap', tap: bridged.tap, mac: vm.mac }
      : { mode: 'user', sshHostPort, mac: vm.mac, ...userNetEgress(vm, stateDir) },
    serialLog: f.serialLog,
    agentSocket: f.agentSocket,
    qgaSocket: f.qgaSocket,
    accel,
  };
  if (kernel.initrdPath) spec.initrd = kernel.initrdPath;
  if (ramDir !== undefined) spec.memory = fileRam(ramDir);
  return spec;
}

/** Write a host-side marker into the VM's console log, so the console shows where an op began. */
export async function markSerial(
  stateDir: string,
  vm: VmRow,
  what: string,
  marks?: SerialMarks,
): Promise<void> {
  const opId = currentOpId() ?? 'op-none';
  const path = vmFiles(stateDir, vm.id).serialLog;
  noteOpVm(vm.name);
  const startOffset = await stat(path).then(
    (s) => s.size,
    () => 0,
  );
  const ok = await appendFile(path, `\nbanger: ${opId} ${what} begins\n`).then(
    () => true,
    () => false,
  );
  if (ok && marks && opId !== 'op-none')
    await marks.begin({ opId, vmId: vm.id, vmName: vm.name, path, startOffset });
}

/**
 * A VM whose policy or secrets go through the proxy: the proxy knows it (user mode: listens on
 * its socket) before its VMM starts. Without the hooks (tests, no proxy) a restricted user-mode
 * VM still runs with restrict=on: every connection then fails, nothing leaks.
 */
export function attachEgress(
  d: Pick<MachineDeps, 'egress' | 'log'>,
  vm: VmRow,
  o: { running?: boolean } = {},
): void {
  if (!proxied(vm)) return;
  if (!d.egress) {
    d.log.warn({ vm: vm.name }, 'no egress proxy in this daemon: the VM reaches nothing outside');
    return;
  }
  // `running`: a reattach. The VMM's argv names the relay; without it every connection fails.
  if (o.running && usesProxy(vm) && !relayBuilt())
    d.log.warn(
      { vm: vm.name },
      'the egress relay is missing: the VM reaches nothing outside until npm run build',
    );
  d.egress.attach(vm, o);
}

/** Kill a VM's VMM (if it runs) as an expected exit, and wait until it is gone; never throws. */
export async function killVmm(d: Pick<MachineDeps, 'runtime'>, vmId: string): Promise<void> {
  const h = d.runtime.get(vmId);
  if (!h) return;
  d.runtime.expectExit(vmId);
  await h.kill('SIGKILL').catch(() => undefined);
  await h.waitExit().catch(() => undefined);
}

/** Start the VMM for a VM; returns once it runs (not yet ready). */
export async function bootVmm(d: MachineDeps, vm: VmRow, kernel: KernelRow, what: string): Promise<void> {
  const accel = await d.accel();
  const port = await reservePort();
  try {
    // A bridged VM's tap must exist (VmNetwork.attach) before boot.
    const bridged = vm.networkMode === 'bridge' ? d.network.guest(vm) : undefined;
    const ramDir = d.guestRamRoot
      ? await prepareGuestRamDir(d.guestRamRoot, d.uid ?? process.getuid?.() ?? 0, vm.memoryMib)
      : undefined;
    const plan = d.runtime.driver.prepare(launchSpec(vm, kernel, d.stateDir, accel, port, bridged, ramDir));
    await markSerial(d.stateDir, vm, what, d.serialMarks);
    injectedFault(d, 'boot');
    attachEgress(d, vm);
    const handle = await d.runtime.driver.start(plan, { logger: d.log });
    d.runtime.attach(vm.id, handle);
  } finally {
    releasePort(port);
  }
}

export function sshTarget(d: MachineDeps, vm: VmRow): SshTarget | undefined {
  const h = d.runtime.get(vm.id);
  // Bridged: the guest's own address on the bridge, port 22.
  if (vm.networkMode === 'bridge') {
    return h && vm.guestIp
      ? { host: vm.guestIp, port: 22, user: 'root', alias: hostKeyAlias(vm.name) }
      : undefined;
  }
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
  opts: { restored?: boolean } = {},
): Promise<{ bootId?: string; times: ReadyTimes }> {
  if (opts.restored) return waitSsh(d, vm, signal, performance.now(), {}, 100);
  const deadline = Date.now() + d.readyTimeoutMs;
  const t0 = performance.now();
  const since = (): number => Math.round(performance.now() - t0);
  let userspaceMs: number | undefined;
  const files = vmFiles(d.stateDir, vm.id);
  const stallMs = d.bootStallMs ?? BOOT_STALL_MS;
  const console = { size: -1, changedAt: performance.now() };
  let stalled = false;
  const progressing = (): boolean => {
    if (userspaceMs !== undefined) return true;
    let size = console.size;
    try {
      size = statSync(files.serialLog).size;
    } catch {
      // not there yet
    }
    if (size !== console.size) {
      console.size = size;
      console.changedAt = performance.now();
      return true;
    }
    stalled = performance.now() - console.changedAt > stallMs;
    return !stalled;
  };
  const agent = await waitForAgentReady(files.agentSocket, {
    timeoutMs: d.readyTimeoutMs,
    signal,
    alive: () => d.runtime.isRunning(vm.id) && progressing(),
    onLine: (l) => {
      if (l === 'banger-userspace' && userspaceMs === undefined) {
        userspaceMs = since();
        onProgress?.('guest userspace is up');
      }
    },
  });
  const sshdMs = since();
  if (signal.aborted) throw new VmError('canceled', `waiting for ${vm.name} was canceled`);
  if (stalled && !agent.ready) throw new BootStalledError(vm.name, stallMs);
  if (!d.runtime.isRunning(vm.id)) {
    throw new VmError(
      'failed',
      `the VMM of ${vm.name} exited during boot; read the console with: banger vm logs ${vm.name}`,
    );
  }
  if (!agent.ready) {
    const stage = agent.userspace ? 'userspace up, sshd not ready' : 'kernel booting, userspace not up';
    throw new VmError(
      'failed',
      `${vm.name} was not ready within ${Math.round(d.readyTimeoutMs / 1000)} s (${stage}); read the console with: banger vm logs ${vm.name}`,
    );
  }
  onProgress?.('sshd is up; checking ssh');
  const seen: Omit<ReadyTimes, 'sshMs'> = { sshdMs };
  if (userspaceMs !== undefined) seen.userspaceMs = userspaceMs;
  return waitSsh(d, vm, signal, t0, seen, READY_POLL_MS, agent.bootId, deadline);
}

/**
 * `ssh true` with the pinned host key until it succeeds (every `pollMs`). A restored clone
 * starts here: its sshd was listening when the template was saved.
 */
async function waitSsh(
  d: MachineDeps,
  vm: VmRow,
  signal: AbortSignal,
  t0: number,
  seen: Omit<ReadyTimes, 'sshMs'>,
  pollMs: number,
  bootId?: string,
  deadline = Date.now() + d.readyTimeoutMs,
): Promise<{ bootId?: string; times: ReadyTimes }> {
  const since = (): number => Math.round(performance.now() - t0);
  let last = '';
  while (Date.now() < deadline) {
    const t = sshTarget(d, vm);
    if (!t) break;
    const r = await sshExec(d.ssh, t, 'true', { timeoutMs: 15_000, signal });
    if (r.code === 0) {
      injectedFault(d, 'wait_ready');
      const times: ReadyTimes = { ...seen, sshMs: since() };
      return bootId ? { bootId, times } : { times };
    }
    last = r.stderr.trim();
    if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/.test(last)) {
      throw new VmError('failed', `${vm.name}: host key does not match the pinned key (${last})`);
    }
    // Abortable (a canceled wait rejects at once): a warm clone's re-identification failing stops
    // this wait for its undo without another poll interval.
    await sleep(pollMs, undefined, { signal }).catch(() => undefined);
    if (signal.aborted) throw new VmError('canceled', `waiting for ${vm.name} was canceled`);
  }
  throw new VmError(
    'failed',
    `${vm.name}: ssh did not answer (${last || 'timeout'}); see banger vm logs ${vm.name}`,
  );
}
